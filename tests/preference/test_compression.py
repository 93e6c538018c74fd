"""Compression: inner products within the Johnson–Lindenstrauss bound, exact adjoint, regeneration from the seed
(never a stored P-wide matrix), determinism, and memory sublinear in the parameter count."""

from __future__ import annotations

import math

import pytest
import torch

from harness.preference.compression import (
    GaussianProjection,
    ParamLayout,
    SparseProjection,
    jl_epsilon,
    make_compressor,
)

LAYOUT = ParamLayout(("emb", "w1", "b1", "w2"), ((300, 40), (64, 96), (96,), (32, 64)))  # P = 20,240


def _points(n: int, p: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=g)
    x[: n // 2] += 0.7 * torch.randn(1, p, generator=g)  # correlated, so inner products are not all ~0
    return x


def max_distortion(x: torch.Tensor, y: torch.Tensor) -> float:
    """max over pairs i<j (and i=j) of |<y_i,y_j> − <x_i,x_j>| / (‖x_i‖‖x_j‖)."""
    gx, gy = x.double() @ x.double().T, y.double() @ y.double().T
    norms = gx.diagonal().sqrt()
    return float(((gy - gx).abs() / (norms[:, None] * norms[None, :])).max())


@pytest.mark.parametrize("name", ["gaussian", "sparse"])
@pytest.mark.parametrize("rank", [256, 1024])
def test_random_projection_within_jl_bound(name, rank):
    n = 24
    x = _points(n, LAYOUT.numel)
    comp = make_compressor(name, LAYOUT, rank, seed=3, chunk=4096)
    measured = max_distortion(x, comp.compress(x))
    bound = jl_epsilon(rank, n)
    assert measured <= bound, (name, rank, measured, bound)
    # and it is a real projection, not the identity or a scaled copy: error of order sqrt(2/r), not 0
    assert measured > 0.1 * math.sqrt(2 / rank)


def test_lowrank_unbiased_and_within_bound_for_its_dimension():
    n = 16
    x = _points(n, LAYOUT.numel, seed=1)
    comp = make_compressor("lowrank", LAYOUT, 16, seed=0)
    assert comp.dim < LAYOUT.numel
    measured = max_distortion(x, comp.compress(x))
    # the Kronecker sketch concentrates more slowly than a dense projection of the same dimension:
    # check it against the bound for the per-matrix rank squared (its per-matrix dimension) with a factor 2 slack
    assert measured <= 2 * jl_epsilon(16 * 16, n)
    # unbiasedness: averaging over seeds drives the error down
    avg = torch.stack([(lambda c: c.compress(x) @ c.compress(x).T)(make_compressor("lowrank", LAYOUT, 16, seed=s))
                       for s in range(12)]).mean(0)
    gx = x @ x.T
    norms = gx.diagonal().sqrt()
    assert float(((avg - gx).abs() / (norms[:, None] * norms[None, :])).max()) < measured


@pytest.mark.parametrize("name", ["none", "gaussian", "sparse", "lowrank"])
def test_lift_is_the_adjoint(name):
    comp = make_compressor(name, LAYOUT, 32, seed=5, chunk=1000)
    x = _points(3, LAYOUT.numel)
    v = torch.randn(comp.dim, generator=torch.Generator().manual_seed(9))
    lhs = comp.compress(x) @ v
    rhs = x @ comp.lift(v)
    torch.testing.assert_close(lhs, rhs, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", ["gaussian", "sparse", "lowrank"])
def test_deterministic_for_a_seed_and_seed_dependent(name):
    x = _points(4, LAYOUT.numel)
    a = make_compressor(name, LAYOUT, 32, seed=7).compress(x)
    b = make_compressor(name, LAYOUT, 32, seed=7).compress(x)
    c = make_compressor(name, LAYOUT, 32, seed=8).compress(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def _gamma(n: int, unit_roundoff: float) -> float:
    """Higham's γ_n = n·u / (1 − n·u): the relative error of n successive roundings."""
    return n * unit_roundoff / (1 - n * unit_roundoff)


def test_chunking_does_not_change_the_projection():
    x = _points(3, LAYOUT.numel)
    # the projection is a pure function of (seed, chunk index, chunk width): compressing the batch and compressing one
    # row at a time (no state between calls) both equal x Rᵀ, with R built here from the same regenerated blocks
    comp = make_compressor("gaussian", LAYOUT, 64, seed=1, chunk=2048)
    batch = comp.compress(x)
    rows = torch.cat([comp.compress(x[i: i + 1]) for i in range(3)])
    ref = torch.zeros(3, comp.rank, dtype=torch.float64)  # exact products (24-bit × 24-bit), float64 sums
    magnitude = torch.zeros_like(ref)  # Σ_j |x_j| |R_kj| per output
    starts = range(0, comp.P, comp.chunk)
    for i, a in enumerate(starts):
        b = min(a + comp.chunk, comp.P)
        block = comp._block(i, b - a, x.device).double()  # the float32 entries, exactly
        ref += x[:, a:b].double() @ block.T
        magnitude += x[:, a:b].double().abs() @ block.abs().T
    # Batched and row-by-row matmuls sum in different orders (by CPU, BLAS kernel and thread count), so they agree only
    # up to rounding. Bound it (Higham, Accuracy and Stability of Numerical Algorithms, §3.1): each product x_j·R_kj is
    # rounded once, then takes part in at most chunk − 1 additions inside its chunk's matmul, whatever the order, and
    # in one addition into the output per chunk, so |computed − exact| ≤ γ_n Σ_j |x_j||R_kj| with
    # n = chunk + number of chunks at u = 2⁻²⁴; the float64 reference adds at most γ_n at u = 2⁻⁵³. Here the bound is
    # ~0.2 on outputs of ~15; measured errors stay below 2e-4 of it (AVX-512, AVX2 and SSE4.2 kernels, 1 or 2 threads),
    # while a wrong block index, a chunk shifted by one column or another seed exceeds it 100-360 times.
    n = comp.chunk + len(starts)
    bound = (_gamma(n, 2.0 ** -24) + _gamma(n, 2.0 ** -53)) * magnitude
    for what, got in (("batch", batch), ("rows", rows)):
        err = (got.double() - ref).abs()
        assert (err <= bound).all(), (what, float((err / bound).max()))
    # so batch and rows, each within the bound of x Rᵀ, differ by at most the sum of their two bounds
    assert ((batch.double() - rows.double()).abs() <= 2 * bound).all()


@pytest.mark.parametrize("cls", [GaussianProjection, SparseProjection])
def test_projection_is_regenerated_per_chunk_never_stored(cls, monkeypatch):
    rank, chunk = 64, 1024
    comp = cls(LAYOUT, rank, seed=0, chunk=chunk)
    biggest = {"numel": 0}
    for fn in ("randn", "randint"):
        original = getattr(torch, fn)

        def spy(*args, _original=original, **kwargs):
            out = _original(*args, **kwargs)
            biggest["numel"] = max(biggest["numel"], out.numel())
            return out

        monkeypatch.setattr(torch, fn, spy)
    comp.compress(_points(2, LAYOUT.numel))
    assert 0 < biggest["numel"] <= rank * chunk < rank * LAYOUT.numel
    assert not any(isinstance(v, torch.Tensor) and v.numel() >= rank * chunk for v in vars(comp).values())


def test_memory_sublinear_in_parameter_count():
    rows = []
    for width in (1_000, 10_000, 100_000):
        layout = ParamLayout(("w",), ((width, 64),))
        for name in ("gaussian", "sparse", "lowrank"):
            comp = make_compressor(name, layout, 64, seed=0)
            mem = comp.memory(n_samples=32, n_languages=3)
            rows.append((name, width, mem))
            if width == 100_000:  # the regenerated projection block is a fixed cost, amortised at scale
                assert mem["compressed_bytes"] < mem["full_bytes"] / 10
    # per-sample compressed dimension does not grow with P
    dims = {(name, w): m["dim"] for name, w, m in rows}
    for name in ("gaussian", "sparse", "lowrank"):
        assert dims[(name, 1_000)] == dims[(name, 100_000)]
    # saving grows with P
    savings = [m["saving_ratio"] for name, w, m in rows if name == "sparse"]
    assert savings == sorted(savings) and savings[-1] > 10 * savings[0]


def test_unknown_compression():
    with pytest.raises(ValueError, match="unknown compression"):
        make_compressor("fft", LAYOUT, 8, seed=0)
