"""Local multi-process helpers (gloo on CPU) for tests and benchmarks: spawn N ranks, tiny models, hook workers.

`spawn(fn, nproc, *args)` starts N processes with `torch.multiprocessing` (spawn context; the caller needs the
`__main__` guard when run as a script), initialises a gloo process group with a timeout and calls `fn(rank, world,
*args)`. Results travel through files.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn, world: int, port: int, timeout_s: float, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)  # as torchrun's OMP_NUM_THREADS=1: deterministic and no oversubscription
    torch.use_deterministic_algorithms(True, warn_only=True)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn, nproc: int, *args: Any, timeout_s: float = 120) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_entry, args=(fn, nproc, free_port(), timeout_s, args), nprocs=nproc, join=True)


# -- tiny models ------------------------------------------------------------------------------------------------


def micro_llama(seed: int = 0, vocab: int = 64, hidden: int = 32, layers: int = 2, intermediate: int = 64,
                dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A random-init Llama (HF class, so DDP's bucket rebuild meets the real norm/attention order), ~25k params."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=128,
                      tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg).to(dtype)
    return model


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])


# -- the hook worker used by tests/distributed ------------------------------------------------------------------

RUN_DEFAULTS: dict[str, Any] = {"steps": 3, "languages": 2, "weighting": "mgda", "weighting_options": {},
                                "normalize": "none", "output_scale": "raw", "granularity": "ddp_bucket",
                                "bucket_cap_mb": 0.02, "warmup_steps": 1, "grad_accum": 1, "seed": 0, "seq_len": 12,
                                "per_rank": 2, "data_seed": 0, "lr": 1e-2, "schedule": "constant", "max_grad_norm": 1.0,
                                "model": {}, "resume_at": None}


def run_spec(run: dict[str, Any]) -> dict[str, Any]:
    return {**RUN_DEFAULTS, **run}


def engine_parts(run: dict[str, Any]):
    """(model, EngineConfig, TrainConfig, batch_fn) of a worker run: shared by the workers and the simulation."""
    from harness.config import TrainConfig
    from harness.distributed.data import synthetic_batch_fn
    from harness.distributed.engine import EngineConfig

    run = run_spec(run)
    model = micro_llama(**run["model"])
    train = TrainConfig(steps=run["steps"], lr=run["lr"], schedule=run["schedule"], max_grad_norm=run["max_grad_norm"])
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
                engine.load_state_dict(saved)
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
