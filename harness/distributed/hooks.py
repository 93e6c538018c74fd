"""DDP communication hooks for language-per-rank training (DESIGN.md, "Execution modes", 2).

Every rank holds the gradient of ONE language (or one member of a language group). A hook receives a DDP bucket
(the flat local gradient of a group of parameters) and returns the tensor DDP writes back into `.grad`:

- `mean`       plain averaging (all-reduce of bucket/N): joint SFT with language-balanced ranks; equals plain DDP.
- `allgather`  all-gather the bucket from every rank (N×B), average ranks sharing a language (K×B), Gram, weighting,
               combination. Bytes per rank (N−1)·B: about N/2 times an all-reduce.
- `sharded`    (1) all-to-all: rank r receives slice r of every rank's bucket; (2) language rows of the slice and their
               partial K×K Gram, all-reduced (the sum over slices is the exact bucket Gram); (3) the same solve on every
               rank (same Gram, same seeded generator), combination of the own slice; (4) all-gather of the slices.
               Bytes ≈ one all-reduce (2(N−1)/N·B) + an all-reduce of K×K float64 values per bucket.
- `full`       full-gradient baseline at sharded cost: the hook does (1)-(2) and keeps its slice rows; after the whole
               backward `finalize` all-reduces the GLOBAL Gram (sum of bucket Grams), solves once, combines every
               kept slice and all-gathers them into `.grad`.
- `full_gather` the naive full-gradient baseline: every rank all-gathers every bucket (keeps N×P, i.e. K×P language
               rows), global Gram, one solve, combination — what the paper calls prohibitive.

Blocks (`harness.moo.blocks`, the loop the single-process combiner runs too): with granularity `ddp_bucket` the bucket
is one block; with `module` / `tensor` the bucket hooks weight each block's piece inside the bucket separately (a
module spanning two buckets is split at the bucket boundary); the sharded hook all-reduces one stacked (M, K, K)
tensor of partial Grams for the bucket's M blocks. `whole` is the full-gradient hooks (`full`, `full_gather`).

Every hook runs plain averaging during the warm-up steps (DDP rebuilds its buckets after iteration 0, as PyTorch's
PowerSGD hook does). PCGrad's projection order comes from `harness.seeding.generator(seed, "pcgrad", step, block)`
(block = the bucket index with `ddp_bucket`, the module / tensor index otherwise, 0 for the full-gradient hooks, as the
single-process whole-vector combiner), identical on every rank. Collectives are synchronous inside the hook; the block
layout is host-side metadata and the weightings are pure tensor code, so for K ≤ 8 the solve adds no host synchronisation
(except `normalize: l2`, whose zero-gradient test picks the languages to solve over: one sync per block; above K = 8
the exact active-set solver runs on the host: one sync per solve, docs/solvers.md). The hook
returns a completed future. A stateful weighting (GradVac) keeps its per-block states in `HookState.rule`, updated
identically on every rank (same Gram, same generator) and saved in the engine's state dict; one that needs the
per-language losses (FAMO) gets them in `HookState.losses`: the engine all-gathers the ranks' losses after the forward
and before the backward (`set_losses`, K_eff float64 values per step), so every rank solves with the same losses.
Replicas stay bit-identical because every rank ends with the same all-gathered /
all-reduced values.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from harness.buckets import write_flat_grads
from harness.distributed.accounting import Comm
from harness.distributed.assignment import StepAssignment
from harness.moo.blocks import (
    GRANULARITIES,
    Block,
    BlockRule,
    block_directions,
    block_grams,
    bucket_blocks,
    pad_blocks,
    restrict,
    solve_blocks,
)
from harness.moo.options import BUCKET_HOOKS, GLOBAL_HOOKS
from harness.moo.weightings import combine, gram, weighting

HOOKS = ("mean", "allgather", "sharded", "full", "full_gather")
GLOBAL_KEY = 0  # generator key of the whole-vector solve: the single-process whole combiner's block index
HOOK_GRAM_CHUNK = 1 << 22
"""Columns per float64 partial Gram inside the hooks: `weightings.gram`'s default, a few large matmuls per bucket (on a
GPU the single-process combiner's 64 K-column chunks would launch ~100 kernels per 25 MiB bucket)."""


def check_granularity(hook: str, granularity: str) -> None:
    """Which granularities a hook implements: the bucket hooks split buckets (`ddp_bucket`, `module`, `tensor`); the
    full-gradient hooks are `whole` (they accept the default `ddp_bucket` too: nothing to split)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; known: {', '.join(GRANULARITIES)}")
    if hook in BUCKET_HOOKS and granularity == "whole":
        raise ValueError(f"granularity 'whole' under DDP is the full-gradient path: use hook full or full_gather, "
                         f"not {hook!r}")
    if hook in GLOBAL_HOOKS and granularity in ("module", "tensor"):
        raise ValueError(f"hook {hook!r} weights the whole vector; granularity {granularity!r} needs a bucket hook "
                         f"({', '.join(BUCKET_HOOKS)})")


@dataclass
class _Kept:
    params: list[torch.nn.Parameter]
    rows: torch.Tensor  # (K_eff, c) slice rows (full) or (K_eff, P) full rows (full_gather)
    numel: int


@dataclass
class HookState:
    """Everything a hook needs; the trainer calls `begin_step` before the backward and `finalize` after it."""

    comm: Comm
    hook: str
    weighting: Callable[..., torch.Tensor] | None  # harness.moo weighting; None = mean
    seed: int = 0
    normalize: str = "none"  # harness.moo.blocks conventions, so DDP and single-process runs agree
    output_scale: str = "raw"
    names: dict[int, str] = field(default_factory=dict)  # id(param) -> name, to record DDP's buckets
    granularity: str = "ddp_bucket"
    index: dict[str, int] | None = None  # name -> block index (module / tensor: harness.moo.blocks.nested_index)
    step: int = 0
    warmup: bool = True
    assignment: StepAssignment | None = None
    buckets: dict[int, list[str]] = field(default_factory=dict)  # DDP's (rebuilt) buckets, as seen by the hook
    rule: BlockRule = field(init=False)
    losses: torch.Tensor | None = None  # (K_eff,) per-language losses of the step, for weightings that need them
    _mix: torch.Tensor | None = None
    _kept: list[_Kept] = field(default_factory=list)
    _gram: torch.Tensor | None = None

    def __post_init__(self) -> None:
        check_granularity(self.hook, self.granularity)
        if self.granularity in ("module", "tensor") and self.index is None:
            raise ValueError(f"granularity {self.granularity!r} needs the block index of every parameter (`index`)")
        self.rule = BlockRule(self.weighting or weighting("mean"), self.normalize, self.output_scale, self.seed)

    def begin_step(self, step: int, assignment: StepAssignment, warmup: bool) -> None:
        self.step, self.assignment, self.warmup = step, assignment, warmup
        self._mix = assignment.mixing_matrix()
        self._kept, self._gram, self.losses = [], None, None

    @property
    def needs_losses(self) -> bool:
        return self.rule.stateful and bool(getattr(self.rule.fn, "needs_losses", False))

    def set_losses(self, rank_losses: torch.Tensor) -> None:
        """(N,) all-gathered rank losses -> the step's (K_eff,) language losses (mean over a language's ranks)."""
        self.losses = self.language_rows(rank_losses.reshape(-1, 1)).reshape(-1).to(torch.float64)

    # -- shared pieces -------------------------------------------------------------------------------------------
    def language_rows(self, per_rank: torch.Tensor) -> torch.Tensor:
        """(N, n) rank rows -> (K_eff, n) language rows (mean over the ranks that share a language)."""
        mix = self._mix.to(device=per_rank.device, dtype=torch.promote_types(per_rank.dtype, torch.float32))
        return mix @ per_rank.to(mix.dtype)

    def blocks(self, bucket: dist.GradBucket) -> list[Block]:
        """The bucket's blocks, ranges relative to its flat buffer (host-side metadata only)."""
        params = bucket.parameters()
        return bucket_blocks(bucket.index(), [self.names.get(id(p), "?") for p in params],
                             [p.numel() for p in params], None if self.granularity == "ddp_bucket" else self.index)

    def record_bucket(self, bucket: dist.GradBucket) -> None:
        if not self.warmup and bucket.index() not in self.buckets:
            self.buckets[bucket.index()] = [self.names.get(id(p), "?") for p in bucket.parameters()]

    # -- after the whole backward (full-gradient hooks) ----------------------------------------------------------
    def finalize(self) -> None:
        """Global weighting for `full` / `full_gather`: writes the combined direction into `.grad`."""
        if self.warmup or self.hook not in GLOBAL_HOOKS or not self._kept:
            return
        t0 = time.perf_counter()
        gram_ = self._gram
        if self.hook == "full":
            gram_ = gram_.clone()
            self.comm.all_reduce(gram_, name="all_reduce.gram")
        coeffs = self.rule(gram_, self.step, GLOBAL_KEY, self.losses)
        for kept in self._kept:
            d = combine(kept.rows, coeffs)
            if self.hook == "full":
                d = self.comm.all_gather(d, name="all_gather.slices")
            write_flat_grads(kept.params, d[: kept.numel])
        self._kept = []
        self.comm.counter.hook_time_s += time.perf_counter() - t0


def _done(t: torch.Tensor) -> torch.futures.Future:
    fut: torch.futures.Future = torch.futures.Future()
    fut.set_result(t)
    return fut


def _mean(state: HookState, buf: torch.Tensor) -> torch.Tensor:
    """The language-balanced mean: rank r's bucket times 1/(K_eff·|group(r)|), summed. With even groups that is a
    division by N first, as torch's allreduce_hook (and the reducer) do, and bit-identical to it."""
    a = state.assignment
    if a is None or a.even:
        buf.div_(state.comm.world)
    else:
        buf.mul_(a.language_weight(state.comm.rank))
    return state.comm.all_reduce(buf)


def _gathered_rows(state: HookState, buf: torch.Tensor) -> torch.Tensor:
    """all-gather: (K_eff, B) language rows of the whole bucket."""
    gathered = state.comm.all_gather(buf, name="all_gather.bucket").view(state.comm.world, -1)
    return state.language_rows(gathered)


def _sharded_rows(state: HookState, buf: torch.Tensor) -> torch.Tensor:
    """all-to-all: (K_eff, c) language rows of this rank's slice of the bucket (zero-padded to N·c)."""
    n = state.comm.world
    c = math.ceil(buf.numel() / n)
    padded = buf.new_zeros(n * c)
    padded[: buf.numel()] = buf
    recv = state.comm.all_to_all(padded, name="all_to_all.slices")
    return state.language_rows(recv.view(n, c))


def _sharded(state: HookState, buf: torch.Tensor, blocks: list[Block]) -> torch.Tensor:
    """Partial Grams of this rank's slice of every block, one all-reduce of the stacked (M, K, K) Grams (their sum
    over slices is each block's exact Gram), the same solve on every rank, the own slice combined and all-gathered."""
    rows = _sharded_rows(state, buf)
    c, r = rows.shape[1], state.comm.rank
    local = restrict(pad_blocks(blocks, buf.numel(), c * state.comm.world), r * c, (r + 1) * c)
    grams = state.comm.all_reduce(torch.stack(block_grams(rows, local, HOOK_GRAM_CHUNK)), name="all_reduce.gram")
    own = block_directions(rows, local, state.rule.coefficients(grams, state.step, local, state.losses))
    return state.comm.all_gather(own, name="all_gather.slices")[: buf.numel()]


def _keep_for_finalize(state: HookState, bucket: dist.GradBucket, buf: torch.Tensor) -> None:
    """Full-gradient hooks: accumulate the bucket's partial global Gram and keep its rows until `finalize`."""
    rows = _sharded_rows(state, buf) if state.hook == "full" else _gathered_rows(state, buf)
    partial = gram(rows, chunk=HOOK_GRAM_CHUNK)
    state._gram = partial if state._gram is None else state._gram + partial
    state._kept.append(_Kept(list(bucket.parameters()), rows, buf.numel()))


def comm_hook(state: HookState, bucket: dist.GradBucket) -> torch.futures.Future:
    """The one function registered with DDP; dispatches on `state.hook`."""
    t0 = time.perf_counter()
    buf = bucket.buffer()
    try:
        if state.warmup or state.hook == "mean":
            return _done(_mean(state, buf))
        state.record_bucket(bucket)
        if state.hook == "allgather":
            buf.copy_(solve_blocks(_gathered_rows(state, buf), state.blocks(bucket), state.rule, state.step,
                                   HOOK_GRAM_CHUNK, state.losses))
        elif state.hook == "sharded":
            buf.copy_(_sharded(state, buf, state.blocks(bucket)))
        elif state.hook in GLOBAL_HOOKS:
            _keep_for_finalize(state, bucket, buf)  # local gradient for now; `finalize` overwrites `.grad`
        else:
            raise ValueError(f"unknown hook {state.hook!r}; known: {', '.join(HOOKS)}")
        return _done(buf)
    finally:
        state.comm.counter.hook_time_s += time.perf_counter() - t0


# DDP inspects the hook's annotations; with postponed evaluation they would be strings, so set the real objects.
comm_hook.__annotations__ = {"state": object, "bucket": dist.GradBucket, "return": torch.futures.Future[torch.Tensor]}


def register(ddp_model: Any, state: HookState) -> None:
    ddp_model.register_comm_hook(state, comm_hook)
