"""The suite path under ``distributed.engine: fsdp2``: `train_fsdp2(run, plan, hook)`, the FSDP2 twin of
`harness.distributed.train.train_distributed`, sharing its pieces (batches and loss, start-of-run logging, the step
loop with MLflow logging, the run summary).

Differences, each on purpose:
- no warm-up steps (FSDP2 has no bucket rebuild): every step runs the method;
- checkpoints through torch.distributed.checkpoint (DCP): every rank writes its shards of the model and AdamW state
  (`get_state_dict`, sharded DTensors) into the staging folder, rank 0 adds ``extra.pt`` (schedule, step, skipped
  steps, the weighting's per-unit states) and renames it into place once complete (the DDP path's folder names and
  ``COMPLETE`` marker, `harness.distributed.train.checkpoints`); ``--resume`` loads the last one into the freshly
  sharded model and optimizer (`set_state_dict`), so a resumed run continues the same trajectory. A checkpoint is
  read back at the same world size (DCP could reshard; the language assignment would change);
- the trained model handed back for evaluation is a plain (unsharded) copy on rank 0, built from the gathered full
  state dict; the other ranks hand back their sharded model (they do not evaluate).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from harness.distributed.assignment import check_world
from harness.distributed.fsdp2 import Fsdp2Engine
from harness.distributed.train import CHECKPOINT_PREFIX, _build_engine, _log_start, _train_steps, checkpoints, summarize
from harness.moo.options import GradientPlan

EXTRA = "extra.pt"


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


def save_fsdp2_checkpoint(engine: Fsdp2Engine, run_dir: Path, step: int, keep: int = 2) -> Path:
    """A collective: every rank writes its shards (DCP) into a staging folder; rank 0 completes and renames it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    root = run_dir / "checkpoints"
    final = root / f"{CHECKPOINT_PREFIX}{step:06d}"
    tmp = root / f".tmp-{final.name}"
    if engine.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    model_state, optim_state = get_state_dict(engine.model, engine.optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(tmp))
    dist.barrier()  # every rank's shards are on disk before rank 0 marks the folder complete
    if engine.rank == 0:
        torch.save({"scheduler": engine.scheduler.state_dict(), "step": step, "skipped_steps": engine.skipped_steps,
                    "weighting": engine.state.rule.state_dict(), "world_size": engine.world}, tmp / EXTRA)
        (tmp / "COMPLETE").write_text(str(step))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_fsdp2_checkpoint(engine: Fsdp2Engine, path: Path) -> int:
    """Restore a checkpoint of :func:`save_fsdp2_checkpoint` into the (freshly sharded) engine; returns its step."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    extra = torch.load(path / EXTRA, map_location="cpu", weights_only=False)
    if extra["world_size"] != engine.world:
        raise ValueError(f"{path}: written by {extra['world_size']} ranks, resumed with {engine.world}; the language "
                         f"assignment depends on N: resume with --nproc {extra['world_size']}")
    model_state, optim_state = get_state_dict(engine.model, engine.optimizer)
    state = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(engine.model, engine.optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"])
    engine.scheduler.load_state_dict(extra["scheduler"])
    engine.state.rule.load_state_dict(extra["weighting"])
    engine.skipped_steps = int(extra["skipped_steps"])
    return int(extra["step"])


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
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    engine = _build_engine(run, spec, hook, world, device, engine_cls=Fsdp2Engine)
    start = 0
    if run.resume and checkpoints(run.run_dir):
        start = load_fsdp2_checkpoint(engine, checkpoints(run.run_dir)[-1])
    if rank == 0:
        _log_start(run, engine, spec, hook, world, start)
        run.tracker.log_params({"dist.engine": "fsdp2", "dist.units": len(engine.units),
                                "dist.bucket": "fsdp2 unit: a decoder block, or the root (bucket_cap_mb unused)",
                                "dist.mixed_precision": run.suite.train.autocast_dtype or "none",
                                "dist.checkpoint": "torch.distributed.checkpoint (sharded)"})
    rows = _train_steps(run, engine, start, world, rank,
                        save=lambda step: save_fsdp2_checkpoint(engine, run.run_dir, step))
    summary = _summary(engine, rows, world, device)
    state = engine.full_state_dict(keep=rank == 0)
    model = plain_model(engine.model, state).to(device) if rank == 0 else engine.model
    return model, summary
