"""`all_finite`: exact, whatever the tensor holds (the fast sum path and the overflow fallback)."""

from __future__ import annotations

import pytest
import torch

from harness.numerics import all_finite


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_single_non_finite_element_is_found(dtype: torch.dtype, bad: float) -> None:
    x = torch.randn(3, 1000).to(dtype)
    assert all_finite(x)
    x[2, 517] = bad
    assert not all_finite(x)
    assert not all_finite([torch.ones(4), x])


def test_opposite_infinities_and_nan_with_inf_are_found() -> None:
    x = torch.zeros(10)
    x[1], x[2] = float("inf"), float("-inf")  # their sum is nan: still non-finite
    assert not all_finite(x)


def test_finite_values_whose_sum_overflows_are_finite() -> None:
    big = torch.full((8,), torch.finfo(torch.float32).max)  # the float32 sum overflows; every element is finite
    assert all_finite(big)
    assert all_finite(torch.full((4,), 60000.0, dtype=torch.float16))


def test_empty_integer_and_mixed_inputs() -> None:
    assert all_finite([])
    assert all_finite(torch.empty(0))
    assert all_finite([torch.arange(5), torch.ones(2)])
    assert not all_finite([torch.arange(5), torch.tensor([1.0, float("nan")])])
