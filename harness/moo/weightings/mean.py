"""``mean``: the joint-SFT direction, ``c = 1/K`` (linear scalarisation; the baseline every method is compared with).

No options.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.moo.weightings.base import Weighting, _prepare, register_weighting


def _mean(gram: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    k = _prepare(gram).shape[0]
    return torch.full((k,), 1.0 / k, dtype=torch.float64, device=gram.device)


def _mean_factory() -> Weighting:
    return _mean


register_weighting("mean", _mean_factory)
