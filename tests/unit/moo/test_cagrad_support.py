"""CAGrad's exact solve on the support of a coarse search (harness.moo.weightings.cagrad._on_support): the optimum
the full 90-step search finds, at least as good, and refused (so the full search runs) where it cannot be exact."""

from __future__ import annotations

import importlib

import pytest
import torch

from harness.moo.weightings import weighting
from tests.unit.moo.test_qp_large_k import jacobian

cagrad = importlib.import_module("harness.moo.weightings.cagrad")
F64 = torch.float64


def _problem(kind: str, k: int, seed: int, c: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    j = jacobian(kind, k, seed)
    g = j @ j.T
    mean_w = torch.full((k,), 1.0 / k, dtype=F64)
    b = g @ mean_w
    return g, b, c * torch.sqrt(mean_w @ b)


def _objective(g: torch.Tensor, b: torch.Tensor, phi: torch.Tensor, w: torch.Tensor) -> float:
    return float(b @ w + phi * torch.sqrt((w @ g @ w).clamp_min(0.0)))


@pytest.mark.parametrize("kind", ["iid", "shared", "conflict", "scales"])
@pytest.mark.parametrize("k", [3, 8, 16, 32])
def test_the_solve_on_the_coarse_support_is_the_searched_optimum(kind, k):
    g, b, phi = _problem(kind, k, seed=k)
    coarse = cagrad._search(g, b, phi, cagrad.COARSE_ITERS)
    exact = cagrad._on_support(g, b, phi, coarse > 0)
    full = cagrad._search(g, b, phi, 90)
    assert exact is not None
    assert float(exact.min()) >= 0.0 and float(exact.sum()) == pytest.approx(1.0, abs=1e-12)
    torch.testing.assert_close(exact, full, atol=1e-6, rtol=0)
    assert _objective(g, b, phi, exact) <= _objective(g, b, phi, full) + 1e-12 * abs(_objective(g, b, phi, full))


def test_a_wrong_support_is_refused():
    g, b, phi = _problem("conflict", 8, seed=1)
    full = cagrad._search(g, b, phi, 90)
    assert bool((full == 0).any()), "this problem's optimum leaves some language out"
    assert cagrad._on_support(g, b, phi, torch.ones(8, dtype=torch.bool)) is None
    assert cagrad._on_support(g, b, phi, full > 0) is not None


@pytest.mark.parametrize("kind", ["duplicates", "zero_grad"])
def test_singular_supports_fall_back_to_the_full_search(kind):
    """Duplicated and zero gradients make G on the support singular: the solve refuses, the full search answers."""
    g, b, phi = _problem(kind, 6, seed=2)
    coarse = cagrad._search(g, b, phi, cagrad.COARSE_ITERS)
    assert cagrad._on_support(g, b, phi, coarse > 0) is None
    assert torch.equal(cagrad._cagrad_inner(g, b, phi), cagrad._search(g, b, phi, 90))
    assert torch.isfinite(weighting("cagrad", c=0.5, rescale=0)(g)).all()
