"""Distributed execution: torchrun launch, process groups, language-per-rank assignment, DDP comm hooks.

Public API:
- `train_distributed(run, plan, hook)` — the suite path under torchrun (DDP + hook), see `harness.distributed.train`;
- which hook a gradient method gets is resolved once, by `harness.executor.resolve_hook(plan, suite_hook)`;
- `HOOKS` (`mean`, `allgather`, `sharded`, `full`, `full_gather`), `HookState`, `comm_hook` — `harness.distributed.hooks`;
- `assign(N, K, step)` — language-per-rank assignment (`harness.distributed.assignment`);
- `DistEngine`, `EngineConfig` — the DDP training loop; `simulate` — its single-process twin;
- `planner` — capacity planner (`polymoo plan SUITE`).
Imports are lazy so `import harness.distributed` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["HOOKS", "barrier", "train_distributed"]

HOOKS = ("mean", "allgather", "sharded", "full", "full_gather")


def barrier() -> None:
    """Wait for every rank (the harness's other layers never call collectives themselves)."""
    import torch.distributed as dist

    dist.barrier()


def __getattr__(name: str) -> Any:
    if name == "train_distributed":
        from harness.distributed import train

        return getattr(train, name)
    raise AttributeError(name)
