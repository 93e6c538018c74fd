"""``aligned_mtl``: Aligned-MTL (Senushkin, Patakin, Kuznetsov, Konushin, CVPR 2023, "Independent Component Alignment
for Multi-Task Learning", Algorithm 1), as torchjd's ``AlignedMTLWeighting`` with the uniform preference vector.

The gradient system is conditioned by aligning its principal components: with the eigendecomposition
``G = V Λ Vᵀ`` restricted to the numerical rank (eigenvalues above ``max λ · K · eps_float64``, torchjd's tolerance),
the balance transformation is ``B = sqrt(s) V Λ^{-1/2} Vᵀ`` and the coefficients are ``c = B w`` with ``w = 1/K``. The
aligned gradients (the rows of ``B J``, J the K×P Jacobian) have equal singular values ``sqrt(s)`` (condition
number 1), and ``d = wᵀ B J = Σ_k c_k g_k``. Rank 0 (all gradients
zero) gives ``B = I``, so ``c = 1/K``. Computed on G divided by its largest diagonal entry: ``c`` is invariant to the
scale of G. Sync-free (the rank enters as a mask, not a slice).

Options:

* ``scale_mode="min"``: ``s`` is the smallest kept eigenvalue (the paper's Algorithm 1 and torchjd's default),
  ``"median"`` their (lower) median, or ``"rmse"`` their mean (the official SamsungLabs/MTL code, per torchjd).

The preference vector is fixed to uniform (``1/K``), the only preference that treats languages alike.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.moo.weightings.base import Weighting, _check_choice, _prepare, register_weighting

SCALE_MODES = ("min", "median", "rmse")


def _scale(lam: Tensor, keep: Tensor, mode: str) -> Tensor:
    """``s`` over the kept eigenvalues; ``lam`` is sorted in descending order, so ``keep`` is a prefix."""
    rank = keep.sum()
    if mode == "min":
        return torch.where(keep, lam, torch.full_like(lam, float("inf"))).min()
    if mode == "rmse":
        return torch.where(keep, lam, torch.zeros_like(lam)).sum() / rank.clamp_min(1)
    # torch.median's lower median of r values is the ((r-1)//2)-th smallest, i.e. index r-1-(r-1)//2 descending
    idx = (rank - 1 - torch.div(rank - 1, 2, rounding_mode="floor")).clamp_min(0)
    return lam.gather(0, idx.reshape(1))[0]


def _aligned_mtl_factory(scale_mode: str = "min") -> Weighting:
    _check_choice("scale_mode", scale_mode, SCALE_MODES)

    def aligned_mtl(gram: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        g = _prepare(gram)
        k = g.shape[0]
        lam, vec = torch.linalg.eigh(g)
        lam, vec = lam.flip(0), vec.flip(1)  # descending
        keep = lam > lam.max() * k * torch.finfo(torch.float64).eps
        inv_sqrt = torch.where(keep, torch.rsqrt(torch.where(keep, lam, torch.ones_like(lam))), torch.zeros_like(lam))
        scale = torch.where(keep.any(), _scale(lam, keep, scale_mode), torch.ones_like(lam[0]))
        b = torch.sqrt(scale) * (vec * inv_sqrt) @ vec.T
        b = torch.where(keep.any(), b, torch.eye(k, dtype=torch.float64, device=g.device))
        w = torch.full((k,), 1.0 / k, dtype=torch.float64, device=g.device)
        return b @ w

    return aligned_mtl


register_weighting("aligned_mtl", _aligned_mtl_factory)
