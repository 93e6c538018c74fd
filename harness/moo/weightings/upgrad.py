"""``upgrad``: UPGrad (Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization", arXiv 2406.16232), as
torchjd's ``UPGradWeighting`` with the mean preference.

Each ``e_i/K`` is projected on the dual cone of the gradients (``min vᵀG'v s.t. v ≥ e_i/K``, solved exactly by
:func:`harness.moo._qp.solve_box_qp`) and the K results are summed. ``G' = G/trace(G) + reg_eps·I`` as in torchjd.

Options (torchjd's defaults):

* ``norm_eps=1e-4``: torchjd replaces G by 0 when ``trace(G) < norm_eps``, an *absolute* threshold — kept for
  fidelity; set ``norm_eps=0`` to disable.
* ``reg_eps=1e-4``: the ridge added after trace normalisation. Golden values depend on it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.moo._qp import solve_box_qp
from harness.moo.weightings.base import Weighting, _prepare, _trace_normalize, register_weighting


def _upgrad_factory(norm_eps: float = 1e-4, reg_eps: float = 1e-4) -> Weighting:
    for name, val in (("norm_eps", norm_eps), ("reg_eps", reg_eps)):
        if not isinstance(val, (int, float)) or val < 0:
            raise ValueError(f"option {name!r} must be a non-negative number, got {val!r}")

    def upgrad(gram: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        # torchjd normalises the raw G by its trace; our _prepare scaling commutes with that except for norm_eps.
        raw = gram.detach().to(torch.float64)
        raw = torch.nan_to_num(0.5 * (raw + raw.T), nan=0.0, posinf=0.0, neginf=0.0)
        g = _prepare(gram)
        tr_raw = torch.diagonal(raw).sum()
        g = torch.where(tr_raw < norm_eps, torch.zeros_like(g), _trace_normalize(g, 0.0))
        k = g.shape[0]
        q = g + reg_eps * torch.eye(k, dtype=torch.float64, device=g.device)
        if reg_eps == 0:
            q = q + 1e-12 * torch.eye(k, dtype=torch.float64, device=g.device)
        u = torch.eye(k, dtype=torch.float64, device=g.device) / k
        return solve_box_qp(q, u).sum(0)

    return upgrad


register_weighting("upgrad", _upgrad_factory)
