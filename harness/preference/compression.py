"""Sublinear compression of per-sample gradients; every projection is regenerated from its seed, never stored.

A compressor maps flat gradients ``(B, P)`` (layout: trainable parameters in `named_parameters` order) to ``(B, D)``
with D independent of P, such that inner products are preserved in expectation (``E[<Rx, Ry>] = <x, y>``), and
offers the adjoint ``lift(v) = Rᵀv`` (``(D,) -> (P,)``), so ``<R g, v> = <g, Rᵀ v>``: a direction found in the
compressed space can be followed in parameter space (the JVP scorer relies on this).

Every random entry comes from :func:`counter_bits`, a counter-based generator: entry ``(t, j)`` of a projection is a
pure function of ``(seed, purpose, t, j)`` computed with exact int64 tensor arithmetic. So a projection is generated
on the gradient's own device, a whole block of columns per vectorised pass (never chunk by chunk on the CPU, never a
host-to-device copy), with the same values on every device up to the float32 rounding of ``erfinv``, and independent
of the block size ``chunk``, which is only a memory budget.

- ``gaussian``: dense JL, ``R_ij ~ N(0, 1/r)``, ``D = r``. Generated ``chunk`` columns at a time; peak working memory
  about ``12·r·chunk`` bytes (the float32 block and its int64 bits), never ``r·P``. Cost ``O(r·P)`` hashes per call.
- ``sparse``: sparse JL (Kane–Nelson style): each column has ``nnz`` entries ``±1/√nnz`` at random rows, ``D = r``.
  ``O(nnz·P)`` per call, the practical default at full fine-tuning scale.
- ``lowrank``: per-matrix two-sided sketch ``Sᵀ G T`` of every 2-D gradient ``G`` (m×n) with Gaussian
  ``S`` (m×r), ``T`` (n×r), entries ``N(0, 1/r)`` (a side with ``r ≥`` its size is left exact); a 1-D parameter of length
  n > r gets a dense ``r×n`` Gaussian. Projection memory ``O(r·(m+n))`` per matrix instead of a dense ``D×mn``;
  ``D = Σ min(r,m)·min(r,n)`` (``r²`` per large matrix).
- ``none``: identity (``D = P``), for tests and small LoRA runs.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from harness.seeding import derive_seed

COMPRESSIONS = ("none", "gaussian", "sparse", "lowrank")
BYTES = 4  # float32
MASK32 = 0xFFFFFFFF
# the two multipliers of a two-round 32-bit integer hash (C. Wellons' hash-prospector, bias ≈ 0.11); both are below
# 2^31, so with x < 2^32 every product stays below 2^63 and int64 arithmetic is exact on every device
MUL1, MUL2 = 0x21F0AAAD, 0x735A2D97


def mix32(x: torch.Tensor) -> torch.Tensor:
    """The 32-bit hash of each element of an int64 tensor holding values in ``[0, 2^32)``."""
    x = x ^ (x >> 16)
    x = (x * MUL1) & MASK32
    x = x ^ (x >> 15)
    x = (x * MUL2) & MASK32
    return x ^ (x >> 15)


def mix32_int(x: int) -> int:
    """:func:`mix32` on a Python int (the keys; and the tests' independent reference)."""
    x ^= x >> 16
    x = (x * MUL1) & MASK32
    x ^= x >> 15
    x = (x * MUL2) & MASK32
    return x ^ (x >> 15)


def stream_key(seed: int, purpose: str, *keys: int | str) -> int:
    """A 32-bit key for one projection, from the run seed and a purpose (`harness.seeding.derive_seed`)."""
    return derive_seed(seed, purpose, *keys) & MASK32


def counter_bits(key: int, rows: int, start: int, stop: int, device: torch.device | str) -> torch.Tensor:
    """32 random bits (int64 tensor of shape ``(rows, stop - start)``) for the entries ``(t, j)``, ``t < rows``,
    ``start ≤ j < stop``, of an endless random matrix: ``mix32(column_hash(j) ^ row_hash(t))``.

    Counter-based: each entry is a pure function of ``(key, t, j)``, so any block of columns is generated in one
    vectorised pass directly on ``device``, with the same bits on every device and for every block size. Row and column
    hashes use different keys, so the matrix is not symmetric in ``(t, j)``.
    """
    j = torch.arange(start, stop, dtype=torch.int64, device=device)
    column = mix32((j & MASK32) ^ mix32((j >> 32) ^ key))
    t = torch.arange(rows, dtype=torch.int64, device=device)
    row = mix32(t ^ mix32_int(key ^ 0x9E3779B9))
    x = column[None, :] ^ row[:, None]
    # mix32 in place on the one large tensor: on a CPU the allocations cost as much as the arithmetic
    x ^= x >> 16
    x.mul_(MUL1).bitwise_and_(MASK32)
    x ^= x >> 15
    x.mul_(MUL2).bitwise_and_(MASK32)
    x ^= x >> 15
    return x


def gaussian_entries(key: int, rows: int, start: int, stop: int, device: torch.device | str,
                     scale: float = 1.0) -> torch.Tensor:
    """Normal entries ``N(0, scale²)`` (float32) of the same endless matrix: ``√2·scale·erfinv(s)`` with
    ``s = (2m + 1)/2²³ − 1`` for the top 23 counter bits ``m`` (exact in float32; tails cut at ±5.3σ)."""
    m = counter_bits(key, rows, start, stop, device)
    m >>= 9
    s = m.to(torch.float32).mul_(2.0**-22).add_(2.0**-23 - 1.0)  # = (2m + 1)/2²³ − 1, one rounding as written
    return s.erfinv_().mul_(math.sqrt(2.0) * scale)


@contextmanager
def one_cpu_thread(device: torch.device) -> Iterator[None]:
    """One intra-op thread while a projection runs on a CPU (the previous count is restored). Per block the work is
    ~17 elementwise passes of the generator and a skinny ``(B × chunk) @ (chunk × r)`` matmul; on the shared 2-core
    test machine every parallel region waited for a busy core (a 16×1024×256 matmul took 6.6 ms with 2 threads), and
    the Gaussian compression of the tiny llama twin took 6–15 s with 2 threads against 2.8 s with one. The old CPU
    generator (MT19937) was single-threaded too."""
    n = torch.get_num_threads()
    if torch.device(device).type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def jl_epsilon(rank: int, n_points: int, delta: float = 0.01) -> float:
    """Distortion bound ε for inner products of `n_points` vectors projected to `rank` Gaussian dimensions:
    with probability ≥ 1 − δ, ``|<Rx,Ry> − <x,y>| ≤ ε‖x‖‖y‖`` for every pair. From the squared-norm tail
    ``P(|‖Ru‖² − 1| > ε) ≤ 2 exp(−(ε² − ε³) r / 4) ≤ 2 exp(−ε² r / 8)`` (ε ≤ 1/2), a union bound over the 2n² vectors
    ``x_i ± x_j``, and polarisation ``<x,y> = (‖x+y‖² − ‖x−y‖²)/4``: ``ε = sqrt(8 ln(4 n² / δ) / r)``."""
    return math.sqrt(8.0 * math.log(4.0 * n_points ** 2 / delta) / rank)


@dataclass(frozen=True)
class ParamLayout:
    """Names and shapes of the trainable parameters, in flat-gradient order."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, model: torch.nn.Module) -> ParamLayout:
        rows = [(n, tuple(p.shape)) for n, p in model.named_parameters() if p.requires_grad]
        return cls(tuple(n for n, _ in rows), tuple(s for _, s in rows))

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def offsets(self) -> list[tuple[int, int]]:
        out, start = [], 0
        for s in self.shapes:
            out.append((start, start + math.prod(s)))
            start += math.prod(s)
        return out


class Compressor(abc.ABC):
    """A linear map R^P -> R^dim applied to per-sample gradients; `lift` is its exact transpose."""

    name = "base"

    def __init__(self, layout: ParamLayout, rank: int, seed: int):
        self.layout, self.rank, self.seed = layout, rank, seed
        self.P = layout.numel

    @property
    @abc.abstractmethod
    def dim(self) -> int: ...

    def compress(self, grads: torch.Tensor) -> torch.Tensor:
        """``(B, P) -> (B, dim)`` float32, on the gradients' device (see :func:`one_cpu_thread` on a CPU)."""
        with one_cpu_thread(grads.device):
            return self._compress(grads)

    def lift(self, v: torch.Tensor) -> torch.Tensor:
        """``(dim,) -> (P,)``: the exact transpose of :meth:`compress`."""
        with one_cpu_thread(v.device):
            return self._lift(v)

    @abc.abstractmethod
    def _compress(self, grads: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def _lift(self, v: torch.Tensor) -> torch.Tensor: ...

    def projection_working_bytes(self) -> int:
        """Peak bytes of projection matrix held at any time while compressing (regenerated chunk / matrix)."""
        return 0

    def memory(self, n_samples: int, n_languages: int) -> dict[str, float]:
        full = n_samples * self.P * BYTES
        compressed = (n_samples + n_languages) * self.dim * BYTES + self.projection_working_bytes()
        return {"full_bytes": float(full), "compressed_bytes": float(compressed),
                "saving_ratio": full / max(compressed, 1), "dim": float(self.dim), "params": float(self.P)}


class Identity(Compressor):
    name = "none"

    @property
    def dim(self) -> int:
        return self.P

    def _compress(self, grads: torch.Tensor) -> torch.Tensor:
        return grads.float()

    def _lift(self, v: torch.Tensor) -> torch.Tensor:
        return v.float()


class _ChunkedProjection(Compressor):
    """A projection generated ``chunk`` columns at a time from :func:`counter_bits` (``purpose`` names its stream)."""

    purpose = "base"

    def __init__(self, layout: ParamLayout, rank: int, seed: int, chunk: int = 1 << 16):
        super().__init__(layout, rank, seed)
        self.chunk = chunk
        self.key = stream_key(seed, self.purpose)

    @property
    def dim(self) -> int:
        return self.rank

    def _spans(self) -> list[tuple[int, int]]:
        return [(a, min(a + self.chunk, self.P)) for a in range(0, self.P, self.chunk)]


class GaussianProjection(_ChunkedProjection):
    name = "gaussian"
    purpose = "congrad/gaussian-projection"

    def _block(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        """Columns ``start:stop`` of R, ``(r, stop - start)`` float32, on ``device``."""
        return gaussian_entries(self.key, self.rank, start, stop, device, 1.0 / math.sqrt(self.rank))

    def _compress(self, grads: torch.Tensor) -> torch.Tensor:
        grads = grads.reshape(grads.shape[0], -1)
        out = torch.zeros(grads.shape[0], self.rank, dtype=torch.float32, device=grads.device)
        for a, b in self._spans():
            out += grads[:, a:b].float() @ self._block(a, b, grads.device).T
        return out

    def _lift(self, v: torch.Tensor) -> torch.Tensor:
        return torch.cat([v.float() @ self._block(a, b, v.device) for a, b in self._spans()])

    def projection_working_bytes(self) -> int:
        return self.rank * min(self.chunk, self.P) * (BYTES + 8)  # float32 block + its int64 counter bits


class SparseProjection(_ChunkedProjection):
    name = "sparse"
    purpose = "congrad/sparse-projection"

    def __init__(self, layout: ParamLayout, rank: int, seed: int, chunk: int = 1 << 16, nnz: int = 4):
        super().__init__(layout, rank, seed, chunk)
        self.nnz = nnz

    def _block(self, start: int, stop: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``(nnz, stop - start)`` int64 and values ``±1/√nnz`` float32 of columns ``start:stop``: row from
        the top 31 bits of an entry's counter bits (multiply-shift, bias < r/2³¹), sign from the lowest bit."""
        bits = counter_bits(self.key, self.nnz, start, stop, device)
        rows = ((bits >> 1) * self.rank) >> 31
        signs = ((bits & 1) * 2 - 1).to(torch.float32) / math.sqrt(self.nnz)
        return rows, signs

    def _compress(self, grads: torch.Tensor) -> torch.Tensor:
        grads = grads.reshape(grads.shape[0], -1)
        out = torch.zeros(grads.shape[0], self.rank, dtype=torch.float32, device=grads.device)
        for a, b in self._spans():
            rows, signs = self._block(a, b, grads.device)
            block = grads[:, a:b].float()
            for t in range(self.nnz):
                out.index_add_(1, rows[t], block * signs[t])
        return out

    def _lift(self, v: torch.Tensor) -> torch.Tensor:
        parts = []
        for a, b in self._spans():
            rows, signs = self._block(a, b, v.device)
            parts.append((v.float()[rows] * signs).sum(0))
        return torch.cat(parts)

    def projection_working_bytes(self) -> int:
        return self.nnz * min(self.chunk, self.P) * (2 * 8 + BYTES)  # counter bits and rows (int64), signs


class LowRankPerMatrix(Compressor):
    name = "lowrank"

    def _factors(self, index: int, shape: Sequence[int], device: torch.device) -> list[torch.Tensor | None]:
        """Per side, a Gaussian (size × r) / sqrt(r), or None when r ≥ size (that side stays exact)."""
        dims = shape if len(shape) == 2 else (math.prod(shape),)
        out: list[torch.Tensor | None] = []
        for side, size in enumerate(dims):
            if self.rank >= size:
                out.append(None)
            else:
                key = stream_key(self.seed, "congrad/lowrank-projection", index, side)
                out.append(gaussian_entries(key, self.rank, 0, size, device, 1.0 / math.sqrt(self.rank)).T)
        return out

    def _block_dims(self, shape: Sequence[int]) -> tuple[int, ...]:
        dims = shape if len(shape) == 2 else (math.prod(shape),)
        return tuple(min(self.rank, d) for d in dims)

    @property
    def dim(self) -> int:
        return sum(math.prod(self._block_dims(s)) for s in self.layout.shapes)

    def _compress(self, grads: torch.Tensor) -> torch.Tensor:
        grads = grads.reshape(grads.shape[0], -1).float()
        parts = []
        for index, ((a, b), shape) in enumerate(zip(self.layout.offsets(), self.layout.shapes, strict=False)):
            factors = self._factors(index, shape, grads.device)
            block = grads[:, a:b]
            if len(shape) == 2:
                block = block.reshape(-1, *shape)
                s, t = factors
                if s is not None:
                    block = torch.einsum("bmn,mr->brn", block, s)
                if t is not None:
                    block = torch.einsum("brn,nq->brq", block, t)
            elif factors[0] is not None:
                block = block @ factors[0]
            parts.append(block.reshape(grads.shape[0], -1))
        return torch.cat(parts, dim=1)

    def _lift(self, v: torch.Tensor) -> torch.Tensor:
        v = v.float()
        parts, start = [], 0
        for index, shape in enumerate(self.layout.shapes):
            dims = self._block_dims(shape)
            block = v[start: start + math.prod(dims)].reshape(dims)
            start += math.prod(dims)
            factors = self._factors(index, shape, v.device)
            if len(shape) == 2:
                s, t = factors
                if s is not None:
                    block = s @ block
                if t is not None:
                    block = block @ t.T
            elif factors[0] is not None:
                block = factors[0] @ block
            parts.append(block.reshape(-1))
        return torch.cat(parts)

    def projection_working_bytes(self) -> int:
        biggest = 0
        for shape in self.layout.shapes:
            dims = shape if len(shape) == 2 else (math.prod(shape),)
            biggest = max(biggest, sum(d * self.rank for d in dims if self.rank < d))
        return biggest * BYTES


def default_chunk(name: str, rank: int) -> int:
    """Columns generated at a time (a memory budget only: the values do not depend on it). Gaussian: about 2**18
    entries (3 MiB with their counter bits); sparse: 16,384 columns (1.3 MiB at nnz = 4). Both are the CPU's sweet spot
    (larger blocks were no faster there); on an accelerator a larger ``projection_chunk`` (2**20 columns or more)
    amortises the kernel launches."""
    if name == "gaussian":
        return max(256, (1 << 18) // rank)
    return 1 << 14


def make_compressor(name: str, layout: ParamLayout, rank: int, seed: int, chunk: int | None = None,
                    nnz: int = 4) -> Compressor:
    """`chunk` (columns of the projection regenerated at a time): None or <= 0 = `default_chunk`."""
    if name in ("gaussian", "sparse") and (chunk is None or chunk <= 0):
        chunk = default_chunk(name, rank)
    if name == "none":
        return Identity(layout, rank, seed)
    if name == "gaussian":
        return GaussianProjection(layout, rank, seed, chunk)
    if name == "sparse":
        return SparseProjection(layout, rank, seed, chunk, nnz)
    if name == "lowrank":
        return LowRankPerMatrix(layout, rank, seed)
    raise ValueError(f"unknown compression {name!r}; allowed: {list(COMPRESSIONS)}")
