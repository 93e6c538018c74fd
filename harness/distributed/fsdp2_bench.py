"""Benchmark of the FSDP2 engine: bytes, step time and peak memory of joint SFT, per-unit MOO and global MOO.

`run_fsdp2_bench(world, out)` spawns ``world`` gloo ranks (CPU) that train the benchmark's Llama-architecture model
(`harness.distributed.bench.BENCH_MODEL`, ~26 M parameters) under each mode in turn, in the same process group:
``steps`` steps each, the first one untimed (allocations, AdamW state). Per mode: gradient bytes per step and their
ratio to FSDP2's reduce-scatter of the same units, parameter all-gather bytes, step time (mean over the timed steps,
slowest rank) and its ratio to joint SFT's, peak RSS above the RSS before the model existed (VmHWM, reset between
modes), and the peak tensor bytes of one extra step under torch's FSDPMemTracker. Rank 0 writes the JSON record.
On GPUs: ``torchrun --nproc-per-node=N -m harness.distributed.fsdp2_bench --out results/bench/gpu_fsdp2_nN.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from harness.distributed.bench import BENCH_MODEL, MMAP_THRESHOLD, add_model_arguments, run_under_torchrun
from harness.perf import cpu_model

MODES = ("mean", "sharded", "full")
FSDP2_RUN = {"languages": 2, "steps": 4, "per_rank": 2, "seq_len": 64, "weighting": "mgda"}


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def _mode_record(mode: str, run: dict[str, Any], model_spec: dict[str, int]) -> dict[str, Any]:
    """Train one mode on this rank; its metrics (this rank's view)."""
    from harness.config import TrainConfig
    from harness.distributed.accounting import current_rss_mb, peak_memory_mb, reset_peak_memory
    from harness.distributed.data import synthetic_batch_fn
    from harness.distributed.engine import EngineConfig, token_mean_loss
    from harness.distributed.fsdp2 import Fsdp2Engine
    from harness.distributed.planner_fsdp2 import measure_peak
    from harness.distributed.workers import micro_llama

    dist.barrier()
    base = current_rss_mb()
    reset_peak_memory()
    device = _device()
    model = micro_llama(seed=0, **model_spec).to(device)
    cfg = EngineConfig(hook=mode, weighting="mean" if mode == "mean" else run["weighting"], warmup_steps=0)
    batch_fn = synthetic_batch_fn(model_spec["vocab"], run["seq_len"], run["per_rank"], 0, run["languages"], device)
    engine = Fsdp2Engine(model, cfg, TrainConfig(steps=run["steps"] + 1, lr=1e-4, schedule="constant"),
                         run["languages"], batch_fn, token_mean_loss)
    rows = [engine.step(s) for s in range(run["steps"])]
    peak_rss = peak_memory_mb()
    tensors = measure_peak(engine, run["steps"])
    timed = rows[1:]
    return {"bytes_per_step": timed[-1]["dist/bytes_per_step"],
            "reduce_scatter_bytes": timed[-1]["dist/reduce_scatter_bytes"],
            "bytes_ratio_reduce_scatter": timed[-1]["dist/bytes_ratio_reduce_scatter"],
            "param_bytes_per_step": timed[-1]["dist/param_bytes_per_step"],
            "bytes_per_collective": {k.removeprefix("dist/bytes/"): v for k, v in timed[-1].items()
                                     if k.startswith("dist/bytes/")},
            "step_time_s": sum(r["perf/step_time_s"] for r in timed) / len(timed),
            "comm_time_s": sum(r["dist/hook_time_s"] for r in timed) / len(timed),
            "peak_mem_delta_mb": peak_rss - base, "peak_tensor_mb": tensors["total"] / 2**20,
            "params": sum(p.numel() for p in model.parameters()), "units": len(engine.units)}


def fsdp2_bench_worker(rank: int, world: int, out_file: str, spec: dict[str, Any]) -> None:
    run = {**FSDP2_RUN, **spec.get("run", {})}
    model_spec = {**BENCH_MODEL, **spec.get("model", {})}
    modes = {}
    for mode in MODES:
        mine = _mode_record(mode, run, model_spec)
        views: list[Any] = [None] * world
        dist.all_gather_object(views, mine)
        slowest = max(views, key=lambda v: v["step_time_s"])
        modes[mode] = {**mine, "step_time_s": slowest["step_time_s"],
                       "peak_mem_delta_mb": max(v["peak_mem_delta_mb"] for v in views),
                       "peak_tensor_mb": max(v["peak_tensor_mb"] for v in views)}
    if rank != 0:
        return
    for rec in modes.values():
        rec["step_time_ratio_joint"] = rec["step_time_s"] / modes["mean"]["step_time_s"]
        rec["bytes_ratio_joint_reduce_scatter"] = rec["bytes_per_step"] / modes["mean"]["bytes_per_step"]
    cuda = dist.get_backend() == "nccl"
    record = {"engine": "fsdp2", "world_size": world, "run": run, "model": {"arch": "llama", **model_spec},
              "modes": modes, "backend": dist.get_backend(),
              "allocator": f"glibc MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_', 'dynamic')}",
              "device": (f"{torch.cuda.get_device_name()} ×{world}, torch {torch.__version__}, nccl" if cuda else
                         f"cpu ({cpu_model()}, {os.cpu_count()} cores), "
                         f"torch {torch.__version__}, gloo"),
              "memory_measure": "peak RSS (VmHWM) minus RSS before the model; FSDPMemTracker peak tensor bytes",
              "load_average_1_5_15": list(os.getloadavg()),  # a shared machine's load moves step times
              "recorded": time.strftime("%Y-%m-%d %H:%M:%S")}
    Path(out_file).write_text(json.dumps(record, indent=2))


def run_fsdp2_bench(world: int, out_file: str | Path, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    from harness.distributed.workers import spawn

    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))  # RSS follows live tensors (bench.py)
    spawn(fsdp2_bench_worker, world, str(out_file), spec or {}, timeout_s=900)
    return json.loads(Path(out_file).read_text())


def parser() -> Any:
    import argparse

    p = argparse.ArgumentParser(description="FSDP2 engine benchmark; run under torchrun (NCCL on GPUs, gloo on CPU).")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=FSDP2_RUN["steps"])
    p.add_argument("--per-rank", type=int, default=FSDP2_RUN["per_rank"])
    p.add_argument("--seq-len", type=int, default=FSDP2_RUN["seq_len"])
    add_model_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Under torchrun (NCCL on GPUs, gloo on CPU)."""
    a = parser().parse_args(argv)
    spec = {"run": {"steps": a.steps, "per_rank": a.per_rank, "seq_len": a.seq_len},
            "model": {k: getattr(a, k) for k in BENCH_MODEL}}
    run_under_torchrun(fsdp2_bench_worker, a.out, spec, timeout_s=900)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
