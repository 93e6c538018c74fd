"""``gradvac``: Gradient Vaccine (Wang, Tsvetkov, Firat, Cao, ICLR 2021, "Gradient Vaccine: Investigating and Improving
Multi-task Optimization in Massively Multilingual Models", arXiv 2010.05874, Algorithm 1) — stateful, tracked as
coefficients on the Gram so it runs on one block from its Gram alone.

Per block the state is ``phi_hat`` (K×K): the EMA targets ``φ̂_ij`` of the cosine between language i's (modified)
gradient and language j's gradient, zero at the start. Each step, for each i, ``g_i' = g_i``; walk the other j in
random order and

* ``φ_ij = cos(g_i', g_j)``;
* if ``φ_ij < φ̂_ij``: ``g_i' += a g_j`` with
  ``a = ‖g_i'‖ (φ̂_ij √(1−φ_ij²) − φ_ij √(1−φ̂_ij²)) / (‖g_j‖ √(1−φ̂_ij²))``, which raises the cosine to exactly
  ``φ̂_ij``;
* ``φ̂_ij ← (1−β) φ̂_ij + β φ_ij`` (with the φ measured before the correction, every visited pair).

The direction is ``Σ_i g_i'`` (sum, as PCGrad). With ``g_i' = Σ_k a_ik g_k``, ``‖g_i'‖² = a_i G a_iᵀ`` and
``g_i'·g_j = a_i G_{:,j}``, so the coefficients are ``Σ_i a_i``. At the first step (``φ̂ = 0``) the correction is
PCGrad's projection, so GradVac's first step equals PCGrad with the same order.

Options:

* ``beta=0.01``: the EMA rate β (the value this harness takes from the paper; LibMTL and torchjd default to 0.5).

Conventions (differences from torchjd 0.18's ``GradVacWeighting``, which the tests cross-check with ``eps=0`` and the
same orders):

* order: the visiting orders come from :func:`~harness.moo.weightings.base.visit_orders` with the ``generator``
  passed to the call (PCGrad's convention: deterministic for K=2, one ``torch.rand(K, K-1)`` draw otherwise); torchjd
  calls ``torch.randperm`` on the global RNG once per i;
* no ``eps`` in denominators: zero divisions give 0 (a zero gradient has cosine 0 and is never added), and G is
  divided by its largest diagonal entry first, so the coefficients do not depend on the scale of G (torchjd adds
  ``eps=1e-8``, which is not scale-free);
* cosines are clamped to [−1, 1] before the square roots; the state is float64 whatever the Gram's dtype.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from harness.moo.weightings.base import (
    WeightingState,
    _check_number,
    _prepare,
    _safe_div,
    register_weighting,
    state_on,
    visit_orders,
)


class GradVac:
    """GradVac as a :class:`~harness.moo.weightings.base.StatefulWeighting` (see the module docstring)."""

    needs_losses = False

    def __init__(self, beta: float = 0.01) -> None:
        _check_number("beta", beta, 0.0, 1.0)
        self.beta = float(beta)

    def __repr__(self) -> str:
        return f"GradVac(beta={self.beta!r})"

    def init_state(self, k: int) -> WeightingState:
        return {"phi_hat": torch.zeros(k, k, dtype=torch.float64)}

    def __call__(
        self,
        gram: Tensor,
        losses: Tensor | Sequence[float] | None,
        state: Mapping[str, Tensor],
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, WeightingState]:
        g = _prepare(gram)
        k = g.shape[0]
        phi_hat = state_on(state, g.device)["phi_hat"].clone()
        if phi_hat.shape != (k, k):
            raise ValueError(f"gradvac state phi_hat has shape {tuple(phi_hat.shape)}, expected {(k, k)}")
        orders = visit_orders(k, generator, g.device)
        rows = torch.arange(k, device=g.device)
        a = torch.eye(k, dtype=torch.float64, device=g.device)
        norm_j_all = torch.sqrt(torch.diagonal(g).clamp_min(0.0))
        for t in range(k - 1):
            j = orders[:, t]
            inner = (a * g[:, j].T).sum(1)  # g_i'·g_j for every i
            norm_i = torch.sqrt(((a @ g) * a).sum(1).clamp_min(0.0))
            norm_j = norm_j_all[j]
            phi = _safe_div(inner, norm_i * norm_j).clamp(-1.0, 1.0)
            target = phi_hat[rows, j]
            s_phi = torch.sqrt((1.0 - phi * phi).clamp_min(0.0))
            s_hat = torch.sqrt((1.0 - target * target).clamp_min(0.0))
            coef = _safe_div(norm_i * (target * s_phi - phi * s_hat), norm_j * s_hat)
            coef = torch.where(phi < target, coef, torch.zeros_like(coef))
            a = a.index_put((rows, j), coef, accumulate=True)
            phi_hat = phi_hat.index_put((rows, j), (1.0 - self.beta) * target + self.beta * phi)
        return a.sum(0), {"phi_hat": phi_hat}


def _gradvac_factory(beta: float = 0.01) -> GradVac:
    return GradVac(beta=beta)


register_weighting("gradvac", _gradvac_factory, stateful=True)
