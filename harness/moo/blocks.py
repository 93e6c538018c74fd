"""The block layer every gradient combiner shares (DESIGN.md, "Idea 1"): block layout, block Grams, block coefficients.

A *block* is a set of coordinates of a flat gradient. For every block b, with ``rows`` the K per-language gradients:

1. ``G_b = Σ_ranges rows[:, r] rows[:, r]ᵀ`` accumulated in float64 (:func:`block_gram`; on CPU float32 partial
   Grams of 32 K columns, `harness.moo.weightings.base.FLOAT32_GRAM_CHUNK`). Grams are additive over coordinate
   slices, so a block's Gram is also the sum of partial Grams over any split of its coordinates — what the sharded
   DDP hook all-reduces;
2. ``c_b = rule(G_b, step, b.index)`` (:class:`BlockRule`): optional l2 normalisation, the weighting, optional output
   scaling, all expressed as coefficients on the *raw* gradients; PCGrad's projection order comes from
   ``harness.seeding.generator(seed, "pcgrad", step, b.index)``, the same on every rank;
3. ``d[b] = Σ_k c_bk rows_k[b]`` (:func:`block_directions`).

A stateful weighting (GradVac, FAMO; :class:`~harness.moo.weightings.StatefulWeighting`) keeps one state per block
index inside the rule, sees the K per-language losses of the step when it ``needs_losses``, and is checkpointed through
``BlockRule.state_dict`` / ``load_state_dict`` (the single-process combiner's ``polymoo_weighting_state.pt`` beside
the HF checkpoint; the DDP engine's ``state.pt``).

Three callers run this loop: the single-process combiner (:mod:`harness.moo.combiners`, rows = the K×P flat
gradients), the DDP communication hooks (:mod:`harness.distributed.hooks`, rows = one bucket's language rows or this
rank's slice of them) and the simulation of those hooks (:mod:`harness.distributed.simulate`).

Granularity — which coordinates form a block (the paper's locality question, "why buckets?", as an ablation):

* ``whole``: one block, the whole trainable vector (= the full-gradient methods);
* ``ddp_bucket``: DDP's rebuilt buckets for ``bucket_cap_mb`` (:func:`harness.buckets.ddp_bucket_plan`); block index =
  bucket index;
* ``module``: each transformer block (parameter names up to their first integer component, e.g. ``model.layers.3``;
  any ``nn.Sequential`` child likewise), and each run of consecutive parameters outside the layers as one top-level
  group (embeddings before the first layer; final norm + LM head after the last); indices in registration order;
* ``tensor``: each trainable parameter; index = its position in ``named_parameters`` order.

Under DDP a hook only sees one bucket at a time, so ``module`` and ``tensor`` become sub-blocks *inside* the bucket
(:func:`bucket_blocks`): a tensor always lies in one bucket; a module that spans two buckets is split at the bucket
boundary, and each piece is weighted on its own Gram (both pieces keep the module's index as their PCGrad key). So a
DDP run equals the single-process run at the same granularity exactly when no module spans a bucket boundary.
``whole`` under DDP is the full-gradient hook path (``full``, ``full_gather``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from harness.buckets import Bucket, ddp_bucket_plan, trainable_parameters
from harness.moo.weightings import (
    StatefulWeighting,
    Weighting,
    WeightingState,
    combine,
    gram,
    load_state_dict,
    state_dict,
)
from harness.seeding import generator

Granularity = Literal["whole", "ddp_bucket", "module", "tensor"]
GRANULARITIES: tuple[str, ...] = get_args(Granularity)
Normalize = Literal["none", "l2"]
OutputScale = Literal["raw", "mean_norm"]

GRAM_CHUNK = 1 << 16
"""Columns per partial Gram (`weightings.gram` caps a float32 one at 32 K columns on CPU): a 6×65536 float64 chunk
stays in cache (3× faster than one 1.3 M-column copy)."""


# ----------------------------------------------------------------------------------------------------------------------
# layout
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A set of coordinates of a flat gradient: sorted, merged ``[start, end)`` ranges."""

    index: int
    ranges: tuple[tuple[int, int], ...]
    names: tuple[str, ...] = ()

    @property
    def numel(self) -> int:
        return sum(e - s for s, e in self.ranges)


def merge_ranges(ranges: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """Sorted ranges with touching neighbours merged and empty ones dropped."""
    merged: list[list[int]] = []
    for s, e in sorted(r for r in ranges if r[1] > r[0]):
        if merged and merged[-1][1] == s:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    return tuple((s, e) for s, e in merged)


def flat_offsets(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``name -> (start, end)`` of each trainable parameter in the flat gradient (``named_parameters`` order)."""
    out, offset = {}, 0
    for name, p in trainable_parameters(model):
        out[name] = (offset, offset + p.numel())
        offset += p.numel()
    return out


def _total(offsets: Mapping[str, tuple[int, int]]) -> int:
    return max((e for _, e in offsets.values()), default=0)


def blocks_for_plan(plan: Sequence[Bucket], offsets: dict[str, tuple[int, int]]) -> list[Block]:
    """One :class:`Block` per bucket (coordinate order inside a block does not matter to Grams or combinations)."""
    blocks = [Block(b.index, merge_ranges([offsets[n] for n in b.names]), tuple(b.names)) for b in plan]
    covered, total = sum(b.numel for b in blocks), _total(offsets)
    if covered != total:
        raise ValueError(f"bucket plan covers {covered} of {total} gradient coordinates")
    return blocks


def whole_block(offsets: dict[str, tuple[int, int]]) -> Block:
    total = _total(offsets)
    return Block(0, ((0, total),) if total else (), tuple(offsets))


def _layer_key(name: str) -> str | None:
    """``model.layers.3.mlp.up_proj.weight -> model.layers.3``; None outside any numbered container."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return None


def block_index(names: Sequence[str], granularity: str) -> dict[str, int]:
    """``name -> block index`` of the trainable parameters (``named_parameters`` order) for ``module`` / ``tensor``."""
    if granularity == "tensor":
        return {n: i for i, n in enumerate(names)}
    if granularity != "module":
        raise ValueError(f"block_index is for granularity module|tensor, got {granularity!r}")
    index: dict[str, int] = {}
    groups: dict[str, int] = {}
    run: str | None = None  # the open run of consecutive non-layer parameters
    for name in names:
        key = _layer_key(name)
        if key is None:
            run = run or f"<top-level {len(groups)}>"
            key = run
        else:
            run = None
        index[name] = groups.setdefault(key, len(groups))
    return index


def blocks_for_index(index: Mapping[str, int], offsets: Mapping[str, tuple[int, int]]) -> list[Block]:
    """The flat coordinates grouped by block index (one :class:`Block` per index, sorted by it)."""
    ranges: dict[int, list[tuple[int, int]]] = {}
    names: dict[int, list[str]] = {}
    for name, (s, e) in offsets.items():
        ranges.setdefault(index[name], []).append((s, e))
        names.setdefault(index[name], []).append(name)
    return [Block(i, merge_ranges(ranges[i]), tuple(names[i])) for i in sorted(ranges)]


def model_blocks(model: nn.Module, granularity: str, bucket_cap_mb: float | None = None) -> list[Block]:
    """The single-process layout of ``model``'s trainable vector at ``granularity`` (cap: ``ddp_bucket`` only)."""
    offsets = flat_offsets(model)
    if granularity == "whole":
        return [whole_block(offsets)]
    if granularity == "ddp_bucket":
        return blocks_for_plan(ddp_bucket_plan(model, bucket_cap_mb), offsets)
    if granularity in ("module", "tensor"):
        return blocks_for_index(block_index(list(offsets), granularity), offsets)
    raise ValueError(f"unknown granularity {granularity!r}; known: {', '.join(GRANULARITIES)}")


def nested_index(model: nn.Module, granularity: str) -> dict[str, int] | None:
    """What the DDP bucket hooks need to split a bucket: None when the bucket is the block (``ddp_bucket``; ``whole``
    runs the full-gradient hooks), else ``name -> block index`` (``module``, ``tensor``)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; known: {', '.join(GRANULARITIES)}")
    if granularity in ("whole", "ddp_bucket"):
        return None
    return block_index([n for n, _ in trainable_parameters(model)], granularity)


def bucket_blocks(bucket: int, names: Sequence[str], sizes: Sequence[int],
                  index: Mapping[str, int] | None = None) -> list[Block]:
    """The blocks of one DDP bucket, ranges relative to its flat buffer (the parameters concatenated in bucket order).

    Without ``index`` the bucket is one block (index = bucket index). With it the bucket's coordinates are grouped by
    block index, sorted by it; a module spanning two buckets contributes one piece to each.
    """
    if index is None:
        total = sum(sizes)
        return [Block(bucket, ((0, total),) if total else (), tuple(names))]
    offsets, offset = {}, 0
    for name, size in zip(names, sizes, strict=True):
        offsets[name] = (offset, offset + size)
        offset += size
    return blocks_for_index(index, offsets)


def restrict(blocks: Sequence[Block], start: int, stop: int) -> list[Block]:
    """The blocks' coordinates inside ``[start, stop)``, shifted so ``start`` is 0. Blocks left empty are kept: every
    rank of the sharded hook must hold the same list, in the same order, for the stacked Gram all-reduce."""
    out = []
    for b in blocks:
        ranges = tuple((max(s, start) - start, min(e, stop) - start) for s, e in b.ranges if s < stop and e > start)
        out.append(Block(b.index, ranges, b.names))
    return out


def pad_blocks(blocks: Sequence[Block], size: int, padded: int) -> list[Block]:
    """The block holding coordinate ``size - 1`` also takes the zero padding ``[size, padded)`` (a padded buffer's
    zeros change no Gram; keeping them inside one range keeps the per-slice matmuls whole)."""
    return [Block(b.index, tuple((s, padded if e == size else e) for s, e in b.ranges), b.names) for b in blocks]


# ----------------------------------------------------------------------------------------------------------------------
# Grams, coefficients, directions
# ----------------------------------------------------------------------------------------------------------------------


def block_gram(rows: Tensor, block: Block, chunk: int = GRAM_CHUNK, exact: bool = False) -> Tensor:
    """Gram of the block's columns of ``rows`` (K×n): partial Grams over column chunks (`weightings.gram`), summed in
    float64."""
    k = rows.shape[0]
    out = torch.zeros(k, k, dtype=torch.float64, device=rows.device)
    for s, e in block.ranges:
        out += gram(rows[:, s:e], chunk=chunk, exact=exact)
    return out


def block_grams(rows: Tensor, blocks: Sequence[Block], chunk: int = GRAM_CHUNK, exact: bool = False) -> list[Tensor]:
    return [block_gram(rows, b, chunk, exact) for b in blocks]


def block_coefficients(g: Tensor, fn: Weighting, normalize: str = "none", output_scale: str = "raw",
                       gen: torch.Generator | None = None) -> Tensor:
    """Coefficients on the raw gradients of one block, from its Gram ``g`` (a stateless weighting ``fn``).

    ``normalize="l2"``: the weighting sees ``G_ij/(‖g_i‖‖g_j‖)`` and its coefficients are divided by ``‖g_i‖``; a
    language whose gradient is exactly zero on the block is left out (coefficient 0) — the one data-dependent shape,
    so it costs one host synchronisation per block. ``output_scale="mean_norm"``: the direction is rescaled to the norm
    of the block's mean gradient (unchanged when it is 0).
    """
    g = g.to(torch.float64)
    k = g.shape[0]
    if normalize == "l2":
        norms = torch.sqrt(torch.diagonal(g).clamp_min(0.0))
        active = norms > 0
        c = torch.zeros(k, dtype=torch.float64, device=g.device)
        if bool(active.any()):
            idx = active.nonzero().flatten()
            n = norms[idx]
            sub = g[idx][:, idx] / (n[:, None] * n[None, :])
            c[idx] = fn(sub, generator=gen).to(torch.float64) / n
    else:
        c = fn(g, generator=gen).to(torch.float64)
    return _finish(g, c, output_scale)


def _finish(g: Tensor, c: Tensor, output_scale: str) -> Tensor:
    if output_scale == "mean_norm":
        k = g.shape[0]
        mean_w = torch.full((k,), 1.0 / k, dtype=torch.float64, device=g.device)
        target = torch.sqrt((mean_w @ g @ mean_w).clamp_min(0.0))
        current = torch.sqrt((c @ g @ c).clamp_min(0.0))
        c = torch.where(current > 0, c * target / torch.where(current > 0, current, torch.ones_like(current)), c)
    return torch.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0)


def stateful_block_coefficients(g: Tensor, fn: StatefulWeighting, losses: Tensor | None, state: WeightingState,
                                normalize: str = "none", output_scale: str = "raw",
                                gen: torch.Generator | None = None) -> tuple[Tensor, WeightingState]:
    """:func:`block_coefficients` for a stateful weighting: ``(coefficients, new state)``.

    The state is K-sized, so ``normalize="l2"`` keeps every language: a zero gradient stays a zero row of the
    normalised Gram (and gets coefficient 0) instead of being left out; no host synchronisation.
    """
    g = g.to(torch.float64)
    if normalize == "l2":
        norms = torch.sqrt(torch.diagonal(g).clamp_min(0.0))
        safe = torch.where(norms > 0, norms, torch.ones_like(norms))
        c, new = fn(g / (safe[:, None] * safe[None, :]), losses, state, generator=gen)
        c = torch.where(norms > 0, c.to(torch.float64) / safe, torch.zeros_like(safe))
    else:
        c, new = fn(g, losses, state, generator=gen)
    return _finish(g, c.to(torch.float64), output_scale), new


@dataclass
class BlockRule:
    """How every block turns its Gram into coefficients: the weighting, normalisation, output scale and PCGrad seed.

    ``seeded=False`` skips building the ``(seed, "pcgrad", step, block)`` generator for weightings that never draw
    from it (PCGrad and GradVac do); the coefficients are the same either way.

    A stateful weighting (:class:`~harness.moo.weightings.StatefulWeighting`) keeps one state per block index in
    ``states``, created by ``init_state(K)`` at the block's first solve; ``losses`` (the K per-language losses of the
    step) are required when it ``needs_losses``. :meth:`state_dict` / :meth:`load_state_dict` checkpoint the states.
    """

    fn: Weighting | StatefulWeighting
    normalize: str = "none"
    output_scale: str = "raw"
    seed: int = 0
    seeded: bool = True
    states: dict[int, WeightingState] = field(default_factory=dict, compare=False, repr=False)

    @property
    def stateful(self) -> bool:
        return isinstance(self.fn, StatefulWeighting)

    def __call__(self, gram: Tensor, step: int, index: int, losses: Tensor | None = None) -> Tensor:
        gen = generator(self.seed, "pcgrad", step, index) if self.seeded else None
        if not self.stateful:
            return block_coefficients(gram, self.fn, self.normalize, self.output_scale, gen)  # type: ignore[arg-type]
        fn: StatefulWeighting = self.fn  # type: ignore[assignment]
        if fn.needs_losses and losses is None:
            raise ValueError(f"weighting {fn!r} needs the per-language losses of the step; none were given")
        state = self.states.get(index)
        if state is None:
            state = fn.init_state(gram.shape[0])
        c, self.states[index] = stateful_block_coefficients(gram, fn, losses, state, self.normalize,
                                                            self.output_scale, gen)
        return c

    def coefficients(self, grams: Sequence[Tensor] | Tensor, step: int, blocks: Sequence[Block],
                     losses: Tensor | None = None) -> list[Tensor]:
        """One coefficient vector per block (``grams``: a list, or a stacked ``(M, K, K)`` tensor)."""
        return [self(g, step, b.index, losses) for b, g in zip(blocks, grams, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        """The weighting's per-block states (CPU float64 copies; ``torch.load(weights_only=True)`` reads them)."""
        return {"blocks": {str(i): state_dict(s) for i, s in sorted(self.states.items())}}

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output; each block's state is checked against ``init_state(K)``."""
        if not self.stateful:
            return
        fn: StatefulWeighting = self.fn  # type: ignore[assignment]
        out = {}
        for key, state in dict(saved.get("blocks", {})).items():
            k = _state_k(fn, state)
            out[int(key)] = load_state_dict(fn, k, state)
        self.states = out


def _state_k(fn: StatefulWeighting, state: Mapping[str, Any]) -> int:
    """K of a saved state: the leading size of its first tensor of rank ≥ 1 in ``init_state``'s layout."""
    template = fn.init_state(1)
    for key, ref in template.items():
        if ref.ndim >= 1 and key in state:
            return int(torch.as_tensor(state[key]).shape[0])
    raise ValueError(f"cannot tell K from the saved state of {fn!r} (keys {sorted(state)})")


def block_directions(rows: Tensor, blocks: Sequence[Block], coeffs: Sequence[Tensor]) -> Tensor:
    """``d`` with ``d[b] = Σ_k c_bk rows_k[b]`` on every block; the blocks must cover every column of ``rows``."""
    n = rows.shape[1]
    if len(blocks) == 1 and blocks[0].ranges == ((0, n),):
        return combine(rows, coeffs[0])  # one block over everything: one matmul, no scatter
    out = rows.new_zeros(n)
    for block, c in zip(blocks, coeffs, strict=True):
        for s, e in block.ranges:
            out[s:e] = combine(rows[:, s:e], c)
    return out


def solve_blocks(rows: Tensor, blocks: Sequence[Block], rule: BlockRule, step: int, chunk: int = GRAM_CHUNK,
                 losses: Tensor | None = None, exact: bool = False) -> Tensor:
    """Grams -> coefficients -> direction of ``rows`` over ``blocks`` (the allgather hook and its simulation)."""
    grams = block_grams(rows, blocks, chunk, exact)
    return block_directions(rows, blocks, rule.coefficients(grams, step, blocks, losses))
