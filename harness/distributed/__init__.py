"""Distributed execution: torchrun launch, process groups, language-per-rank assignment, DDP comm hooks.

Public API:
- `train_distributed(run, plan, hook)` — the suite path under torchrun (DDP + hook), see `harness.distributed.train`;
- which hook a gradient method gets is resolved once, by `harness.executor.resolve_hook(plan, suite_hook)`;
- `HOOKS` (`mean`, `allgather`, `sharded`, `full`, `full_gather`), `HookState`, `comm_hook` — `harness.distributed.hooks`;
- `assign(N, K, step)` — language-per-rank assignment (`harness.distributed.assignment`);
- `DistEngine`, `EngineConfig` — the DDP training loop; `simulate` — its single-process twin;
- `planner` — capacity planner (`polymoo plan SUITE`); its memory half `planner_memory`, measured against
  `storage_peak.StoragePeak`; `gpu_smoke` — the one-GPU smoke test (`scripts/gpu_smoke.sh`).
Imports are lazy so `import harness.distributed` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HOOKS", "barrier", "between_runs", "train_distributed"]

HOOKS = ("mean", "allgather", "sharded", "full", "full_gather")

_WAIT_GROUPS: dict[int, Any] = {}


def barrier() -> None:
    """Wait for every rank (the harness's other layers never call collectives themselves)."""
    import torch.distributed as dist

    dist.barrier()


def between_runs(timeout_s: int) -> None:
    """Wait for every rank where rank 0 may work alone for long (evaluating, saving, drawing the run it just
    trained; logging the next run's config and data to the tracking store): a barrier on a gloo group with its own ``timeout_s``, so the training group's short timeout (a dead
    rank fails the run quickly) does not kill the job while rank 0 evaluates. The group is made once per timeout."""
    import datetime

    import torch.distributed as dist

    if timeout_s not in _WAIT_GROUPS:
        _WAIT_GROUPS[timeout_s] = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s))
    dist.barrier(group=_WAIT_GROUPS[timeout_s])


def __getattr__(name: str) -> Any:
    if name == "train_distributed":
        from harness.distributed import train

        return getattr(train, name)
    raise AttributeError(name)
