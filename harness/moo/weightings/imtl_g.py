"""``imtl_g``: IMTL-G (Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang, ICLR 2021, "Towards Impartial Multi-task
Learning"), as torchjd's ``IMTLGWeighting``.

``v = pinv(G) sqrt(diag G)``, ``c = v/Σv`` (zeros when ``|Σv| < 1e-12``; computed on G divided by its trace so that
threshold is scale-free). The direction has equal projections on every unit gradient.

No options.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.moo.weightings.base import Weighting, _prepare, _trace_normalize, register_weighting


def _imtl_g_factory() -> Weighting:
    def imtl_g(gram: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        g = _trace_normalize(_prepare(gram), 0.0)
        d = torch.sqrt(torch.diagonal(g).clamp_min(0.0))
        v = torch.linalg.pinv(g, hermitian=True) @ d
        v_sum = v.sum()
        ok = v_sum.abs() >= 1e-12
        return torch.where(ok, v / torch.where(ok, v_sum, torch.ones_like(v_sum)), torch.zeros_like(v))

    return imtl_g


register_weighting("imtl_g", _imtl_g_factory)
