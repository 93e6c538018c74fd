"""``mgda``: the exact min-norm point of the convex hull of the gradients (Désidéri 2012; Sener & Koltun, NeurIPS 2018,
"Multi-Task Learning as Multi-Objective Optimization").

``c = argmin_{c in simplex} cᵀGc``. K=2 uses the closed form ``c1 = clip((G22 − G12)/(G11 + G22 − 2 G12), 0, 1)``
with exact corners (no 0.999/0.001 clamp of the reference code); on an accelerator 3 ≤ K ≤ 8 exact support
enumeration (sync-free); on the CPU, and above K = 8, an exact active set (block principal pivoting on the equivalent
NNLS problem, KKT residual ≤ 1e-12 of max diag G; one host round trip per call). Both in :mod:`harness.moo._qp`; measurements against TorchJD in
``docs/solvers.md``.

Options:

* ``normalize="none"`` (default; the paper) or ``"l2"`` (harness extension): solve on ``G_ij/(‖g_i‖‖g_j‖)`` and divide
  the coefficients by ``‖g_i‖``, so ``d`` is the min-norm point of the unit-normalised gradients; a zero gradient
  gets 0.

Also here: :func:`mgda_min_norm` (the solver on a prepared Gram) and :func:`min_norm_residual` (the diagnostic
``‖min-norm point‖``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.moo._qp import solve_simplex_qp
from harness.moo.weightings.base import Weighting, _check_choice, _prepare, _safe_div, register_weighting


def mgda_min_norm(g: Tensor) -> Tensor:
    """Exact ``argmin_{c in simplex} cᵀGc`` of a prepared (float64, symmetric) Gram matrix."""
    k = g.shape[0]
    if k == 2:
        den = g[0, 0] + g[1, 1] - 2.0 * g[0, 1]
        c1 = _safe_div(g[1, 1] - g[0, 1], den)
        c1 = torch.where(den > 0, c1.clamp(0.0, 1.0), torch.full_like(c1, 0.5))
        return torch.stack([c1, 1.0 - c1])
    return solve_simplex_qp(g)


def _mgda_factory(normalize: str = "none") -> Weighting:
    _check_choice("normalize", normalize, ("none", "l2"))

    def mgda(gram: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        g = _prepare(gram)
        if normalize == "none":
            return mgda_min_norm(g)
        norms = torch.sqrt(torch.diagonal(g).clamp_min(0.0))
        gn = _safe_div(g, norms[:, None] * norms[None, :])
        raw_norms = torch.sqrt(torch.nan_to_num(torch.diagonal(gram.detach()).to(torch.float64)).clamp_min(0.0))
        return _safe_div(mgda_min_norm(gn), raw_norms)

    return mgda


def min_norm_residual(gram: Tensor) -> float:
    """‖min-norm point of the convex hull of the gradients‖ = sqrt(c*ᵀGc*) with c* from MGDA (diagnostic; syncs)."""
    g = gram.detach().to(torch.float64)
    g = 0.5 * (g + g.T)
    c = mgda_min_norm(_prepare(gram))
    return float(torch.sqrt((c @ g @ c).clamp_min(0.0)).item())


register_weighting("mgda", _mgda_factory)
