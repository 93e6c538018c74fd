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
single-process whole-vector combiner), identical on every rank.

Asynchronous, as PyTorch's PowerSGD hook: a hook launches its collectives with `async_op=True` and returns a future at
once, so the backward of the earlier layers goes on while the bucket travels; DDP waits on the futures at the end of
the backward. A hook's work on a bucket is straight-line code, a generator (`Steps`) that yields each launched
collective (`accounting.Pending`) and gets the filled tensor back; `_advance` runs it on to its next collective inside
that collective's done-callback (gloo: on gloo's worker thread; NCCL: the future is complete at launch with stream
semantics, so it runs on inline and asynchronously on the GPU), and the future DDP holds is the end of that chain. One
bucket's collectives at a time: bucket b starts when bucket b−1's future is done, so every rank launches the same
collectives in the same order (gloo pairs collectives by launch order, and two buckets' callbacks on two worker
threads could launch theirs in a different order on each rank). Unlike PowerSGD's, the callbacks never block on a
collective (a callback waiting on gloo's worker thread can starve its pool). The mixing matrix (rank rows -> language
rows) sits on the device, per dtype, for as long as the language assignment stays. The block layout is host-side
metadata and the weightings are pure tensor code, so for K ≤ 8 the solve adds no host synchronisation (except
`normalize: l2`, whose zero-gradient test picks the languages to solve over: one sync per block; above K = 8 the exact
active-set solver runs on the host: one sync per solve, docs/solvers.md). Slices travel in the bucket's dtype (bf16
stays bf16); language rows, Grams (float64) and the combination are computed in at least float32 and the combined
slice is cast back to the bucket's dtype before it is all-gathered, so bytes are one all-reduce's in any dtype.
A stateful weighting (GradVac) keeps its per-block states in `HookState.rule`, updated
identically on every rank (same Gram, same generator) and saved in the engine's state dict; one that needs the
per-language losses (FAMO) gets them in `HookState.losses`: the engine all-gathers the ranks' losses after the forward
and before the backward (`set_losses`, K_eff float64 values per step), so every rank solves with the same losses.
Replicas stay bit-identical because every rank ends with the same all-gathered /
all-reduced values.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from harness.buckets import write_flat_grads
from harness.distributed.accounting import Comm, CommCounter, Pending
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
"""Columns per partial Gram inside the hooks: `weightings.gram`'s default, a few large float64 matmuls per bucket on a
GPU (the single-process combiner's 64 K-column chunks would launch ~100 kernels per 25 MiB bucket); on CPU `gram`
takes float64 partial Grams here too (``exact``: a Gram summed over shards equals the simulation's)."""


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
    dtype: torch.dtype  # the bucket's: the combined slices travel in it


Steps = Generator[Pending, torch.Tensor, torch.Tensor]
"""A hook's work on one bucket: yields each launched collective, receives its filled tensor, returns the bucket."""


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
    _mix_on_device: dict[tuple[Any, ...], torch.Tensor] = field(default_factory=dict)
    _identity: bool = False  # one rank per language, in rank order
    _kept: list[_Kept] = field(default_factory=list)
    _gram: torch.Tensor | None = None
    _tail: torch.futures.Future | None = None  # the future of the step's last bucket so far (buckets run in order)

    def __post_init__(self) -> None:
        check_granularity(self.hook, self.granularity)
        if self.granularity in ("module", "tensor") and self.index is None:
            raise ValueError(f"granularity {self.granularity!r} needs the block index of every parameter (`index`)")
        self.rule = BlockRule(self.weighting or weighting("mean"), self.normalize, self.output_scale, self.seed)

    def begin_step(self, step: int, assignment: StepAssignment, warmup: bool) -> None:
        if self.assignment is None or assignment.rank_language != self.assignment.rank_language:
            self._mix, self._mix_on_device = assignment.mixing_matrix(), {}
            self._identity = self._mix.shape[0] == self._mix.shape[1] and bool(torch.equal(
                self._mix, torch.eye(self._mix.shape[0], dtype=self._mix.dtype)))  # host-side, once per assignment
        self.step, self.assignment, self.warmup = step, assignment, warmup
        self._kept, self._gram, self.losses, self._tail = [], None, None, None

    @property
    def needs_losses(self) -> bool:
        return self.rule.stateful and bool(getattr(self.rule.fn, "needs_losses", False))

    def set_losses(self, rank_losses: torch.Tensor) -> None:
        """(N,) all-gathered rank losses -> the step's (K_eff,) language losses (mean over a language's ranks)."""
        self.losses = self.language_rows(rank_losses.reshape(-1, 1)).reshape(-1).to(torch.float64)

    # -- shared pieces -------------------------------------------------------------------------------------------
    def mixing(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The (K_eff, N) mixing matrix on `device` in `dtype`, copied there once per language assignment."""
        key = (device, dtype)
        if key not in self._mix_on_device:
            self._mix_on_device[key] = self._mix.to(device=device, dtype=dtype)
        return self._mix_on_device[key]

    def language_rows(self, per_rank: torch.Tensor) -> torch.Tensor:
        """(N, n) rank rows -> (K_eff, n) language rows (mean over the ranks that share a language), in at least fp32.
        One rank per language in rank order (the mixing matrix is the identity) needs no product: the rows are the
        rank rows (the product would give the same finite values, at the cost of a pass over the bucket)."""
        dtype = torch.promote_types(per_rank.dtype, torch.float32)
        if self._identity:
            return per_rank.to(dtype)
        mix = self.mixing(per_rank.device, dtype)
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
                d = self.comm.all_gather(d.to(kept.dtype), name="all_gather.slices")
            write_flat_grads(kept.params, d[: kept.numel])
        self._kept = []
        self.comm.counter.add_hook_time(time.perf_counter() - t0)


# -- the asynchronous chain --------------------------------------------------------------------------------------


def _advance(steps: Steps, value: torch.Tensor | None, result: torch.futures.Future, counter: CommCounter) -> None:
    """Run `steps` to its next collective and resume it in that collective's done-callback; at its end (or on an
    error) complete `result`. Its host time counts as hook time; waiting for the wire does not."""
    t0 = time.perf_counter()
    try:
        pending = steps.send(value)
    except StopIteration as stop:
        counter.add_hook_time(time.perf_counter() - t0)
        result.set_result(stop.value)
        return
    except Exception as err:  # DDP raises it from the backward
        counter.add_hook_time(time.perf_counter() - t0)
        result.set_exception(err)
        return
    counter.add_hook_time(time.perf_counter() - t0)
    pending.future.add_done_callback(lambda _: _resume(steps, pending, result, counter))


def _resume(steps: Steps, pending: Pending, result: torch.futures.Future, counter: CommCounter) -> None:
    try:
        value = pending.result()
    except Exception as err:  # the collective failed (a peer died, a timeout)
        steps.close()
        result.set_exception(err)
        return
    _advance(steps, value, result, counter)


def _chained(state: HookState, steps: Steps, device: torch.device) -> torch.futures.Future:
    """The bucket's future, returned to DDP at once; its steps start when the previous bucket's future is done."""
    result = torch.futures.Future(devices=[device]) if device.type == "cuda" else torch.futures.Future()
    previous, state._tail = state._tail, result
    counter = state.comm.counter

    def start(prev: torch.futures.Future | None) -> None:
        try:
            if prev is not None:
                prev.wait()
        except Exception as err:
            steps.close()
            result.set_exception(err)
            return
        _advance(steps, None, result, counter)

    if previous is None:
        start(None)
    else:
        previous.add_done_callback(start)  # inline if it is already done
    return result


# -- the hooks' steps --------------------------------------------------------------------------------------------


def _mean(state: HookState, buf: torch.Tensor) -> torch.futures.Future:
    """The language-balanced mean: rank r's bucket times 1/(K_eff·|group(r)|), summed. With even groups that is a
    division by N first, as torch's allreduce_hook (and the reducer) do, and bit-identical to it; asynchronous as
    that hook (`fut.then`)."""
    a = state.assignment
    if a is None or a.even:
        buf.div_(state.comm.world)
    else:
        buf.mul_(a.language_weight(state.comm.rank))
    pending = state.comm.all_reduce_async(buf)
    return pending.future.then(lambda _: pending.result())


def _gathered_rows(state: HookState, buf: torch.Tensor) -> Generator[Pending, torch.Tensor, torch.Tensor]:
    """all-gather: (K_eff, B) language rows of the whole bucket."""
    gathered = yield state.comm.all_gather_async(buf, name="all_gather.bucket")
    return state.language_rows(gathered.view(state.comm.world, -1))


def _sharded_rows(state: HookState, buf: torch.Tensor) -> Generator[Pending, torch.Tensor, torch.Tensor]:
    """all-to-all: (K_eff, c) language rows of this rank's slice of the bucket (zero-padded to N·c)."""
    n = state.comm.world
    c = math.ceil(buf.numel() / n)
    padded = buf
    if n * c != buf.numel():  # N slices of equal length: pad (a copy) only when N does not divide the bucket
        padded = buf.new_zeros(n * c)
        padded[: buf.numel()] = buf
    recv = yield state.comm.all_to_all_async(padded, name="all_to_all.slices")
    return state.language_rows(recv.view(n, c))


def _allgather(state: HookState, buf: torch.Tensor, blocks: list[Block]) -> Steps:
    rows = yield from _gathered_rows(state, buf)
    return buf.copy_(solve_blocks(rows, blocks, state.rule, state.step, HOOK_GRAM_CHUNK, state.losses,
                                     exact=True))


def _sharded(state: HookState, buf: torch.Tensor, blocks: list[Block]) -> Steps:
    """Partial Grams of this rank's slice of every block, one all-reduce of the stacked (M, K, K) Grams (their sum
    over slices is each block's exact Gram), the same solve on every rank, the own slice combined (cast back to the
    bucket's dtype) and all-gathered."""
    rows = yield from _sharded_rows(state, buf)
    c, r = rows.shape[1], state.comm.rank
    local = restrict(pad_blocks(blocks, buf.numel(), c * state.comm.world), r * c, (r + 1) * c)
    grams = yield state.comm.all_reduce_async(torch.stack(block_grams(rows, local, HOOK_GRAM_CHUNK, exact=True)),
                                              name="all_reduce.gram")
    own = block_directions(rows, local, state.rule.coefficients(grams, state.step, local, state.losses))
    if c * state.comm.world == buf.numel():  # no padding: the slices land in the bucket itself (no copy)
        return (yield state.comm.all_gather_async(own.to(buf.dtype), name="all_gather.slices", out=buf))
    gathered = yield state.comm.all_gather_async(own.to(buf.dtype), name="all_gather.slices")
    return buf.copy_(gathered[: buf.numel()])


def _keep_for_finalize(state: HookState, params: list[torch.nn.Parameter], buf: torch.Tensor) -> Steps:
    """Full-gradient hooks: accumulate the bucket's partial global Gram and keep its rows until `finalize`; the
    bucket keeps its local gradient for now (`finalize` overwrites `.grad`)."""
    rows = yield from (_sharded_rows(state, buf) if state.hook == "full" else _gathered_rows(state, buf))
    partial = gram(rows, chunk=HOOK_GRAM_CHUNK, exact=True)
    state._gram = partial if state._gram is None else state._gram + partial
    state._kept.append(_Kept(params, rows, buf.numel(), buf.dtype))
    return buf


def _bucket_steps(state: HookState, bucket: dist.GradBucket, buf: torch.Tensor) -> Steps:
    """The hook's steps on `bucket`; the bucket's metadata is read here, in DDP's thread."""
    if state.hook == "allgather":
        return _allgather(state, buf, state.blocks(bucket))
    if state.hook == "sharded":
        return _sharded(state, buf, state.blocks(bucket))
    if state.hook in GLOBAL_HOOKS:
        return _keep_for_finalize(state, list(bucket.parameters()), buf)
    raise ValueError(f"unknown hook {state.hook!r}; known: {', '.join(HOOKS)}")


def comm_hook(state: HookState, bucket: dist.GradBucket) -> torch.futures.Future:
    """The one function registered with DDP; dispatches on `state.hook` and returns before the bucket has travelled."""
    t0 = time.perf_counter()
    buf = bucket.buffer()
    try:
        if state.warmup or state.hook == "mean":
            return _mean(state, buf)
        state.record_bucket(bucket)
        steps = _bucket_steps(state, bucket, buf)
    finally:
        state.comm.counter.add_hook_time(time.perf_counter() - t0)
    return _chained(state, steps, buf.device)


# DDP inspects the hook's annotations; with postponed evaluation they would be strings, so set the real objects.
comm_hook.__annotations__ = {"state": object, "bucket": dist.GradBucket, "return": torch.futures.Future[torch.Tensor]}


def register(ddp_model: Any, state: HookState) -> None:
    ddp_model.register_comm_hook(state, comm_hook)
