"""Sublinear compression of per-sample gradients; every projection is regenerated from its seed, never stored.

A compressor maps flat gradients ``(B, P)`` (layout: trainable parameters in `named_parameters` order) to ``(B, D)``
with D independent of P, such that inner products are preserved in expectation (``E[<Rx, Ry>] = <x, y>``), and
offers the adjoint ``lift(v) = Rᵀv`` (``(D,) -> (P,)``), so ``<R g, v> = <g, Rᵀ v>``: a direction found in the
compressed space can be followed in parameter space (the JVP scorer relies on this).

- ``gaussian``: dense JL, ``R_ij ~ N(0, 1/r)``, ``D = r``. Generated chunk by chunk of ``chunk`` columns from
  ``(seed, chunk index)``; peak working memory ``r·chunk`` floats, never ``r·P``. Cost ``O(r·P)`` RNG draws per call.
- ``sparse``: sparse JL (Kane–Nelson style): each column has ``nnz`` entries ``±1/√nnz`` at random rows, ``D = r``.
  Regenerated per chunk from the seed; ``O(nnz·P)`` per call, the practical default at full fine-tuning scale.
- ``lowrank``: per-matrix two-sided sketch ``Sᵀ G T`` of every 2-D gradient ``G`` (m×n) with Gaussian
  ``S`` (m×r), ``T`` (n×r), entries ``N(0, 1/r)`` (a side with ``r ≥`` its size is left exact); a 1-D parameter of length
  n > r gets a dense ``r×n`` Gaussian. Projection memory ``O(r·(m+n))`` per matrix instead of a dense ``D×mn``;
  ``D = Σ min(r,m)·min(r,n)`` (``r²`` per large matrix).
- ``none``: identity (``D = P``), for tests and small LoRA runs.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from harness.seeding import generator

COMPRESSIONS = ("none", "gaussian", "sparse", "lowrank")
BYTES = 4  # float32


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

    @abc.abstractmethod
    def compress(self, grads: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def lift(self, v: torch.Tensor) -> torch.Tensor: ...

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

    def compress(self, grads: torch.Tensor) -> torch.Tensor:
        return grads.float()

    def lift(self, v: torch.Tensor) -> torch.Tensor:
        return v.float()


class _ChunkedProjection(Compressor):
    def __init__(self, layout: ParamLayout, rank: int, seed: int, chunk: int = 1 << 16):
        super().__init__(layout, rank, seed)
        self.chunk = chunk

    @property
    def dim(self) -> int:
        return self.rank

    def _chunks(self) -> list[tuple[int, int, int]]:
        return [(i, a, min(a + self.chunk, self.P)) for i, a in enumerate(range(0, self.P, self.chunk))]


class GaussianProjection(_ChunkedProjection):
    name = "gaussian"

    def _block(self, index: int, width: int, device: torch.device) -> torch.Tensor:
        g = generator(self.seed, "congrad/gaussian-projection", index)
        return (torch.randn(self.rank, width, generator=g) / math.sqrt(self.rank)).to(device)

    def compress(self, grads: torch.Tensor) -> torch.Tensor:
        grads = grads.reshape(grads.shape[0], -1)
        out = torch.zeros(grads.shape[0], self.rank, dtype=torch.float32, device=grads.device)
        for i, a, b in self._chunks():
            out += grads[:, a:b].float() @ self._block(i, b - a, grads.device).T
        return out

    def lift(self, v: torch.Tensor) -> torch.Tensor:
        return torch.cat([v.float() @ self._block(i, b - a, v.device) for i, a, b in self._chunks()])

    def projection_working_bytes(self) -> int:
        return self.rank * min(self.chunk, self.P) * BYTES


class SparseProjection(_ChunkedProjection):
    name = "sparse"

    def __init__(self, layout: ParamLayout, rank: int, seed: int, chunk: int = 1 << 16, nnz: int = 4):
        super().__init__(layout, rank, seed, chunk)
        self.nnz = nnz

    def _block(self, index: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        g = generator(self.seed, "congrad/sparse-projection", index)
        rows = torch.randint(0, self.rank, (self.nnz, width), generator=g)
        signs = (torch.randint(0, 2, (self.nnz, width), generator=g).float() * 2 - 1) / math.sqrt(self.nnz)
        return rows.to(device), signs.to(device)

    def compress(self, grads: torch.Tensor) -> torch.Tensor:
        grads = grads.reshape(grads.shape[0], -1)
        out = torch.zeros(grads.shape[0], self.rank, dtype=torch.float32, device=grads.device)
        for i, a, b in self._chunks():
            rows, signs = self._block(i, b - a, grads.device)
            block = grads[:, a:b].float()
            for t in range(self.nnz):
                out.index_add_(1, rows[t], block * signs[t])
        return out

    def lift(self, v: torch.Tensor) -> torch.Tensor:
        parts = []
        for i, a, b in self._chunks():
            rows, signs = self._block(i, b - a, v.device)
            parts.append((v.float()[rows] * signs).sum(0))
        return torch.cat(parts)

    def projection_working_bytes(self) -> int:
        return 2 * self.nnz * min(self.chunk, self.P) * BYTES


class LowRankPerMatrix(Compressor):
    name = "lowrank"

    def _factors(self, index: int, shape: Sequence[int], device: torch.device) -> list[torch.Tensor | None]:
        """Per side, a Gaussian (size × r) / sqrt(r), or None when r ≥ size (that side stays exact)."""
        g = generator(self.seed, "congrad/lowrank-projection", index)
        dims = shape if len(shape) == 2 else (math.prod(shape),)
        out: list[torch.Tensor | None] = []
        for size in dims:
            if self.rank >= size:
                out.append(None)
            else:
                out.append((torch.randn(size, self.rank, generator=g) / math.sqrt(self.rank)).to(device))
        return out

    def _block_dims(self, shape: Sequence[int]) -> tuple[int, ...]:
        dims = shape if len(shape) == 2 else (math.prod(shape),)
        return tuple(min(self.rank, d) for d in dims)

    @property
    def dim(self) -> int:
        return sum(math.prod(self._block_dims(s)) for s in self.layout.shapes)

    def compress(self, grads: torch.Tensor) -> torch.Tensor:
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

    def lift(self, v: torch.Tensor) -> torch.Tensor:
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
    """Columns regenerated at a time: a Gaussian block of about 2**22 floats (16 MiB); sparse: 65,536 columns
    (2·nnz·65,536 numbers, 2 MiB at nnz = 4)."""
    if name == "gaussian":
        return max(1024, (1 << 22) // rank)
    return 1 << 16


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
