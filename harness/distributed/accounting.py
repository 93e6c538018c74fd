"""Communication and memory accounting: bytes each collective SENDS per rank per step, hook time, peak memory.

Convention (the one the planner uses, `harness.distributed.planner`): bytes a rank puts on the wire under the
bandwidth-optimal algorithm of each collective, for a payload of B bytes per rank:

| collective                        | bytes sent per rank |
|-----------------------------------|---------------------|
| all_reduce (ring)                 | 2(N−1)/N · B        |
| all_gather (input B per rank)     | (N−1) · B           |
| all_to_all (input B, N chunks)    | (N−1)/N · B         |
| reduce_scatter (input B)          | (N−1)/N · B         |

The payloads are the real tensors handed to torch.distributed (including any padding), in their own dtype, so a
measured number is the sum over the collectives actually issued. The hooks move gradient slices in the bucket's dtype
(a bf16 bucket's slices travel in bf16; only the K×K Grams are float64), so the sharded hook sends one all-reduce of
the bucket plus O(K²) in any dtype: 1.0× the all-reduce in bf16 as in fp32 (`results/bench/comm_summary.md`).
Every collective is launched with `async_op=True` (`Comm.*_async` returns a `Pending`); the plain forms wait on it. The fallbacks (a backend lacking a collective) are emulated with other
collectives and counted as what they really send.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


def allreduce_bytes(nbytes: float, world: int) -> float:
    return 2.0 * (world - 1) / world * nbytes if world > 1 else 0.0


def allgather_bytes(nbytes_per_rank: float, world: int) -> float:
    return float(world - 1) * nbytes_per_rank


def alltoall_bytes(nbytes_total: float, world: int) -> float:
    return (world - 1) / world * nbytes_total if world > 1 else 0.0


@dataclass
class CommCounter:
    """Bytes per collective for the current step (category `grad`: gradient synchronisation; `aux`: logging)."""

    world: int
    step_bytes: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    step_calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    aux_bytes: float = 0.0
    hook_time_s: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # hooks' callbacks run on comm threads

    def reset(self) -> None:
        self.step_bytes = defaultdict(float)
        self.step_calls = defaultdict(int)
        self.aux_bytes = 0.0
        self.hook_time_s = 0.0

    def add(self, collective: str, nbytes: float) -> None:
        with self._lock:
            self.step_bytes[collective] += nbytes
            self.step_calls[collective] += 1

    def add_hook_time(self, seconds: float) -> None:
        with self._lock:
            self.hook_time_s += seconds

    @property
    def grad_bytes(self) -> float:
        return float(sum(self.step_bytes.values()))


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@dataclass
class Pending:
    """A launched collective: its future (torch.distributed's `Work.get_future()`) and the tensor it fills.

    `result()` waits (for NCCL: the current stream waits on the collective) and returns the filled tensor, passed
    through `finish` (the all-to-all fallback selects its chunks there)."""

    future: torch.futures.Future
    output: torch.Tensor
    finish: Callable[[torch.Tensor], torch.Tensor] | None = None

    def result(self) -> torch.Tensor:
        self.future.wait()  # raises the collective's error, if any
        return self.output if self.finish is None else self.finish(self.output)


class Comm:
    """The collectives the hooks use, each counted; probes the backend once and falls back where needed (logged)."""

    def __init__(self, group=None, counter: CommCounter | None = None):
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.counter = counter or CommCounter(self.world)
        self._gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
        self.support = self._probe()

    def _probe(self) -> dict[str, str]:
        """Which collectives the backend runs natively ('native') or through a fallback (named)."""
        support = {}
        x = torch.zeros(self.world * 2, device=self._device())
        try:
            out = torch.empty_like(x)
            dist.all_to_all_single(out, x, group=self.group)
            support["all_to_all_single"] = "native"
        except (RuntimeError, NotImplementedError, ValueError) as err:
            support["all_to_all_single"] = f"fallback: all_gather + local select ({type(err).__name__})"
        try:
            out = torch.empty(self.world * 2, device=self._device())
            self._gather_single(out, x[:2].contiguous(), group=self.group)
            support["all_gather_single"] = "native"
        except (RuntimeError, NotImplementedError, ValueError) as err:
            support["all_gather_single"] = f"fallback: all_gather of a list ({type(err).__name__})"
        return support

    def _device(self) -> torch.device:
        backend = dist.get_backend(self.group)
        return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

    @property
    def fallbacks(self) -> list[str]:
        return [f"{k}: {v}" for k, v in self.support.items() if v != "native"]

    # -- counted collectives: each launched with async_op=True; the sync form waits on the async one ----------------
    def all_reduce_async(self, t: torch.Tensor, name: str = "all_reduce") -> Pending:
        """In place (sum): the pending result is `t` itself."""
        work = dist.all_reduce(t, group=self.group, async_op=True)
        self.counter.add(name, allreduce_bytes(_nbytes(t), self.world))
        return Pending(work.get_future(), t)

    def all_gather_async(self, t: torch.Tensor, name: str = "all_gather", out: torch.Tensor | None = None) -> Pending:
        """(N·n,) concatenation of every rank's `t` (n elements), rank order; into `out` when given (contiguous)."""
        t = t.contiguous()
        if out is None:
            out = torch.empty(self.world * t.numel(), dtype=t.dtype, device=t.device)
        if self.support["all_gather_single"] == "native":
            work = self._gather_single(out, t, group=self.group, async_op=True)
        else:
            work = dist.all_gather(list(out.chunk(self.world)), t, group=self.group, async_op=True)
        self.counter.add(name, allgather_bytes(_nbytes(t), self.world))
        return Pending(work.get_future(), out)

    def all_to_all_async(self, t: torch.Tensor, name: str = "all_to_all") -> Pending:
        """`t` (N·c,) split in N chunks; the result (N·c,) has as chunk i the chunk `rank` of rank i."""
        t = t.contiguous()
        if self.support["all_to_all_single"] == "native":
            out = torch.empty_like(t)
            work = dist.all_to_all_single(out, t, group=self.group, async_op=True)
            self.counter.add(name, alltoall_bytes(_nbytes(t), self.world))
            return Pending(work.get_future(), out)
        full = self.all_gather_async(t, name=f"{name}.fallback_all_gather")
        rank, world = self.rank, self.world
        return Pending(full.future, full.output, lambda o: o.view(world, world, -1)[:, rank].reshape(-1).clone())

    def all_reduce(self, t: torch.Tensor, name: str = "all_reduce") -> torch.Tensor:
        return self.all_reduce_async(t, name).result()

    def all_gather(self, t: torch.Tensor, name: str = "all_gather") -> torch.Tensor:
        return self.all_gather_async(t, name).result()

    def all_to_all(self, t: torch.Tensor, name: str = "all_to_all") -> torch.Tensor:
        return self.all_to_all_async(t, name).result()


# -- memory ------------------------------------------------------------------------------------------------------


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_mb() -> float:
    kb = _status_kb("VmRSS")
    if kb is None:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    return kb / 1024


def peak_memory_mb() -> float:
    """Allocator peak on GPU; kernel-tracked peak RSS (VmHWM, exact, no sampling) on CPU."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    kb = _status_kb("VmHWM")
    if kb is None:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    return kb / 1024


def reset_peak_memory() -> bool:
    """Reset the peak (GPU allocator stats; on Linux `echo 5 > /proc/self/clear_refs` resets VmHWM). True if done."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False
