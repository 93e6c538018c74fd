"""The exact active-set solvers of ``harness.moo._qp`` (block principal pivoting; used for K > ENUM_MAX), checked on
hostile Gram families up to K = 64: KKT residual ≤ 1e-9 of max diag G, simplex feasibility, agreement with the
support-enumeration oracle for K ≤ 8, permutation invariance, determinism, warm starts, the linear-term and box
variants, and the fallback. Speed is measured in ``tests/bench/test_mgda_solver_bench.py``, not asserted here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.moo import _qp, combine, gram, weighting
from harness.moo._qp import (
    ENUM_MAX,
    _box_enumerate,
    _simplex_enumerate,
    box_active_set,
    pivot,
    primal,
    simplex_active_set,
    solve_box_qp,
    solve_simplex_qp,
)

F64 = torch.float64
KKT_TOL = 1e-9
LARGE_KS = (9, 12, 16, 24, 32, 48, 64)


def jacobian(kind: str, k: int, seed: int) -> torch.Tensor:
    """(K, P) gradients of one hostile family (TorchJD's ``_inputs.py`` is the model)."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=F64)

    if kind == "iid":  # near-orthogonal: the optimum is interior
        return r(k, 200)
    if kind == "shared":  # a common component and unequal norms: the multilingual case
        return 0.8 * r(1, 200) + r(k, 200) * torch.rand(k, 1, generator=gen, dtype=F64) * 2
    if kind == "conflict":  # pairs at obtuse angles
        j = r(k, 100)
        j[1::2] = -0.5 * j[0::2][: k // 2] + 0.05 * r(k // 2, 100)
        return j
    if kind == "low_rank":
        return r(k, 3) @ r(3, 40)
    if kind == "k_above_p":  # more languages than dimensions
        return r(k, 5)
    if kind == "duplicates":
        return r(3, 30)[torch.arange(k) % 3]
    if kind == "near_duplicates":
        base = r(k - k // 2, 30)
        return torch.cat([base, base[: k // 2] + 1e-9 * r(k // 2, 30)])
    if kind == "zero_grad":
        j = r(k, 30)
        j[seed % k] = 0.0
        return j
    if kind == "all_zero":
        return torch.zeros(k, 6, dtype=F64)
    if kind == "scales":  # norms spread over 6 orders of magnitude (diag G over 12)
        return r(k, 100) * torch.logspace(-3, 3, k, dtype=F64)[:, None]
    if kind == "extreme_scales":  # norms over 12 orders: below ABS_TOL of max diag G, the weights are not resolved
        return r(k, 100) * torch.logspace(-6, 6, k, dtype=F64)[:, None]
    if kind == "huge":
        return r(k, 30) * 1e150
    if kind == "tiny":
        return r(k, 30) * 1e-150
    raise ValueError(kind)


FAMILIES = ("iid", "shared", "conflict", "low_rank", "k_above_p", "duplicates", "near_duplicates", "zero_grad",
            "all_zero", "scales", "extreme_scales", "huge", "tiny")
UNIQUE = ("iid", "shared", "conflict", "scales")  # full rank (P ≥ K): the optimal weights are unique


def kkt_residual(g: torch.Tensor, c: torch.Tensor) -> float:
    """max over i of the MGDA KKT violation, relative to max diag G: ``(Gc)_i ≥ cᵀGc``, equality where ``c_i > 0``."""
    scale = float(torch.diagonal(g).max())
    if scale <= 0:
        return 0.0
    gc = g @ c
    obj = c @ gc
    below = float((obj - gc).clamp_min(0.0).max())
    off = float((gc[c > 0] - obj).abs().max())
    return max(below, off) / scale


def assert_simplex(c: torch.Tensor) -> None:
    assert c.dtype == F64 and torch.isfinite(c).all()
    assert float(c.min()) >= 0.0 and abs(float(c.sum()) - 1.0) <= 1e-12


@pytest.mark.parametrize("kind", FAMILIES)
@pytest.mark.parametrize("k", LARGE_KS)
def test_mgda_is_kkt_exact_for_large_k(kind, k):
    jac = jacobian(kind, k, seed=k)
    g = gram(jac)
    c = weighting("mgda")(g)
    assert_simplex(c)
    assert kkt_residual(g, c) <= KKT_TOL
    # the MGDA direction conflicts with no gradient: g_i·d ≥ ‖d‖² ≥ 0
    scale = float(torch.diagonal(g).max())
    assert bool(torch.all(g @ c >= -KKT_TOL * scale))


@pytest.mark.parametrize("kind", FAMILIES)
@pytest.mark.parametrize("k", range(3, ENUM_MAX + 1))
@pytest.mark.parametrize("seed", range(2))
def test_active_set_matches_enumeration_oracle(kind, k, seed):
    g = gram(jacobian(kind, k, seed))
    diag = float(torch.diagonal(g).max())
    g = g / diag if diag > 0 else g
    w = torch.from_numpy(simplex_active_set(g.numpy()))
    ref = _simplex_enumerate(g, torch.zeros(k, dtype=F64))
    assert_simplex(w)
    assert float(w @ g @ w) <= float(ref @ g @ ref) + 1e-12
    assert kkt_residual(g, w) <= KKT_TOL
    # the min-norm point itself (unique even when the weights are not) is the oracle's
    jac = jacobian(kind, k, seed) / (diag**0.5 if diag > 0 else 1.0)
    torch.testing.assert_close(combine(jac, w), combine(jac, ref), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", FAMILIES)
@pytest.mark.parametrize("k", (9, 16, 64))
def test_permutation_invariance(kind, k):
    jac = jacobian(kind, k, seed=3)
    g = gram(jac)
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(k))
    fn = weighting("mgda")
    c, cp = fn(g), fn(g[perm][:, perm])
    scale = float(torch.diagonal(g).max())
    # the objective and the min-norm point are unique; so are the weights when the optimum is
    assert abs(float(cp @ g[perm][:, perm] @ cp) - float(c @ g @ c)) <= 1e-12 * max(scale, 1e-300)
    unit = jac / (scale**0.5 if scale > 0 else 1.0)
    torch.testing.assert_close(combine(unit[perm], cp), combine(unit, c), atol=1e-6, rtol=0)
    if kind in UNIQUE:
        torch.testing.assert_close(cp, c[perm], atol=1e-9, rtol=0)


@pytest.mark.parametrize("k", (9, 32, 64))
def test_deterministic_call_to_call(k):
    g = gram(jacobian("shared", k, seed=1))
    first = weighting("mgda")(g)
    for _ in range(5):
        assert torch.equal(weighting("mgda")(g), first)


@pytest.mark.parametrize("kind", ("shared", "conflict", "duplicates", "scales"))
@pytest.mark.parametrize("k", (16, 48))
def test_any_warm_start_reaches_the_same_optimum(kind, k):
    g = gram(jacobian(kind, k, seed=2))
    g = g / torch.diagonal(g).max()
    cold = solve_simplex_qp(g)
    gen = torch.Generator().manual_seed(k)
    starts = [cold > 0, torch.zeros(k, dtype=torch.bool), torch.rand(k, generator=gen) < 0.3, ~(cold > 0)]
    for support in starts:
        warm = solve_simplex_qp(g, support=support)
        assert kkt_residual(g, warm) <= KKT_TOL
        assert abs(float(warm @ g @ warm) - float(cold @ g @ cold)) <= 1e-12


@pytest.mark.parametrize("k", (3, 5, 8, 12, 24, 64))
@pytest.mark.parametrize("rank", (None, 1, 2))
@pytest.mark.parametrize("seed", range(3))
def test_linear_term_is_kkt_and_matches_oracle(k, rank, seed):
    gen = torch.Generator().manual_seed(seed)
    jac = torch.randn(k, 9 if rank is None else rank, generator=gen, dtype=F64)
    q, p = jac @ jac.T, torch.randn(k, generator=gen, dtype=F64)
    w = solve_simplex_qp(q, p) if k > ENUM_MAX else torch.from_numpy(simplex_active_set(q.numpy(), p.numpy()))
    assert_simplex(w)
    grad = q @ w + p
    mu = grad @ w
    scale = max(float(torch.diagonal(q).max()), float(p.abs().max()))
    assert float((mu - grad).clamp_min(0.0).max()) <= KKT_TOL * scale
    assert float((grad[w > 0] - mu).abs().max()) <= KKT_TOL * scale
    if k <= ENUM_MAX:
        ref = _simplex_enumerate(q, p)
        assert float(0.5 * w @ q @ w + p @ w) <= float(0.5 * ref @ q @ ref + p @ ref) + 1e-12 * scale


@pytest.mark.parametrize("k", (3, 6, 8, 16, 40))
@pytest.mark.parametrize("seed", range(3))
def test_box_active_set_against_enumeration_and_nnls(k, seed):
    from scipy.optimize import nnls  # test-only oracle

    jac = torch.randn(k, 3, generator=torch.Generator().manual_seed(seed), dtype=F64)
    q = gram(jac) / (jac**2).sum() + 1e-4 * torch.eye(k, dtype=F64)  # UPGrad's normalised, regularised Gram
    u = torch.eye(k, dtype=F64) / k
    v = solve_box_qp(q, u) if k > ENUM_MAX else torch.from_numpy(box_active_set(q.numpy(), u.numpy()))
    lower = np.linalg.cholesky(q.numpy())
    ref = torch.tensor(np.array([row + nnls(lower.T, -lower.T @ row, maxiter=10_000)[0] for row in u.numpy()]))
    torch.testing.assert_close(v, ref, atol=1e-10, rtol=0)
    if k <= ENUM_MAX:
        torch.testing.assert_close(v, _box_enumerate(q, u), atol=1e-10, rtol=0)


def _scaled(kind: str, k: int, seed: int) -> np.ndarray:
    g = gram(jacobian(kind, k, seed)).numpy()
    diag = np.abs(np.diagonal(g)).max()
    return g / diag if diag > 0 else g


@pytest.mark.parametrize("kind", FAMILIES)
@pytest.mark.parametrize("k", (5, 16, 64))
def test_primal_active_set_alone_is_exact(kind, k):
    """Wolfe's method (the path the block pivoting hands degenerate problems to) on its own, simplex and box."""
    g = _scaled(kind, k, seed=7)
    a = g + np.diag(_qp.RIDGE * np.diagonal(g) + _qp.FLOOR)
    w = primal(a, np.zeros(k), simplex=True)
    assert w is not None
    w = torch.from_numpy(np.maximum(w, 0.0) / np.maximum(w, 0.0).sum())
    assert_simplex(w)
    gt = torch.from_numpy(g)
    assert kkt_residual(gt, w) <= KKT_TOL
    ref = solve_simplex_qp(gt)
    assert abs(float(w @ gt @ w) - float(ref @ gt @ ref)) <= 1e-12
    q = g + 1e-4 * np.eye(k)
    u = np.eye(k)[0] / k
    x = primal(q, -(q @ u))
    assert x is not None and np.all(x >= 0)
    torch.testing.assert_close(torch.from_numpy(u + x), solve_box_qp(torch.from_numpy(q), torch.from_numpy(u[None]))[0],
                               atol=1e-10, rtol=0)


def test_degenerate_problems_reach_the_primal_path(monkeypatch):
    """More languages than dimensions: the origin lies in the hull, the optimum is degenerate, block pivoting stalls
    and hands over to the primal active set, which ends at the exact optimum."""
    calls = []
    monkeypatch.setattr(_qp, "primal", lambda *a, **kw: calls.append(1) or primal(*a, **kw))
    g = gram(jacobian("tiny", 64, seed=0))
    c = weighting("mgda")(g)
    assert calls and kkt_residual(g, c) <= KKT_TOL


def test_fallback_when_the_active_set_does_not_terminate(monkeypatch):
    k = 12
    g = torch.from_numpy(_scaled("shared", k, seed=4))
    a, b = g.numpy(), np.zeros(k)
    assert pivot(a, b, np.ones(k, dtype=bool), simplex=True, max_pivots=0) is None
    assert primal(a, b, simplex=True, max_iters=0) is None
    exact = solve_simplex_qp(g)
    monkeypatch.setattr(_qp, "simplex_active_set", lambda *_args, **_kwargs: None)
    monkeypatch.setattr(_qp, "box_active_set", lambda *_args, **_kwargs: None)
    fallback = solve_simplex_qp(g)  # projected gradient + polish: feasible, close, not exact
    assert_simplex(fallback)
    assert abs(float(fallback @ g @ fallback) - float(exact @ g @ exact)) <= 1e-8
    q = g + torch.eye(k, dtype=F64)
    u = torch.eye(k, dtype=F64)[:2] / k
    torch.testing.assert_close(solve_box_qp(q, u), torch.from_numpy(box_active_set(q.numpy(), u.numpy())),
                               atol=1e-8, rtol=0)


@pytest.mark.parametrize("k", (16, 64))
def test_cagrad_and_upgrad_large_k(k):
    g = gram(jacobian("shared", k, seed=5))
    for name in ("cagrad", "upgrad"):
        c = weighting(name)(g)
        assert c.shape == (k,) and torch.isfinite(c).all()
    # CAGrad's inner problem at its solution beats random points of the simplex
    gn = g / torch.diagonal(g).max()
    coeffs = weighting("cagrad", c=0.5, rescale=0)(gn)
    w = (coeffs - 1.0 / k) / (coeffs - 1.0 / k).sum()
    b = gn.mean(1)
    phi = 0.5 * torch.sqrt(b.mean())

    def objective(x: torch.Tensor) -> torch.Tensor:
        return x @ b + phi * torch.sqrt(torch.einsum("...i,ij,...j->...", x, gn, x).clamp_min(0.0))

    samples = torch.distributions.Dirichlet(torch.full((k,), 0.5, dtype=F64)).sample((2000,))
    assert float(objective(w)) <= float(objective(samples).min()) + 1e-12


@pytest.mark.parametrize("k", (16, 32, 64))
def test_no_worse_than_torchjd(k):
    agg = pytest.importorskip("torchjd.aggregation")
    g = gram(jacobian("shared", k, seed=6))
    ours = weighting("mgda")(g)
    theirs = agg.MGDAWeighting(epsilon=1e-12, max_iters=10_000)(g)
    assert float(ours @ g @ ours) <= float(theirs @ g @ theirs) + 1e-12 * float(torch.diagonal(g).max())


def test_the_cpu_solves_every_k_by_the_active_set_and_matches_the_enumeration():
    """On the CPU there is no synchronisation to save: the active set (3-20× faster at K = 8) serves every K; the
    sync-free enumeration is kept for accelerators up to ENUM_MAX, and is the oracle here."""
    from harness.moo._qp import uses_enumeration

    assert not uses_enumeration(3, torch.device("cpu")) and not uses_enumeration(ENUM_MAX, torch.device("cpu"))
    assert uses_enumeration(ENUM_MAX, torch.device("meta")) and not uses_enumeration(ENUM_MAX + 1, torch.device("meta"))
    for k in (3, 5, ENUM_MAX):
        j = jacobian("shared", k, seed=k)
        g = j @ j.T
        torch.testing.assert_close(solve_simplex_qp(g), _simplex_enumerate(g, torch.zeros(k, dtype=F64)),
                                   atol=1e-9, rtol=0)
