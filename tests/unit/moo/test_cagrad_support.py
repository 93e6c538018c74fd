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


@pytest.mark.parametrize("kind", ["iid", "shared", "conflict", "scales"])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_small_k_tries_every_support_and_finds_the_searched_solve_without_a_search(kind, k, monkeypatch):
    """Up to SUPPORT_ENUMERATION_MAX_K the host path enumerates supports: bit-identical to the solve on the support
    the coarse search finds, and no search runs."""
    assert k <= cagrad.SUPPORT_ENUMERATION_MAX_K
    for seed in range(5):
        g, b, phi = _problem(kind, k, seed=seed)
        searched = cagrad._on_support(g, b, phi, cagrad._search(g, b, phi, cagrad.COARSE_ITERS) > 0)
        assert searched is not None
        assert torch.equal(cagrad._first_exact_support(g, b, phi), searched)
        with monkeypatch.context() as patch:
            patch.setattr(cagrad, "_search", lambda *a: pytest.fail("searched although a support was exact"))
            assert torch.equal(cagrad._cagrad_inner(g, b, phi), cagrad._best_of(g, b, phi, searched))


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


# Measured in the own-loop DDP example (tests/distributed/test_own_loop.py, granularity tensor): the two languages'
# gradients on the last layer's 1-element bias, opposite in sign, so the Gram has rank 1 up to rounding.
SCALAR_BIAS = torch.tensor([[-0.21962417662143707], [1.2267110347747803]], dtype=F64)


def test_opposite_gradients_on_a_scalar_reach_the_optimum_whatever_the_rounding():
    g = SCALAR_BIAS @ SCALAR_BIAS.T
    mean_w = torch.full((2,), 0.5, dtype=F64)
    b = g @ mean_w
    phi = 0.5 * torch.sqrt(mean_w @ b)
    grid = torch.linspace(0, 1, 20001, dtype=F64)
    best = min(_objective(g, b, phi, torch.stack([x, 1 - x])) for x in grid)  # brute force over the simplex
    for eps in (0.0, 1e-12, -1e-10, 1e-8):  # the Gram as rounding may leave it (the DDP hook sums it over slices)
        noisy = g + eps * torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)
        w = cagrad._cagrad_inner(noisy, noisy @ mean_w, phi)
        assert _objective(g, b, phi, w) <= best + 1e-9
        torch.testing.assert_close(w, torch.tensor([1.0, 0.0], dtype=F64), atol=1e-6, rtol=0)
    coefficients = weighting("cagrad")(g)  # 1/K + (c‖g0‖/‖g_w‖) w, / (1 + c²): the vertex, not the mean
    torch.testing.assert_close(coefficients, torch.tensor([1.3171, 0.4], dtype=F64), atol=1e-4, rtol=0)


def test_the_accelerator_path_also_checks_the_vertices(monkeypatch):
    """The sync-free path (K <= 8 on an accelerator: the 90-step search with enumerated QPs) takes the vertex too
    where the search stops on the plateau of a rank-1 Gram."""
    monkeypatch.setattr(cagrad, "uses_enumeration", lambda k, device: True)
    g = SCALAR_BIAS @ SCALAR_BIAS.T - 1e-10 * torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=F64)  # rounding's Gram
    mean_w = torch.full((2,), 0.5, dtype=F64)
    phi = 0.5 * torch.sqrt(mean_w @ g @ mean_w)
    searched = cagrad._search(g, g @ mean_w, phi, 90)
    w = cagrad._cagrad_inner(g, g @ mean_w, phi)
    assert not torch.equal(searched, w), "the search alone stops short of the vertex here"
    torch.testing.assert_close(w, torch.tensor([1.0, 0.0], dtype=F64), atol=0, rtol=0)
