"""Property tests of the weightings (torchjd's test suite is the model): exact MGDA vs a brute-force oracle, KKT,
non-conflict, permutation and scale invariance, degenerate matrices, PCGrad order control, CAGrad optimality."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.moo import WEIGHTINGS, combine, gram, mgda_min_norm, min_norm_residual, weighting
from harness.moo._qp import _box_enumerate, _box_pg_one, _simplex_pg, project_simplex, solve_simplex_qp

F64 = torch.float64


def random_jacobian(k: int, p: int, seed: int, rank: int | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if rank is None:
        return torch.randn(k, p, generator=gen, dtype=F64)
    return torch.randn(k, rank, generator=gen, dtype=F64) @ torch.randn(rank, p, generator=gen, dtype=F64)


def oracle_min_norm(g: np.ndarray) -> float:
    """Brute force over all supports (numpy lstsq on the KKT system); returns the optimal objective cᵀGc."""
    k = g.shape[0]
    best = np.inf
    for size in range(1, k + 1):
        for s in itertools.combinations(range(k), size):
            idx = list(s)
            a = np.zeros((size + 1, size + 1))
            a[:size, :size] = g[np.ix_(idx, idx)]
            a[:size, size] = -1.0
            a[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            sol = np.linalg.lstsq(a, rhs, rcond=None)[0][:size]
            if np.all(sol >= -1e-12) and abs(sol.sum() - 1) < 1e-9:
                c = np.zeros(k)
                c[idx] = np.clip(sol, 0, None)
                c /= c.sum()
                best = min(best, float(c @ g @ c))
    return best


def assert_kkt(g: torch.Tensor, c: torch.Tensor, tol: float) -> None:
    assert torch.all(c >= 0) and abs(float(c.sum()) - 1.0) < 1e-12
    gc = g @ c
    obj = c @ gc
    scale = float(torch.diagonal(g).max())
    assert torch.all(gc >= obj - tol * scale), (gc, obj)
    support = c > 1e-9
    assert torch.all((gc[support] - obj).abs() <= tol * scale)


CASES = [(k, seed, rank) for k in range(2, 9) for seed in range(3) for rank in (None, 1, 2, max(1, k - 2))]


@pytest.mark.parametrize(("k", "seed", "rank"), CASES)
def test_mgda_matches_bruteforce_oracle(k, seed, rank):
    jac = random_jacobian(k, 12, seed, rank)
    g = gram(jac)
    c = weighting("mgda")(g)
    scale = float(torch.diagonal(g).max())
    assert float(c @ g @ c) <= oracle_min_norm(g.numpy()) + 1e-8 * scale
    assert_kkt(g, c, 1e-8)


@pytest.mark.parametrize("k", [3, 5, 8])
def test_mgda_pg_fallback_matches_oracle(k):
    g = gram(random_jacobian(k, 10, k))
    g = g / torch.diagonal(g).max()
    c = _simplex_pg(g, torch.zeros(k, dtype=F64))
    assert float(c @ g @ c) <= oracle_min_norm(g.numpy()) + 1e-10
    assert_kkt(g, c, 1e-8)


def test_mgda_large_k_uses_the_active_set_and_is_kkt():
    g = gram(random_jacobian(14, 30, 0))
    c = weighting("mgda")(g)
    assert_kkt(g, c, 1e-7)


@pytest.mark.parametrize("seed", range(10))
def test_mgda_direction_is_non_conflicting(seed):
    jac = random_jacobian(2 + seed % 5, 20, seed)
    d = combine(jac, weighting("mgda")(gram(jac)))
    assert torch.all(jac @ d >= -1e-9 * float((jac**2).sum()))


@pytest.mark.parametrize("seed", range(5))
def test_mgda_l2_normalize_is_min_norm_of_unit_gradients(seed):
    jac = random_jacobian(4, 6, seed) * torch.tensor([[1.0], [10.0], [0.1], [3.0]], dtype=F64)
    c = weighting("mgda", normalize="l2")(gram(jac))
    unit = jac / jac.norm(dim=1, keepdim=True)
    ref = combine(unit, weighting("mgda")(gram(unit)))
    torch.testing.assert_close(combine(jac, c), ref, atol=1e-10, rtol=0)


def test_mgda_l2_normalize_zero_gradient():
    jac = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]], dtype=F64)
    c = weighting("mgda", normalize="l2")(gram(jac))
    assert torch.isfinite(c).all()
    torch.testing.assert_close(combine(jac, c), torch.zeros(2, dtype=F64))


@pytest.mark.parametrize("scale", [1e-30, 1e-6, 1.0, 1e6, 1e30])
def test_mgda_weights_invariant_to_scale(scale):
    g = gram(random_jacobian(5, 8, 1))
    torch.testing.assert_close(weighting("mgda")(g * scale), weighting("mgda")(g), atol=1e-10, rtol=0)


PERM_INVARIANT = ["mean", "mgda", "cagrad", "upgrad", "imtl_g"]


@pytest.mark.parametrize("name", PERM_INVARIANT)
@pytest.mark.parametrize("seed", range(3))
def test_permutation_invariance(name, seed):
    k = 3 + seed
    g = gram(random_jacobian(k, 10, seed))
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(seed))
    fn = weighting(name)
    torch.testing.assert_close(fn(g[perm][:, perm]), fn(g)[perm], atol=1e-7, rtol=1e-7)


def test_pcgrad_k2_permutation_invariant():
    g = gram(random_jacobian(2, 5, 3))
    perm = torch.tensor([1, 0])
    fn = weighting("pcgrad")
    torch.testing.assert_close(fn(g[perm][:, perm]), fn(g)[perm])


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
@pytest.mark.parametrize("kind", ["zero", "rank1", "huge", "tiny", "one_zero_grad"])
@pytest.mark.parametrize("k", [2, 4])
def test_degenerate_matrices_are_finite(name, kind, k):
    jac = random_jacobian(k, 6, 7)
    g = {
        "zero": torch.zeros(k, k, dtype=F64),
        "rank1": gram(random_jacobian(k, 6, 7, rank=1)),
        "huge": gram(jac) * 1e30,
        "tiny": gram(jac) * 1e-30,
        "one_zero_grad": gram(torch.cat([jac[:-1], torch.zeros(1, 6, dtype=F64)])),
    }[kind]
    c = weighting(name)(g, generator=torch.Generator().manual_seed(0))
    assert c.shape == (k,) and torch.isfinite(c).all()


def test_pcgrad_determinism_and_order_dependence():
    # gradients at mutual obtuse angles, so the projection order matters for K = 4
    angles = torch.tensor([0.0, 1.9, 3.9, 5.7], dtype=F64)
    jac = torch.stack([torch.cos(angles), torch.sin(angles), 0.1 * torch.arange(4, dtype=F64)], dim=1)
    g = gram(jac)
    fn = weighting("pcgrad")
    a = fn(g, generator=torch.Generator().manual_seed(1))
    b = fn(g, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    outs = {tuple(fn(g, generator=torch.Generator().manual_seed(s)).round(decimals=10).tolist()) for s in range(20)}
    assert len(outs) > 1


def test_pcgrad_k2_ignores_generator():
    g = gram(J2 := random_jacobian(2, 4, 0))
    assert J2.shape == (2, 4)
    fn = weighting("pcgrad")
    assert torch.equal(
        fn(g, generator=torch.Generator().manual_seed(0)), fn(g, generator=torch.Generator().manual_seed(5))
    )


def pcgrad_reference(jac: torch.Tensor, orders: list[list[int]]) -> torch.Tensor:
    """Vector-space PCGrad (Yu et al. 2020, Algorithm 1) with given orders."""
    out = torch.zeros(jac.shape[1], dtype=F64)
    for i, order in enumerate(orders):
        gi = jac[i].clone()
        for j in order:
            dot = gi @ jac[j]
            if dot < 0:
                gi = gi - dot / (jac[j] @ jac[j]) * jac[j]
        out += gi
    return out


def test_pcgrad_matches_vector_reference_for_every_order():
    jac = random_jacobian(3, 4, 11)
    jac[1] = -0.5 * jac[0] + 0.2 * jac[1]
    g = gram(jac)
    fn = weighting("pcgrad")
    seen = set()
    for seed in range(30):
        c = fn(g, generator=torch.Generator().manual_seed(seed))
        d = combine(jac, c)
        ok = any(
            torch.allclose(d, pcgrad_reference(jac, [list(o0), list(o1), list(o2)]), atol=1e-10)
            for o0 in itertools.permutations([1, 2])
            for o1 in itertools.permutations([0, 2])
            for o2 in itertools.permutations([0, 1])
        )
        assert ok
        seen.add(tuple(d.round(decimals=8).tolist()))
    assert len(seen) >= 1


def cagrad_objective(g: torch.Tensor, w: torch.Tensor, c: float) -> torch.Tensor:
    k = g.shape[0]
    b = g @ torch.full((k,), 1.0 / k, dtype=F64)
    g0n = torch.sqrt(b.mean())
    return w @ b + c * g0n * torch.sqrt(torch.einsum("...i,ij,...j->...", w, g, w).clamp_min(0))


@pytest.mark.parametrize(("k", "seed"), [(2, 0), (3, 1), (4, 2), (6, 3)])
def test_cagrad_inner_problem_is_optimal(k, seed):
    g = gram(random_jacobian(k, 8, seed))
    g = g / torch.diagonal(g).max()
    c = 0.5
    coeffs = weighting("cagrad", c=c, rescale=0)(g)
    w = coeffs - 1.0 / k
    w = w / w.sum()
    best = cagrad_objective(g, w, c)
    samples = torch.distributions.Dirichlet(torch.full((k,), 0.3, dtype=F64)).sample((4000,))
    vals = cagrad_objective(g, samples, c)
    assert best <= vals.min() + 1e-12
    from scipy.optimize import minimize  # test-only oracle (the official implementation uses SLSQP)

    res = minimize(
        lambda x: float(cagrad_objective(g, torch.tensor(x), c)),
        np.full(k, 1.0 / k),
        bounds=[(0, 1)] * k,
        constraints={"type": "eq", "fun": lambda x: x.sum() - 1},
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert float(best) <= res.fun + 1e-9


def test_cagrad_c_zero_is_mean():
    g = gram(random_jacobian(3, 5, 0))
    torch.testing.assert_close(weighting("cagrad", c=0.0)(g), torch.full((3,), 1 / 3, dtype=F64))


@given(st.integers(1, 6), st.integers(0, 10_000))
@settings(max_examples=25, deadline=None)
def test_project_simplex(k, seed):
    v = torch.randn(k, generator=torch.Generator().manual_seed(seed), dtype=F64) * 3
    p = project_simplex(v)
    assert torch.all(p >= 0) and abs(float(p.sum()) - 1) < 1e-12
    # optimality of the projection: (v - p)·(q - p) ≤ 0 for every vertex q
    for i in range(k):
        e = torch.zeros(k, dtype=F64)
        e[i] = 1
        assert float((v - p) @ (e - p)) <= 1e-12


@given(st.integers(2, 7), st.integers(0, 10_000), st.sampled_from([None, 1, 2]))
@settings(max_examples=30, deadline=None)
def test_simplex_qp_with_linear_term_kkt(k, seed, rank):
    gen = torch.Generator().manual_seed(seed)
    q = gram(random_jacobian(k, 9, seed, rank))
    p = torch.randn(k, generator=gen, dtype=F64)
    w = solve_simplex_qp(q, p)
    grad = q @ w + p
    mu = grad @ w
    assert torch.all(grad >= mu - 1e-8 * (1 + float(q.abs().max())))


@pytest.mark.parametrize(("k", "seed"), [(2, 0), (3, 1), (5, 2), (8, 3)])
def test_box_qp_against_nnls_oracle(k, seed):
    from scipy.optimize import nnls

    q = gram(random_jacobian(k, 3, seed)) + 1e-3 * torch.eye(k, dtype=F64)
    u = torch.eye(k, dtype=F64) / k
    ours = _box_enumerate(q, u)
    lower = torch.linalg.cholesky(q).numpy()
    for r in range(k):
        # min ½‖Lᵀ(x + u)‖² over x ≥ 0  is an NNLS problem
        x, _ = nnls(lower.T, -lower.T @ u[r].numpy())
        torch.testing.assert_close(ours[r], u[r] + torch.from_numpy(x), atol=1e-8, rtol=0)
        if r < 2:
            torch.testing.assert_close(_box_pg_one(q, u[r]), ours[r], atol=1e-8, rtol=0)


def test_min_norm_residual_zero_when_stationary():
    jac = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [0.0, 3.0]], dtype=F64)
    assert min_norm_residual(gram(jac)) == pytest.approx(0.0, abs=1e-12)
    c = mgda_min_norm(gram(jac) / 18)
    assert torch.isfinite(c).all()


# ---------------------------------------------------------------------------------------------------------------------
# cross-checks against torchjd (test oracle only; never imported by harness/)
# ---------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def torchjd_agg():
    """torchjd.aggregation, imported by the tests that use it (not at collection: it costs most of a second)."""
    return pytest.importorskip("torchjd.aggregation")


@pytest.mark.parametrize("seed", range(5))
def test_torchjd_imtl_g(seed, torchjd_agg):
    g = gram(random_jacobian(2 + seed, 10, seed))
    torch.testing.assert_close(weighting("imtl_g")(g), torchjd_agg.IMTLGWeighting()(g), atol=1e-9, rtol=1e-7)


@pytest.mark.parametrize("seed", range(5))
def test_torchjd_pcgrad_k2(seed, torchjd_agg):
    g = gram(random_jacobian(2, 4, seed))
    torch.testing.assert_close(weighting("pcgrad")(g), torchjd_agg.PCGradWeighting()(g), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_torchjd_mgda(seed, torchjd_agg):
    k = 2 + seed
    g = gram(random_jacobian(k, 10, seed))
    ours = weighting("mgda")(g)
    theirs = torchjd_agg.MGDAWeighting(epsilon=1e-12, max_iters=10_000)(g)
    assert float(ours @ g @ ours) <= float(theirs @ g @ theirs) + 1e-12
    if k == 2:
        torch.testing.assert_close(ours, theirs, atol=1e-9, rtol=0)


class _NNLSProjector:
    """torchjd DualConeProjector solving its QP (after torchjd's normalize/regularize) with scipy's exact NNLS."""

    def __call__(self, U, G):
        from scipy.optimize import nnls
        from torchjd._linalg import normalize, regularize

        q = regularize(normalize(G, 1e-4), 1e-4).numpy()
        lower = np.linalg.cholesky(q)
        rows = [U_r + nnls(lower.T, -lower.T @ U_r)[0] for U_r in U.numpy()]
        return torch.tensor(np.array(rows), dtype=G.dtype)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("rank", [None, 1])
def test_torchjd_upgrad(seed, rank, torchjd_agg):
    g = gram(random_jacobian(2 + seed, 10, seed, rank))
    theirs = torchjd_agg.UPGradWeighting(projector=_NNLSProjector())(g)
    torch.testing.assert_close(weighting("upgrad")(g), theirs, atol=1e-8, rtol=1e-8)
