"""FSDP2's gradient reduce-scatter, replaced per unit: joint SFT's mean, per-unit MOO and the global-MOO baseline.

FSDP2 (`torch.distributed.fsdp.fully_shard`) reduces each unit's gradient once per backward, through
`FSDPModule.set_custom_reduce_scatter(comm)`: ``comm(output_tensor, input_tensor, group, op)`` gets the unit's flat
padded gradient laid out as N chunks (chunk r belongs to rank r: FSDP's ``chunk_cat`` of every parameter's dim-0
shards) and must write this rank's shard into ``output_tensor``. Every rank holds ONE language's gradient (or one
member of a language group, `harness.distributed.assignment`), so:

- :class:`MeanReduceScatter` (joint SFT) is FSDP2's own reduce-scatter of the language-balanced mean: the input times
  the rank's language weight (1/N with even groups), summed. Bytes (N−1)/N · input;
- :class:`UnitMooReduceScatter` (Bucket-Level MOO, the unit is the bucket) does (1) an all-to-all of the input, so
  rank r holds its shard rows of every rank, (2) language rows = mixing matrix @ rank rows (mean over a language's
  ranks) and their partial K×K Gram in float64, all-reduced: the sum over shards is the exact unit Gram, (3) the same
  solve on every rank (`HookState.rule`: PCGrad's order from ``generator(seed, "pcgrad", step, unit)``), (4) Σ_k c_k
  row_k written into ``output_tensor``, which FSDP keeps as the shard: nothing is all-gathered. Bytes: the all-to-all
  equals the reduce-scatter's, plus 2(N−1)/N · 8K² per unit;
- :class:`GlobalKeepReduceScatter` (global MOO) does (1)-(2) without the all-reduce, keeps the shard rows and adds the
  partial Gram to a running sum; :func:`finish_global` all-reduces the summed (global) Gram once after the backward,
  solves once (generator key 0, as the whole-vector combiner) and writes every unit's combined rows into the output
  tensors FSDP made the sharded gradients of (checked: :func:`check_aliases`).

Every comm tells FSDP not to divide (the engine sets ``set_gradient_divide_factor(1.0)``): the weights are ours.
:class:`CountingAllGather` is FSDP2's parameter all-gather, counted under ``all_gather.params``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.distributed.fsdp._fully_shard._fsdp_api import AllGather, ReduceScatter

from harness.distributed.accounting import CommCounter, allgather_bytes, alltoall_bytes
from harness.distributed.hooks import GLOBAL_KEY, HOOK_GRAM_CHUNK, HookState
from harness.moo.weightings import combine, gram

GRAD_REDUCE = "reduce_scatter.grad"
PARAM_GATHER = "all_gather.params"


def reduce_scatter_bytes(input_bytes: float, world: int) -> float:
    """Bytes a rank sends in a reduce-scatter of ``input_bytes`` (ring): (N−1)/N · input, the all-to-all's formula."""
    return alltoall_bytes(input_bytes, world)


_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class _HeapAlloc:
    """FSDP2 asks its comm for the buffers it fills: plain allocations (the default's behaviour)."""

    def allocate(self, size, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.empty(*size, dtype=dtype, device=device)


@dataclass
class UnitRecord:
    """What the comms saw in the current step: coefficients per unit (rank-consistency checks, diagnostics), the
    global baseline's kept rows and running Gram, and the reduce-scatter bytes FSDP2's own comm would have sent."""

    coefficients: dict[int, torch.Tensor] = field(default_factory=dict)
    kept: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (output_tensor, (K_eff, c) rows)
    gram: torch.Tensor | None = None
    reduce_scatter_bytes: float = 0.0

    def reset(self) -> None:
        self.coefficients, self.kept, self.gram, self.reduce_scatter_bytes = {}, [], None, 0.0


class _UnitComm(_HeapAlloc, ReduceScatter):
    def __init__(self, state: HookState, unit: int, record: UnitRecord):
        self.state, self.unit, self.record = state, unit, record

    @property
    def counter(self) -> CommCounter:
        return self.state.comm.counter

    def __call__(self, output_tensor: torch.Tensor, input_tensor: torch.Tensor, group: dist.ProcessGroup,
                 op: object = None, async_op: bool = False) -> None:
        t0 = time.perf_counter()
        self.record.reduce_scatter_bytes += reduce_scatter_bytes(_nbytes(input_tensor), self.state.comm.world)
        self.reduce(output_tensor, input_tensor, group)
        self.counter.hook_time_s += time.perf_counter() - t0
        return None  # synchronous: FSDP2 treats a None work as done

    def reduce(self, output: torch.Tensor, inp: torch.Tensor, group: dist.ProcessGroup) -> None:
        """Fill ``output`` (this rank's shard) from ``inp`` (every rank's unit gradient): each mode's subclass."""
        raise NotImplementedError(f"{type(self).__name__} must implement reduce(): the base class has no mode")

    def shard_rows(self, inp: torch.Tensor) -> torch.Tensor:
        """(K_eff, c) language rows of this rank's shard: all-to-all, then the mixing matrix over the rank rows."""
        n = self.state.comm.world
        recv = self.state.comm.all_to_all(inp, name="all_to_all.shards")
        return self.state.language_rows(recv.view(n, -1))


class MeanReduceScatter(_UnitComm):
    """Joint SFT: the language-balanced mean through one reduce-scatter (FSDP2's own collective)."""

    def reduce(self, output: torch.Tensor, inp: torch.Tensor, group: dist.ProcessGroup) -> None:
        a, comm = self.state.assignment, self.state.comm
        inp.mul_(1.0 / comm.world if a is None or a.even else a.language_weight(comm.rank))
        _reduce_scatter(output, inp, op=dist.ReduceOp.SUM, group=group)
        self.counter.add(GRAD_REDUCE, reduce_scatter_bytes(_nbytes(inp), comm.world))


class UnitMooReduceScatter(_UnitComm):
    """Bucket-Level MOO with the unit as the bucket: exact unit Gram from shard rows, own shard combined."""

    def reduce(self, output: torch.Tensor, inp: torch.Tensor, group: dist.ProcessGroup) -> None:
        rows = self.shard_rows(inp)
        unit_gram = self.state.comm.all_reduce(gram(rows, chunk=HOOK_GRAM_CHUNK, exact=True), name="all_reduce.gram")
        coeffs = self.state.rule(unit_gram, self.state.step, self.unit, self.state.losses)
        self.record.coefficients[self.unit] = coeffs
        output.copy_(combine(rows, coeffs))


class GlobalKeepReduceScatter(_UnitComm):
    """Global MOO: keep the shard rows and the partial Gram; :func:`finish_global` solves once after the backward."""

    def reduce(self, output: torch.Tensor, inp: torch.Tensor, group: dist.ProcessGroup) -> None:
        rows = self.shard_rows(inp)
        partial = gram(rows, chunk=HOOK_GRAM_CHUNK, exact=True)
        self.record.gram = partial if self.record.gram is None else self.record.gram + partial
        self.record.kept.append((output, rows))
        output.zero_()  # a placeholder: finish_global writes the direction before anyone reads it


def finish_global(state: HookState, record: UnitRecord) -> None:
    """After the backward: one all-reduce of the summed partial Grams (the global Gram), one solve, every kept unit's
    shard combined into the tensor FSDP made its sharded gradient (a view of ``output_tensor``)."""
    if not record.kept:
        return
    t0 = time.perf_counter()
    total = state.comm.all_reduce(record.gram.clone(), name="all_reduce.gram")
    coeffs = state.rule(total, state.step, GLOBAL_KEY, state.losses)
    record.coefficients[GLOBAL_KEY] = coeffs
    for output, rows in record.kept:
        output.copy_(combine(rows, coeffs))
    record.kept = []
    state.comm.counter.hook_time_s += time.perf_counter() - t0


def check_aliases(params: list[torch.nn.Parameter], record: UnitRecord) -> None:
    """The global baseline writes its direction into the reduce-scatter outputs after the backward, so every sharded
    gradient must be a view of one (FSDP2 makes it so unless it casts or offloads the gradient, or accumulates into
    an existing one). Checked on the first step; a clear error otherwise."""
    storages = {out.untyped_storage().data_ptr() for out, _ in record.kept}
    for p in params:
        local = p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
        if local is not None and local.untyped_storage().data_ptr() not in storages:
            raise RuntimeError("global MOO under fsdp2 needs every sharded gradient to be a view of its unit's "
                               "reduce-scatter output; this one is a copy (a reduce dtype different from the master "
                               "weights', CPU offload, or gradients kept across steps). Use train.dtype float32 or "
                               "bfloat16 with master_weights: true, and no offload")


class CountingAllGather(_HeapAlloc, AllGather):
    """FSDP2's parameter all-gather (forward, and backward re-gather), counted under ``all_gather.params``."""

    def __init__(self, counter: CommCounter):
        self.counter = counter
        self._gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor

    def __call__(self, output_tensor: torch.Tensor, input_tensor: torch.Tensor, group: dist.ProcessGroup,
                 async_op: bool = False):
        self.counter.add(PARAM_GATHER, allgather_bytes(_nbytes(input_tensor), dist.get_world_size(group)))
        return self._gather(output_tensor, input_tensor, group=group, async_op=async_op)
