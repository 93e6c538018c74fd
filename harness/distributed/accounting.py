"""Communication and memory accounting: bytes each collective SENDS per rank per step, hook time, peak memory.

Convention (the one the planner uses, `harness.distributed.planner`): bytes a rank puts on the wire under the
bandwidth-optimal algorithm of each collective, for a payload of B bytes per rank:

| collective                        | bytes sent per rank |
|-----------------------------------|---------------------|
| all_reduce (ring)                 | 2(N−1)/N · B        |
| all_gather (input B per rank)     | (N−1) · B           |
| all_to_all (input B, N chunks)    | (N−1)/N · B         |
| reduce_scatter (input B)          | (N−1)/N · B         |

The payloads are the real tensors handed to torch.distributed (including any padding), so a measured number is the
sum over the collectives actually issued. The fallbacks (a backend lacking a collective) are emulated with other
collectives and counted as what they really send.
"""

from __future__ import annotations

import os
from collections import defaultdict
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

    def reset(self) -> None:
        self.step_bytes = defaultdict(float)
        self.step_calls = defaultdict(int)
        self.aux_bytes = 0.0
        self.hook_time_s = 0.0

    def add(self, collective: str, nbytes: float) -> None:
        self.step_bytes[collective] += nbytes
        self.step_calls[collective] += 1

    @property
    def grad_bytes(self) -> float:
        return float(sum(self.step_bytes.values()))


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


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

    # -- counted collectives ---------------------------------------------------------------------------------
    def all_reduce(self, t: torch.Tensor, name: str = "all_reduce") -> torch.Tensor:
        dist.all_reduce(t, group=self.group)
        self.counter.add(name, allreduce_bytes(_nbytes(t), self.world))
        return t

    def all_gather(self, t: torch.Tensor, name: str = "all_gather") -> torch.Tensor:
        """(N·n,) concatenation of every rank's `t` (n elements), rank order."""
        t = t.contiguous()
        out = torch.empty(self.world * t.numel(), dtype=t.dtype, device=t.device)
        if self.support["all_gather_single"] == "native":
            self._gather_single(out, t, group=self.group)
        else:
            dist.all_gather(list(out.chunk(self.world)), t, group=self.group)
        self.counter.add(name, allgather_bytes(_nbytes(t), self.world))
        return out

    def all_to_all(self, t: torch.Tensor, name: str = "all_to_all") -> torch.Tensor:
        """`t` (N·c,) split in N chunks; returns (N·c,) whose chunk i is chunk `rank` of rank i."""
        t = t.contiguous()
        if self.support["all_to_all_single"] == "native":
            out = torch.empty_like(t)
            dist.all_to_all_single(out, t, group=self.group)
            self.counter.add(name, alltoall_bytes(_nbytes(t), self.world))
            return out
        full = self.all_gather(t, name=f"{name}.fallback_all_gather").view(self.world, self.world, -1)
        return full[:, self.rank].reshape(-1).clone()


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
