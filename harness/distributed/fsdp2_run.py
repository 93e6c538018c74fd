"""The suite path under ``distributed.engine: fsdp2``: `train_fsdp2(run, plan, hook)`, the FSDP2 twin of
`harness.distributed.train.train_distributed`, sharing its pieces (batches and loss, start-of-run logging, the step
loop with MLflow logging, the run summary).

Differences, each on purpose:
- no warm-up steps (FSDP2 has no bucket rebuild): every step runs the method;
- no checkpoints, and ``--resume`` of an unfinished run is refused with the reason: FSDP2's state is sharded and
  torch.distributed.checkpoint is not wired in yet, so a rank-0 ``torch.save`` (the DDP engine's checkpoint) would
  hold one shard only;
- the trained model handed back for evaluation is a plain (unsharded) copy on rank 0, built from the gathered full
  state dict; the other ranks hand back their sharded model (they do not evaluate).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.distributed as dist

from harness.distributed.assignment import check_world
from harness.distributed.fsdp2 import Fsdp2Engine
from harness.distributed.train import _build_engine, _log_start, _train_steps, summarize
from harness.moo.options import GradientPlan

RESUME_REFUSED = ("polymoo run --resume: distributed.engine fsdp2 writes no checkpoints (its state is sharded; "
                  "torch.distributed.checkpoint is not wired in), so an unfinished FSDP2 run cannot continue: rerun "
                  "it without --resume, or use distributed.engine: ddp")


def plain_model(sharded: torch.nn.Module, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """A plain module of the sharded model's own class (FSDP2 swaps in a subclass) holding ``state``."""
    from torch.distributed.fsdp import FSDPModule

    cls = next(c for c in type(sharded).__mro__ if not issubclass(c, FSDPModule))
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers: a random init, overwritten below
        no_init_weights = contextlib.nullcontext
    with no_init_weights():
        plain = cls(sharded.config)
    plain.load_state_dict(state, strict=True)
    if getattr(sharded, "generation_config", None) is not None:
        plain.generation_config = sharded.generation_config
    return plain


def _summary(engine: Fsdp2Engine, rows: list[dict[str, float]], world: int, device: torch.device) -> dict[str, float]:
    summary = summarize(rows, 0)
    for key in ("dist/bytes_ratio_reduce_scatter", "dist/param_bytes_per_step", "dist/reduce_scatter_bytes"):
        vals = [r[key] for r in rows if key in r]
        summary[key] = sum(vals) / len(vals) if vals else float("nan")
    peak = torch.tensor([summary.get("perf/peak_mem_mb", 0.0)], dtype=torch.float64, device=device)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    summary["perf/peak_mem_mb"] = float(peak)
    summary["train/skipped_steps"] = float(engine.skipped_steps)
    summary["dist/world_size"] = float(world)
    return summary


def train_fsdp2(run: Any, spec: GradientPlan, hook: str) -> tuple[Any, dict[str, float]]:
    """Train run.model under FSDP2 with the method's plan (hook mean / sharded / full); returns (model, summary)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    check_world(world, len(run.suite.languages.seen))
    if run.resume:
        raise ValueError(RESUME_REFUSED)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    engine = _build_engine(run, spec, hook, world, device, engine_cls=Fsdp2Engine)
    if rank == 0:
        _log_start(run, engine, spec, hook, world, 0)
        run.tracker.log_params({"dist.engine": "fsdp2", "dist.units": len(engine.units),
                                "dist.bucket": "fsdp2 unit: a decoder block, or the root (bucket_cap_mb unused)",
                                "dist.mixed_precision": run.suite.train.autocast_dtype or "none"})
        if run.suite.train.save_every:
            print("[polymoo.fsdp2] train.save_every: no checkpoints under distributed.engine fsdp2 (see "
                  "docs/distributed.md)", flush=True)
    rows = _train_steps(run, engine, 0, world, rank, checkpoint=False)
    summary = _summary(engine, rows, world, device)
    state = engine.full_state_dict(keep=rank == 0)
    model = plain_model(engine.model, state).to(device) if rank == 0 else engine.model
    return model, summary
