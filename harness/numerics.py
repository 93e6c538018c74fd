"""Numeric checks shared by the training paths: whether gradients are finite, at the cost of one cheap reduction.

``torch.isfinite(x).all()`` materialises a boolean tensor as large as ``x`` and is slow on CPU: 32 ms for the
8 × 1.34 M float32 rows of the quickstart's MGDA step on 2 threads, a quarter of a joint SFT step. A sum reads ``x``
once (under 1 ms) and is non-finite whenever any element is (IEEE addition never turns a NaN or an infinity finite),
so only a non-finite sum (a real NaN or infinity, or an overflowing sum of finite values) pays for the exact check.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def all_finite(tensors: Tensor | Sequence[Tensor]) -> bool:
    """Whether every element of ``tensors`` is finite (exact), with one host synchronisation in the common case."""
    group = [t for t in ([tensors] if isinstance(tensors, Tensor) else tensors) if t.is_floating_point() and t.numel()]
    if not group:  # integers are always finite
        return True
    sums = torch.stack([t.sum(dtype=torch.promote_types(t.dtype, torch.float32)).to(torch.float64) for t in group])
    if bool(torch.isfinite(sums).all()):
        return True
    return all(bool(torch.isfinite(t).all()) for t in group)  # rare: find out whether the sum merely overflowed
