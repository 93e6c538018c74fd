"""The FSDP2 worker of the distributed tests: trains the micro Llama under `Fsdp2Engine` on gloo ranks, checks after
every step that every rank solved with bit-identical coefficients (the replicas' updates can only differ there: each
rank holds its own shard), and writes what rank 0 saw for the comparison with the single-process simulation whose
buckets are the FSDP units (`harness.distributed.simulate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tests.distributed._hook_worker import engine_parts, run_spec


def _same_on_every_rank(t: torch.Tensor, world: int) -> bool:
    gathered = torch.empty(world * t.numel(), dtype=t.dtype)
    dist.all_gather_into_tensor(gathered, t.contiguous())
    views = gathered.view(world, -1)
    return bool(all(torch.equal(views[0], views[r]) for r in range(1, world)))


def fsdp2_worker(rank: int, world: int, out_dir: str, runs: list[dict[str, Any]]) -> None:
    """Train once per run (dicts as `_hook_worker`'s: name, hook mean|sharded|full, languages, weighting, ...); rank 0
    writes `<name>.pt` (full final parameters, per-step metrics, per-step coefficient consistency, the units).
    ``resume_at``: before that step, write a DCP checkpoint, build a fresh sharded model and engine and restore it
    (what ``polymoo run --resume`` does)."""
    from harness.distributed.engine import token_mean_loss
    from harness.distributed.fsdp2 import Fsdp2Engine
    from harness.distributed.fsdp2_run import load_fsdp2_checkpoint, save_fsdp2_checkpoint

    def build(run: dict[str, Any]) -> tuple[torch.nn.Module, Fsdp2Engine]:
        model, cfg, train, batch_fn = engine_parts(run)
        return model, Fsdp2Engine(model, cfg, train, run_spec(run)["languages"], batch_fn, token_mean_loss)

    for run in runs:
        model, engine = build(run)
        rows, consistent, coeffs = [], [], []
        for step in range(engine.train.steps):
            if step == run_spec(run)["resume_at"]:
                saved = save_fsdp2_checkpoint(engine, Path(out_dir) / f"run_{run['name']}", step)
                model, engine = build(run)
                assert load_fsdp2_checkpoint(engine, saved) == step
            rows.append(engine.step(step))
            c = engine.coefficient_vector()
            coeffs.append(c)
            consistent.append(_same_on_every_rank(c, world) if c.numel() else True)
        state = engine.full_state_dict(keep=rank == 0)
        if rank == 0:
            torch.save({"state": state, "metrics": rows, "consistent": consistent, "coefficients": coeffs,
                        "units": engine.state.buckets, "grad_bytes": engine.grad_bytes, "run": run_spec(run)},
                       Path(out_dir) / f"{run['name']}.pt")
        dist.barrier()


def memory_worker(rank: int, world: int, out_dir: str, spec: dict[str, Any]) -> None:
    """For each FSDP2 mode: one step to create AdamW's state, then one step under torch's FSDPMemTracker; rank 0
    writes `memory.pt` (peak bytes by category and the step's bytes, per mode) for the planner comparison."""
    from harness.config import TrainConfig
    from harness.distributed.data import synthetic_batch_fn
    from harness.distributed.engine import EngineConfig, token_mean_loss
    from harness.distributed.fsdp2 import Fsdp2Engine
    from harness.distributed.planner_fsdp2 import measure_peak
    from harness.distributed.workers import micro_llama

    out = {}
    for mode in ("mean", "sharded", "full"):
        model = micro_llama(**spec["model"])
        cfg = EngineConfig(hook=mode, weighting="mean" if mode == "mean" else "mgda", warmup_steps=0)
        batch_fn = synthetic_batch_fn(spec["model"]["vocab"], spec["seq"], spec["batch"], 0, spec["languages"])
        engine = Fsdp2Engine(model, cfg, TrainConfig(steps=2, lr=1e-3, schedule="constant"), spec["languages"],
                             batch_fn, token_mean_loss)
        engine.step(0)
        peak = measure_peak(engine, 1)
        out[mode] = {"peak": peak, "metrics": engine.step(1)}
    if rank == 0:
        torch.save(out, Path(out_dir) / "memory.pt")
    dist.barrier()
