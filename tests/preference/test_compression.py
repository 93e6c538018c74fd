"""Compression: inner products within the Johnson–Lindenstrauss bound, exact adjoint, regeneration from the seed
(never a stored P-wide matrix), determinism, memory sublinear in the parameter count, and the counter-based generator:
the same bits as a plain-Python reference, for every block size, and the vectorised path equal to the projection
built entry by entry."""

from __future__ import annotations

import math

import pytest
import torch

from harness.preference.compression import (
    MASK32,
    GaussianProjection,
    ParamLayout,
    SparseProjection,
    counter_bits,
    gaussian_entries,
    jl_epsilon,
    make_compressor,
    mix32_int,
    stream_key,
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


def _reference_bits(key: int, t: int, j: int) -> int:
    """The counter-based generator of one entry, in plain Python integers (an independent reference)."""
    column = mix32_int((j & MASK32) ^ mix32_int((j >> 32) ^ key))
    row = mix32_int(t ^ mix32_int(key ^ 0x9E3779B9))
    return mix32_int(column ^ row)


def _reference_matrix(comp, cols: range) -> torch.Tensor:
    """R[:, cols] of a gaussian or sparse compressor, built entry by entry from `_reference_bits` (float64)."""
    if isinstance(comp, GaussianProjection):
        m = torch.tensor([[_reference_bits(comp.key, t, j) >> 9 for j in cols] for t in range(comp.rank)])
        z = torch.erfinv((m * 2 + 1).to(torch.float32) * 2.0**-23 - 1.0) * (math.sqrt(2.0) * (1.0 / math.sqrt(comp.rank)))
        return z.double()
    out = torch.zeros(comp.rank, len(cols), dtype=torch.float64)
    for c, j in enumerate(cols):
        for t in range(comp.nnz):
            bits = _reference_bits(comp.key, t, j)
            out[((bits >> 1) * comp.rank) >> 31, c] += (1.0 if bits & 1 else -1.0) / math.sqrt(comp.nnz)
    return out


def test_counter_bits_match_the_python_reference_at_any_offset():
    key = stream_key(3, "test")
    for start in (0, 12_345, 2**33 - 2):  # also columns past 2^32 (models above 4.3 G parameters)
        got = counter_bits(key, 5, start, start + 7, "cpu")
        ref = torch.tensor([[_reference_bits(key, t, j) for j in range(start, start + 7)] for t in range(5)])
        assert torch.equal(got, ref)
        assert int(got.min()) >= 0 and int(got.max()) < 2**32


@pytest.mark.parametrize("name", ["gaussian", "sparse"])
def test_blocks_do_not_depend_on_the_chunk(name):
    """Entry (t, j) is a function of (seed, t, j): every block size generates the same values."""
    small = make_compressor(name, LAYOUT, 16, seed=2, chunk=100)
    large = make_compressor(name, LAYOUT, 16, seed=2, chunk=LAYOUT.numel)
    whole = large._block(0, LAYOUT.numel, torch.device("cpu"))
    pieces = [small._block(a, b, torch.device("cpu")) for a, b in small._spans()]
    if name == "gaussian":
        assert torch.equal(torch.cat(pieces, dim=1), whole)
    else:
        for i in range(2):
            assert torch.equal(torch.cat([p[i] for p in pieces], dim=1), whole[i])


def _gamma(n: int, unit_roundoff: float) -> float:
    """Higham's γ_n = n·u / (1 − n·u): the relative error of n successive roundings."""
    return n * unit_roundoff / (1 - n * unit_roundoff)


@pytest.mark.parametrize("name", ["gaussian", "sparse"])
@pytest.mark.parametrize("chunk", [64, 700, 5000])
def test_vectorised_path_equals_the_reference_projection(name, chunk):
    """compress (a block of columns generated in one pass on the gradient's device) = x Rᵀ with R built entry by entry
    from the plain-Python reference, within a rounding bound, batched and row by row; lift = the same R's transpose."""
    layout = ParamLayout(("w", "b"), ((37, 40), (120,)))  # P = 1,600
    x = _points(3, layout.numel)
    comp = make_compressor(name, layout, 24, seed=1, chunk=chunk)
    r = _reference_matrix(comp, range(layout.numel))
    ref, magnitude = x.double() @ r.T, x.double().abs() @ r.abs().T
    # Bound (Higham, Accuracy and Stability of Numerical Algorithms, §3.1): each product x_j·R_kj is rounded once, then
    # takes part in at most chunk − 1 additions inside its block (any order) and one addition into the output per
    # block, so |computed − exact| ≤ γ_n Σ_j |x_j||R_kj| with n = chunk + number of blocks at u = 2⁻²⁴; the float64
    # reference adds its own γ_n at u = 2⁻⁵³, and R's float32 entries are the reference's (erfinv of the same floats).
    n = min(comp.chunk, layout.numel) + len(comp._spans()) + 1
    bound = (_gamma(n, 2.0**-24) + _gamma(n, 2.0**-53)) * magnitude
    for got in (comp.compress(x), torch.cat([comp.compress(x[i : i + 1]) for i in range(3)])):
        err = (got.double() - ref).abs()
        assert (err <= bound).all(), float((err / bound).max())
    v = torch.randn(comp.dim, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(comp.lift(v).double(), r.T @ v.double(), atol=1e-5, rtol=1e-5)


def test_gaussian_entries_are_standard_normal():
    z = gaussian_entries(stream_key(0, "moments"), 64, 0, 4096, "cpu").double()
    assert abs(float(z.mean())) < 0.01 and abs(float(z.var()) - 1.0) < 0.01
    assert abs(float((z**4).mean()) - 3.0) < 0.1  # Gaussian kurtosis
    # distinct row and column keys: the matrix is not symmetric
    assert float((z[:, :64] - z[:, :64].T).abs().mean()) > 1.0


@pytest.mark.gpu
def test_same_projection_on_an_accelerator():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    key = stream_key(5, "device")
    assert torch.equal(counter_bits(key, 8, 0, 1 << 16, "cuda").cpu(), counter_bits(key, 8, 0, 1 << 16, "cpu"))
    torch.testing.assert_close(gaussian_entries(key, 8, 0, 1 << 16, "cuda").cpu(),
                               gaussian_entries(key, 8, 0, 1 << 16, "cpu"), atol=1e-5, rtol=1e-5)
    x = _points(4, LAYOUT.numel)
    for name in ("gaussian", "sparse", "lowrank"):
        comp = make_compressor(name, LAYOUT, 32, seed=1)
        torch.testing.assert_close(comp.compress(x.cuda()).cpu(), comp.compress(x), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("cls", [GaussianProjection, SparseProjection])
def test_projection_is_regenerated_per_chunk_never_stored(cls, monkeypatch):
    from harness.preference import compression

    rank, chunk = 64, 1024
    comp = cls(LAYOUT, rank, seed=0, chunk=chunk)
    biggest = {"numel": 0}
    original = compression.counter_bits

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        biggest["numel"] = max(biggest["numel"], out.numel())
        return out

    monkeypatch.setattr(compression, "counter_bits", spy)
    comp.compress(_points(2, LAYOUT.numel))
    comp.lift(torch.ones(rank))
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
