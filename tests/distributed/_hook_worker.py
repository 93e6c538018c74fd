"""The hook worker of the distributed tests: trains the micro Llama under DDP + a polymoo hook on gloo ranks
(`harness.distributed.workers.spawn`), checks after every step that the replicas are bit-identical, and writes what
rank 0 saw for the comparison with the single-process simulation (`harness.distributed.simulate`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from harness.distributed.workers import micro_llama


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])


RUN_DEFAULTS: dict[str, Any] = {"steps": 3, "languages": 2, "weighting": "mgda", "weighting_options": {},
                                "normalize": "none", "output_scale": "raw", "granularity": "ddp_bucket",
                                "bucket_cap_mb": 0.02, "warmup_steps": 1, "grad_accum": 1, "seed": 0, "seq_len": 12,
                                "per_rank": 2, "data_seed": 0, "lr": 1e-2, "schedule": "constant", "max_grad_norm": 1.0,
                                "optimizer": "adamw_torch",
                                "model": {}, "resume_at": None, "dtype": "float32"}


def run_spec(run: dict[str, Any]) -> dict[str, Any]:
    return {**RUN_DEFAULTS, **run}


def engine_parts(run: dict[str, Any]):
    """(model, EngineConfig, TrainConfig, batch_fn) of a worker run: shared by the workers and the simulation."""
    from harness.config import TrainConfig
    from harness.distributed.data import synthetic_batch_fn
    from harness.distributed.engine import EngineConfig

    run = run_spec(run)
    model = micro_llama(**run["model"])
    train = TrainConfig(steps=run["steps"], lr=run["lr"], schedule=run["schedule"], max_grad_norm=run["max_grad_norm"],
                        dtype=run["dtype"], optimizer=run["optimizer"])
    cfg = EngineConfig(hook=run["hook"], weighting=run["weighting"], weighting_options=run["weighting_options"],
                       bucket_cap_mb=run["bucket_cap_mb"], warmup_steps=run["warmup_steps"],
                       grad_accum=run["grad_accum"], seed=run["seed"], normalize=run["normalize"],
                       output_scale=run["output_scale"], granularity=run["granularity"])
    batch_fn = synthetic_batch_fn(model.config.vocab_size, run["seq_len"], run["per_rank"], run["data_seed"],
                                  run["languages"])
    return model, cfg, train, batch_fn


def hook_worker(rank: int, world: int, out_dir: str, runs: list[dict[str, Any]]) -> None:
    """Train the micro model once per run (each a dict: name, hook, languages, weighting, ...); after EVERY step check
    (all-gather) that all replicas hold bit-identical parameters; rank 0 writes `<name>.pt` (final parameters, per-step
    metrics, the buckets DDP handed to the hook, collective support). ``resume_at``: before that step, rebuild the
    model and engine and restore them from ``engine.state_dict`` (what a checkpoint resume does)."""
    from harness.distributed.engine import DistEngine, token_mean_loss

    out = Path(out_dir)
    for run in runs:
        model, cfg, train, batch_fn = engine_parts(run)
        engine = DistEngine(model, cfg, train, run_spec(run)["languages"], batch_fn, token_mean_loss)
        rows, identical = [], []
        for step in range(train.steps):
            if step == run_spec(run)["resume_at"]:  # a fresh engine restored from the state dict (checkpoint resume)
                saved = engine.state_dict(step)
                model, cfg, train, batch_fn = engine_parts(run)
                engine = DistEngine(model, cfg, train, run_spec(run)["languages"], batch_fn, token_mean_loss)
                engine.resume(saved)
            rows.append(engine.step(step))
            flat = flat_params(model)
            gathered = torch.empty(world * flat.numel())
            dist.all_gather_into_tensor(gathered, flat)
            views = gathered.view(world, -1)
            identical.append(bool(all(torch.equal(views[0], views[r]) for r in range(1, world))))
        if rank == 0:
            torch.save({"state": model.state_dict(), "metrics": rows, "identical": identical,
                        "buckets": engine.state.buckets, "support": engine.comm.support,
                        "grad_bytes": engine.grad_bytes, "run": run_spec(run)}, out / f"{run['name']}.pt")
        dist.barrier()
    if rank == 0:
        (out / "done.json").write_text(json.dumps({"world": world, "runs": [r["name"] for r in runs]}))


def refusal_worker(rank: int, world: int, out_dir: str, run: dict[str, Any]) -> None:
    """Build the engine of ``run`` and write the error it raises (rank 0) to ``<name>.err``."""
    from harness.distributed.engine import DistEngine, token_mean_loss

    model, cfg, train, batch_fn = engine_parts(run)
    try:
        DistEngine(model, cfg, train, run_spec(run)["languages"], batch_fn, token_mean_loss)
        message = "no error"
    except ValueError as err:
        message = str(err)
    if rank == 0:
        (Path(out_dir) / f"{run['name']}.err").write_text(message)
