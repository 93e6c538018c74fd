"""Aligned-MTL (harness/moo/weightings/aligned_mtl.py): golden values on the DESIGN.md matrix, properties, and a
cross-check against torchjd's AlignedMTLWeighting (uniform preference, same scale mode) to 1e-10 in float64."""

from __future__ import annotations

import pytest
import torch

from harness.moo import combine, gram, weighting

F64 = torch.float64
J = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=F64)

# scale_mode, weights, direction  (G = [[18, -22], [-22, 38]], eigenvalues 28 ± sqrt(584))
GOLDEN = [
    ("min", (0.559072, 0.408261), (0.213279, 0.967333, 0.967333)),
    ("median", (0.559072, 0.408261), (0.213279, 0.967333, 0.967333)),  # lower median of two = min
    ("rmse", (1.510866, 1.103306), (0.576376, 2.614172, 2.614172)),
]


def random_jacobian(k: int, p: int, seed: int, rank: int | None = None) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if rank is None:
        return torch.randn(k, p, generator=gen, dtype=F64)
    return torch.randn(k, rank, generator=gen, dtype=F64) @ torch.randn(rank, p, generator=gen, dtype=F64)


@pytest.mark.parametrize(("mode", "weights", "direction"), GOLDEN, ids=lambda v: str(v))
def test_golden(mode, weights, direction):
    c = weighting("aligned_mtl", scale_mode=mode)(gram(J))
    assert c.dtype == F64 and c.shape == (2,)
    torch.testing.assert_close(c, torch.tensor(weights, dtype=F64), atol=1e-6, rtol=0)
    torch.testing.assert_close(combine(J, c), torch.tensor(direction, dtype=F64), atol=1e-6, rtol=0)


def test_default_is_min():
    g = gram(random_jacobian(4, 9, 0))
    assert torch.equal(weighting("aligned_mtl")(g), weighting("aligned_mtl", scale_mode="min")(g))


def test_bad_scale_mode():
    with pytest.raises(ValueError, match=r"scale_mode.*\['min', 'median', 'rmse'\]"):
        weighting("aligned_mtl", scale_mode="max")


def test_orthogonal_gradients_get_equal_contributions():
    """G diagonal: B = sqrt(λ_min) diag(1/‖g_i‖), so every c_i ‖g_i‖ = ‖g‖_min / K."""
    norms = torch.tensor([1.0, 3.0, 0.5, 10.0], dtype=F64)
    jac = torch.diag(norms)
    c = weighting("aligned_mtl")(gram(jac))
    torch.testing.assert_close(c * norms, torch.full((4,), 0.5 / 4, dtype=F64), atol=1e-14, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_aligned_gradients_are_balanced(seed):
    """The direction's projections: G c = sqrt(s) G^{1/2} w (B aligns the singular values to sqrt(s))."""
    g = gram(random_jacobian(5, 12, seed))
    c = weighting("aligned_mtl")(g)
    lam, vec = torch.linalg.eigh(g)
    half = vec @ torch.diag(lam.sqrt()) @ vec.T
    w = torch.full((5,), 0.2, dtype=F64)
    torch.testing.assert_close(g @ c, lam.min().sqrt() * half @ w, atol=1e-9 * float(lam.max()), rtol=0)


@pytest.mark.parametrize("scale", [1e-30, 1e-6, 1e6, 1e30])
def test_scale_invariant(scale):
    g = gram(random_jacobian(4, 7, 3))
    torch.testing.assert_close(weighting("aligned_mtl")(g * scale), weighting("aligned_mtl")(g), atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", ["min", "median", "rmse"])
@pytest.mark.parametrize("seed", range(3))
def test_permutation_invariance(mode, seed):
    k = 3 + seed
    g = gram(random_jacobian(k, 10, seed))
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(seed))
    fn = weighting("aligned_mtl", scale_mode=mode)
    torch.testing.assert_close(fn(g[perm][:, perm]), fn(g)[perm], atol=1e-10, rtol=1e-10)


def test_zero_matrix_is_mean():
    c = weighting("aligned_mtl")(torch.zeros(3, 3, dtype=F64))
    torch.testing.assert_close(c, torch.full((3,), 1 / 3, dtype=F64), atol=0, rtol=0)


@pytest.fixture(scope="module")
def torchjd_agg():
    return pytest.importorskip("torchjd.aggregation")


@pytest.mark.parametrize("mode", ["min", "median", "rmse"])
@pytest.mark.parametrize(("k", "seed", "rank"), [(2, 0, None), (3, 1, None), (4, 2, None), (6, 3, None),
                                                 (5, 4, 2), (4, 5, 1), (7, 6, 3)])
def test_torchjd_aligned_mtl(mode, k, seed, rank, torchjd_agg):
    g = gram(random_jacobian(k, 10, seed, rank))
    theirs = torchjd_agg.AlignedMTLWeighting(scale_mode=mode)(g)
    torch.testing.assert_close(weighting("aligned_mtl", scale_mode=mode)(g), theirs, atol=1e-10, rtol=0)


def test_torchjd_aligned_mtl_zero_gradient(torchjd_agg):
    jac = random_jacobian(4, 6, 9)
    jac[2] = 0.0
    g = gram(jac)
    theirs = torchjd_agg.AlignedMTLWeighting()(g)
    torch.testing.assert_close(weighting("aligned_mtl")(g), theirs, atol=1e-10, rtol=0)
