"""Communication / memory benchmark of the hooks on CPU (gloo): one process group per (hook, N), a Llama-architecture
model large enough that gradient memory shows in the resident set (~26 M parameters, 105 MB in float32).

`run_bench(hook, world, out)` spawns `world` ranks; each records the RSS before the model exists, trains a few steps
(the first is the plain all-reduce warm-up) and reports bytes per step per collective (after warm-up), hook time
(host time of the hook's code, in DDP's thread and in its collectives' callbacks), step time (the median of the
steady steps; every step's time is kept) and peak memory (kernel peak RSS: VmHWM). Rank 0 writes the JSON record.
`run: {dtype: bfloat16}` trains pure bf16 weights (bf16 gradients and DDP buckets).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from harness.perf import cpu_model

MMAP_THRESHOLD = 65536  # fixed glibc mmap threshold: large tensors are mmapped and returned on free, so peak RSS
# measures live memory instead of the heap's high-water mark under glibc's dynamic threshold

BENCH_MODEL = {"vocab": 8192, "hidden": 512, "layers": 6, "intermediate": 1408}
BENCH_RUN = {"languages": 2, "steps": 5, "per_rank": 2, "seq_len": 64, "bucket_cap_mb": 25.0, "weighting": "mgda",
             "warmup_steps": 1, "dtype": "float32"}


def bench_worker(rank: int, world: int, out_file: str, hook: str, spec: dict[str, Any]) -> None:
    from harness.config import TrainConfig
    from harness.distributed.accounting import current_rss_mb, reset_peak_memory
    from harness.distributed.data import synthetic_batch_fn
    from harness.distributed.engine import DistEngine, EngineConfig, token_mean_loss
    from harness.distributed.workers import micro_llama

    run = {**BENCH_RUN, **spec.get("run", {})}
    model_spec = {**BENCH_MODEL, **spec.get("model", {})}
    cuda = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    warm = micro_llama(seed=0, vocab=16, hidden=16, layers=1, intermediate=16).to(device)  # imports and autograd
    token_mean_loss(warm, synthetic_batch_fn(16, 4, 1, 0, 1, device)(0, 0, 0, _one_language()))  # start-up: framework
    del warm
    dist.barrier()
    base_rss = torch.cuda.memory_allocated() / 2**20 if cuda else current_rss_mb()
    model = micro_llama(seed=0, dtype=getattr(torch, run["dtype"]), **model_spec).to(device)
    reset_peak_memory()  # after the build: a bf16 model is built in fp32 first, a transient no step sees
    train = TrainConfig(steps=run["steps"], lr=1e-4, schedule="constant", max_grad_norm=1.0, dtype=run["dtype"],
                        master_weights=run["dtype"] == "float32")  # bfloat16: pure bf16 weights and gradients
    cfg = EngineConfig(hook=hook, weighting=run["weighting"], bucket_cap_mb=run["bucket_cap_mb"],
                       warmup_steps=run["warmup_steps"], seed=0)
    batch_fn = synthetic_batch_fn(model_spec["vocab"], run["seq_len"], run["per_rank"], 0, run["languages"], device)
    engine = DistEngine(model, cfg, train, run["languages"], batch_fn, token_mean_loss)
    rows = [engine.step(s) for s in range(train.steps)]
    _write_record(rank, world, out_file, hook, run, model_spec, engine, rows, base_rss)


def _write_record(rank: int, world: int, out_file: str, hook: str, run: dict[str, Any], model_spec: dict[str, Any],
                  engine: Any, rows: list[dict[str, float]], base_rss: float) -> None:
    """Gather every rank's memory; rank 0 writes the record of the steady steps."""
    from harness.distributed.accounting import peak_memory_mb

    steady = rows[run["warmup_steps"]:]
    peaks: list[Any] = [None] * world
    dist.all_gather_object(peaks, {"peak_mb": peak_memory_mb(), "base_mb": base_rss})
    if rank != 0:
        return

    def mean(key: str) -> float:
        return sum(r[key] for r in steady) / len(steady)

    model, cuda = engine.model, dist.get_backend() == "nccl"
    step_times = [r["perf/step_time_s"] for r in steady]
    record = {
        "hook": hook, "world_size": world, "languages": run["languages"], "weighting": run["weighting"],
        "dtype": run["dtype"], "backend": dist.get_backend(), "collectives": engine.comm.support,
        "model": {"arch": "llama", **model_spec, "params": sum(p.numel() for p in model.parameters()),
                  "grad_bytes": engine.grad_bytes},
        "bucket_cap_mb": run["bucket_cap_mb"], "buckets": len(engine.state.buckets),
        "bucket_numel": [sum(dict(model.named_parameters())[n].numel() for n in names)
                         for _, names in sorted(engine.state.buckets.items())],
        "bucket_names": {str(k): v for k, v in sorted(engine.state.buckets.items())},
        "batch": {"per_rank": run["per_rank"], "seq_len": run["seq_len"]},
        "steps": run["steps"], "warmup_steps": run["warmup_steps"],
        "bytes_per_step": mean("dist/bytes_per_step"),
        "bytes_per_collective": {k.removeprefix("dist/bytes/"): v for k, v in steady[-1].items()
                                 if k.startswith("dist/bytes/")},
        "bytes_ratio_allreduce": mean("dist/bytes_ratio_allreduce"),
        "hook_time_s": statistics.median(r["dist/hook_time_s"] for r in steady),  # median: one stalled step
        "hook_times_s": [r["dist/hook_time_s"] for r in steady], "step_time_s": statistics.median(step_times),
        "step_times_s": step_times,
        "peak_mem_mb": max(p["peak_mb"] for p in peaks),
        "peak_mem_delta_mb": max(p["peak_mb"] - p["base_mb"] for p in peaks),
        "base_rss_mb": max(p["base_mb"] for p in peaks),
        "per_rank_memory": peaks,
        "allocator": f"glibc MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_', 'dynamic')}",
        "device": (f"{torch.cuda.get_device_name()} ×{world}, torch {torch.__version__}, nccl" if cuda else
                   f"cpu ({cpu_model()}), torch {torch.__version__}, gloo"),
        "threads_per_rank": torch.get_num_threads(), "load_avg_1m_at_end": os.getloadavg()[0],
        "memory_measure": "GPU allocator peak (max_memory_allocated)" if cuda else "peak RSS (VmHWM) minus RSS before model",
        "recorded": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    Path(out_file).write_text(json.dumps(record, indent=2))


def _one_language():
    from harness.distributed.assignment import assign

    return assign(1, 1, 0)


def run_bench(hook: str, world: int, out_file: str | Path, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    import os

    from harness.distributed.workers import spawn

    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))  # RSS follows live tensors (see module doc)
    spawn(bench_worker, world, str(out_file), hook, spec or {}, timeout_s=600)
    return json.loads(Path(out_file).read_text())


def add_model_arguments(p: Any) -> None:
    """``--hidden``, ``--layers``, …: the benchmark model's shape (`BENCH_MODEL`), for the torchrun entry points."""
    for key in BENCH_MODEL:
        p.add_argument(f"--{key}", type=int, default=BENCH_MODEL[key])


def run_under_torchrun(worker: Any, *args: Any, timeout_s: int = 600) -> None:
    """``worker(rank, world, *args)`` in this torchrun process: NCCL on GPUs (one device per local rank), gloo on CPU;
    the process group is torn down whatever happens."""
    import datetime

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        worker(dist.get_rank(), dist.get_world_size(), *args)
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    """Under torchrun (NCCL on GPUs, gloo on CPU): `torchrun --nproc-per-node=N -m harness.distributed.bench --hook
    sharded --out results/bench/gpu_sharded_n4.json [--hidden 2048 --layers 8 --seq-len 512 --per-rank 4]`."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--hook", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--languages", type=int, default=BENCH_RUN["languages"])
    p.add_argument("--steps", type=int, default=BENCH_RUN["steps"])
    p.add_argument("--per-rank", type=int, default=BENCH_RUN["per_rank"])
    p.add_argument("--seq-len", type=int, default=BENCH_RUN["seq_len"])
    p.add_argument("--bucket-cap-mb", type=float, default=BENCH_RUN["bucket_cap_mb"])
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default=BENCH_RUN["dtype"])
    add_model_arguments(p)
    a = p.parse_args(argv)
    spec = {"run": {"languages": a.languages, "steps": a.steps, "per_rank": a.per_rank, "seq_len": a.seq_len,
                    "bucket_cap_mb": a.bucket_cap_mb, "dtype": a.dtype},
            "model": {k: getattr(a, k) for k in BENCH_MODEL}}
    run_under_torchrun(bench_worker, a.out, a.hook, spec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
