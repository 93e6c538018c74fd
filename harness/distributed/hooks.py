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

Every hook runs plain averaging during the warm-up steps (DDP rebuilds its buckets after iteration 0, as PyTorch's
PowerSGD hook does). PCGrad's projection order comes from `harness.seeding.generator(seed, "pcgrad", step, bucket)`
(bucket = 0 for the full-gradient hooks, as the single-process whole-vector combiner), identical on every rank. Collectives are synchronous inside the hook
(no host synchronisation is added by the solve; the weightings are pure tensor code); the hook returns a completed
future. Replicas stay bit-identical because every rank ends with the same all-gathered / all-reduced values.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from harness.distributed.accounting import Comm
from harness.distributed.assignment import StepAssignment
from harness.seeding import generator

HOOKS = ("mean", "allgather", "sharded", "full", "full_gather")
BUCKET_HOOKS = ("allgather", "sharded")
GLOBAL_HOOKS = ("full", "full_gather")
GLOBAL_KEY = 0  # generator key of the whole-vector solve: the single-process whole combiner's block index


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
    normalize: str = "none"  # harness.moo.combiners conventions, so DDP and single-process runs agree
    output_scale: str = "raw"
    names: dict[int, str] = field(default_factory=dict)  # id(param) -> name, to record DDP's buckets
    step: int = 0
    warmup: bool = True
    assignment: StepAssignment | None = None
    buckets: dict[int, list[str]] = field(default_factory=dict)  # DDP's (rebuilt) buckets, as seen by the hook
    coeffs: dict[str, torch.Tensor] = field(default_factory=dict)  # bucket key -> coefficients of this step
    _mix: torch.Tensor | None = None
    _kept: list[_Kept] = field(default_factory=list)
    _gram: torch.Tensor | None = None

    def begin_step(self, step: int, assignment: StepAssignment, warmup: bool) -> None:
        self.step, self.assignment, self.warmup = step, assignment, warmup
        self._mix = assignment.mixing_matrix()
        self._kept, self._gram = [], None
        self.coeffs = {}

    # -- shared pieces -------------------------------------------------------------------------------------------
    def language_rows(self, per_rank: torch.Tensor) -> torch.Tensor:
        """(N, n) rank rows -> (K_eff, n) language rows (mean over the ranks that share a language)."""
        mix = self._mix.to(device=per_rank.device, dtype=torch.promote_types(per_rank.dtype, torch.float32))
        return mix @ per_rank.to(mix.dtype)

    def solve(self, gram: torch.Tensor, key: int | str) -> torch.Tensor:
        if self.weighting is None:
            k = gram.shape[0]
            return torch.full((k,), 1.0 / k, dtype=torch.float64, device=gram.device)
        coeffs = block_coefficients(gram, self.weighting, self.normalize, self.output_scale,
                                    generator(self.seed, "pcgrad", self.step, key))
        self.coeffs[str(key)] = coeffs
        return coeffs

    def record_bucket(self, bucket: dist.GradBucket) -> None:
        if not self.warmup and bucket.index() not in self.buckets:
            self.buckets[bucket.index()] = [self.names.get(id(p), "?") for p in bucket.parameters()]

    # -- after the whole backward (full-gradient hooks) ----------------------------------------------------------
    def finalize(self) -> None:
        """Global weighting for `full` / `full_gather`: writes the combined direction into `.grad`."""
        if self.warmup or self.hook not in GLOBAL_HOOKS or not self._kept:
            return
        t0 = time.perf_counter()
        gram = self._gram
        if self.hook == "full":
            gram = gram.clone()
            self.comm.all_reduce(gram, name="all_reduce.gram")
        coeffs = self.solve(gram, GLOBAL_KEY)
        for kept in self._kept:
            from harness.moo import combine

            d = combine(kept.rows, coeffs)
            if self.hook == "full":
                d = self.comm.all_gather(d, name="all_gather.slices")
            _write_grads(kept.params, d[: kept.numel])
        self._kept = []
        self.comm.counter.hook_time_s += time.perf_counter() - t0


def block_coefficients(gram, fn, normalize="none", output_scale="raw", gen=None) -> torch.Tensor:
    """The single-process combiners' coefficient rule (normalize / output_scale) when harness.moo.combiners exists."""
    try:
        from harness.moo.combiners import block_coefficients as shared
    except ImportError:
        if normalize != "none" or output_scale != "raw":
            raise
        return fn(gram, generator=gen).to(torch.float64)
    return shared(gram, fn, normalize, output_scale, gen)


def _write_grads(params: list[torch.nn.Parameter], flat: torch.Tensor) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        piece = flat[offset: offset + n].view_as(p).to(p.dtype)
        if p.grad is None:
            p.grad = piece.clone()
        else:
            p.grad.copy_(piece)
        offset += n


def _done(t: torch.Tensor) -> torch.futures.Future:
    fut: torch.futures.Future = torch.futures.Future()
    fut.set_result(t)
    return fut


def _mean(state: HookState, buf: torch.Tensor) -> torch.Tensor:
    buf.div_(state.comm.world)  # divide first, as torch's allreduce_hook (and the reducer) do
    return state.comm.all_reduce(buf)


def _sharded_rows(state: HookState, buf: torch.Tensor) -> torch.Tensor:
    """all-to-all: (K_eff, c) language rows of this rank's slice of the bucket."""
    n = state.comm.world
    c = math.ceil(buf.numel() / n)
    padded = buf.new_zeros(n * c)
    padded[: buf.numel()] = buf
    recv = state.comm.all_to_all(padded, name="all_to_all.slices")
    return state.language_rows(recv.view(n, c))


def _gram(rows: torch.Tensor) -> torch.Tensor:
    from harness.moo import gram

    return gram(rows)


def comm_hook(state: HookState, bucket: dist.GradBucket) -> torch.futures.Future:
    """The one function registered with DDP; dispatches on `state.hook`."""
    t0 = time.perf_counter()
    buf = bucket.buffer()
    try:
        if state.warmup or state.hook == "mean":
            return _done(_mean(state, buf))
        state.record_bucket(bucket)
        from harness.moo import combine

        if state.hook == "allgather":
            gathered = state.comm.all_gather(buf, name="all_gather.bucket").view(state.comm.world, -1)
            rows = state.language_rows(gathered)
            coeffs = state.solve(_gram(rows), bucket.index())
            buf.copy_(combine(rows, coeffs))
            return _done(buf)
        if state.hook == "sharded":
            rows = _sharded_rows(state, buf)
            gram = state.comm.all_reduce(_gram(rows), name="all_reduce.gram")
            coeffs = state.solve(gram, bucket.index())
            full = state.comm.all_gather(combine(rows, coeffs), name="all_gather.slices")
            buf.copy_(full[: buf.numel()])
            return _done(buf)
        if state.hook in GLOBAL_HOOKS:
            if state.hook == "full":
                rows = _sharded_rows(state, buf)
            else:
                gathered = state.comm.all_gather(buf, name="all_gather.bucket").view(state.comm.world, -1)
                rows = state.language_rows(gathered)
            partial = _gram(rows)
            state._gram = partial if state._gram is None else state._gram + partial
            state._kept.append(_Kept(list(bucket.parameters()), rows, buf.numel()))
            return _done(buf)  # local gradient for now; `finalize` overwrites `.grad` after the backward
        raise ValueError(f"unknown hook {state.hook!r}; known: {', '.join(HOOKS)}")
    finally:
        state.comm.counter.hook_time_s += time.perf_counter() - t0


# DDP inspects the hook's annotations; with postponed evaluation they would be strings, so set the real objects.
comm_hook.__annotations__ = {"state": object, "bucket": dist.GradBucket, "return": torch.futures.Future[torch.Tensor]}


def register(ddp_model: Any, state: HookState) -> None:
    ddp_model.register_comm_hook(state, comm_hook)
