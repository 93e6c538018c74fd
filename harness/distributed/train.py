"""The suite path under torchrun: `train_distributed(run, plan, hook)` trains `run.model` with DDP and a comm hook.

Selected by `harness.executor` when `run.dist.world_size > 1` (the suite's `distributed.nproc` or `--nproc`), which
also hands over the method's plain-data `GradientPlan` and the hook it resolved (`harness.executor.resolve_hook`:
joint SFT -> `mean`; scope `bucket` -> a bucket hook; scope `global` -> a full-gradient hook; a method's own `hook`
option first).

Rank 0 owns the MLflow run (per-step metrics, the assignment and DDP's bucket map as artifacts, the resolved hook and
the collectives' support as params); the other ranks hold a NullTracker. Checkpoints every `train.save_every` steps
(rank 0 writes, atomically); `--resume` continues from the last one. SIGTERM (torchrun stopping the survivors when a
rank dies) raises, so the runner marks the MLflow run FAILED with everything logged so far kept; the process-group
timeout (`distributed.timeout_s`) bounds every collective, so a hung rank fails the run instead of hanging it.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from harness.distributed.assignment import assign, check_world, describe
from harness.distributed.engine import DistEngine, EngineConfig, token_mean_loss
from harness.faults import maybe_fail, maybe_kill
from harness.moo.options import GradientPlan

CHECKPOINT_PREFIX = "dist-step-"


# -- checkpoints --------------------------------------------------------------------------------------------------


def checkpoints(run_dir: Path) -> list[Path]:
    root = run_dir / "checkpoints"
    if not root.exists():
        return []
    done = [p for p in root.glob(f"{CHECKPOINT_PREFIX}*") if (p / "COMPLETE").exists()]
    return sorted(done, key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX)))


def save_checkpoint(engine: DistEngine, run_dir: Path, step: int, keep: int = 2) -> Path:
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{CHECKPOINT_PREFIX}{step:06d}"
    tmp = root / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(engine.state_dict(step), tmp / "state.pt")
    (tmp / "COMPLETE").write_text(str(step))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


class RankTerminated(RuntimeError):
    pass


class _TermGuard:
    """SIGTERM -> RankTerminated (once), so the failure path (MLflow FAILED) runs before the process dies.

    On any failure inside the guard the run is marked FAILED here at once (the runner marks it again; harmless) and
    SIGTERM is ignored from then on, so the launcher's stop signal cannot cut the failure path short (torchrun sends
    SIGKILL after its grace period anyway)."""

    def __init__(self, tracker: Any = None):
        self.tracker = tracker

    def __enter__(self):
        self.fired = False
        self.previous = signal.getsignal(signal.SIGTERM)

        def handler(signum, frame):
            if self.fired:
                return
            self.fired = True
            raise RankTerminated("received SIGTERM (another rank failed or the launcher stopped the run)")

        signal.signal(signal.SIGTERM, handler)
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            signal.signal(signal.SIGTERM, self.previous)
            return False
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.tracker is not None:
            try:
                self.tracker.finish("FAILED")
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
        return False


# -- the suite path -----------------------------------------------------------------------------------------------


def _build_engine(run: Any, spec: GradientPlan, hook: str, world: int, device: torch.device,
                  engine_cls: type = DistEngine) -> DistEngine:
    """The DDP engine for the run (or ``engine_cls``'s, the FSDP2 one): language-per-rank batches, token-mean loss,
    the hook and its weighting."""
    from harness.data.sft import TokenizedLanguages, collate
    from harness.distributed.data import make_batch_fn

    t, dcfg, seen = run.suite.train, run.suite.distributed, list(run.suite.languages.seen)
    dataset = TokenizedLanguages(run.tokenizer, {lang: run.data.train[lang] for lang in seen}, t.max_seq_len)
    batch_fn = make_batch_fn(dataset, seen, world, t.batch_size_per_language, dcfg.grad_accum, run.seed,
                             collate(run.tokenizer.pad_token_id), device)

    cfg = EngineConfig(hook=hook, weighting=spec.weighting, weighting_options=spec.weighting_options,
                       bucket_cap_mb=spec.bucket_cap_mb, warmup_steps=dcfg.warmup_steps, grad_accum=dcfg.grad_accum,
                       seed=run.seed, normalize=spec.normalize, output_scale=spec.output_scale,
                       granularity=spec.granularity)
    return engine_cls(run.model.to(device), cfg, t, len(seen), batch_fn, token_mean_loss)


def _log_start(run: Any, engine: DistEngine, spec: GradientPlan, hook: str, world: int, start: int) -> None:
    """Rank 0: what this distributed run is (hook, world, assignment), to the console and the MLflow run."""
    seen, tracker = list(run.suite.languages.seen), run.tracker
    assignment_info = describe(world, len(seen), seen, run.suite.train.steps)
    print(f"[polymoo.distributed] world={world} hook={hook} weighting={spec.weighting} scope={spec.scope} "
          f"assignment={assignment_info['mode']}: {assignment_info['rule']}; first steps {assignment_info['steps']}"
          + (f"; resumed from step {start}" if start else ""), flush=True)
    tracker.log_params({"dist.hook": hook, "dist.world_size": world, "dist.scope": spec.scope,
                        "dist.weighting": spec.weighting, "dist.bucket_cap_mb": spec.bucket_cap_mb,
                        "dist.grad_accum": run.suite.distributed.grad_accum, "dist.backend": dist.get_backend(),
                        "dist.collectives": json.dumps(engine.comm.support),
                        "dist.assignment": assignment_info["mode"]})
    if engine.comm.fallbacks:
        print(f"[polymoo.distributed] collective fallbacks: {engine.comm.fallbacks}", flush=True)
    tracker.log_dict(assignment_info, "dist/assignment.json")
    if run.resume:  # each step logged once: the interrupted attempt's points after the checkpoint are superseded
        tracker.restart_from_step(start)


def _train_steps(run: Any, engine: DistEngine, start: int, world: int, rank: int,
                 save: Callable[[int], None] | None = None) -> list[dict[str, float]]:
    """The optimizer steps from `start`: log every `log_every`, the bucket map once, checkpoints every `save_every`
    (rank 0 writes `engine.state_dict`; ``save(step)``, called on every rank, replaces that: the FSDP2 engine's)."""
    t, seen, tracker = run.suite.train, list(run.suite.languages.seen), run.tracker
    rows: list[dict[str, float]] = []
    buckets_logged = False
    with _TermGuard(tracker):
        for step in range(start, t.steps):
            maybe_kill(rank, step)
            maybe_fail(step)
            metrics = engine.step(step)
            metrics |= engine.gather_losses(metrics["train/rank_loss"], assign(world, len(seen), step), seen)
            rows.append(metrics)
            done = step + 1
            if rank == 0 and (done % t.log_every == 0 or done == t.steps):
                tracker.log_metrics({k: v for k, v in metrics.items() if _finite(v) and k != "train/rank_loss"},
                                    step=done)
            if rank == 0 and not buckets_logged and engine.state.buckets:
                tracker.log_dict({str(k): v for k, v in sorted(engine.state.buckets.items())}, "dist/buckets.json")
                buckets_logged = True
            if t.save_every and done % t.save_every == 0 and done < t.steps:
                if save is not None:
                    save(done)
                elif rank == 0:
                    save_checkpoint(engine, run.run_dir, done)
                dist.barrier()
    return rows


def train_distributed(run: Any, spec: GradientPlan, hook: str) -> tuple[Any, dict[str, float]]:
    """Train run.model on the seen languages across the torchrun world with the method's plan and the hook the
    executor resolved; returns (model, summary metrics). ``distributed.engine: fsdp2`` runs the FSDP2 engine."""
    if run.suite.distributed.engine == "fsdp2":
        from harness.distributed.fsdp2_run import train_fsdp2

        return train_fsdp2(run, spec, hook)
    world, rank = dist.get_world_size(), dist.get_rank()
    check_world(world, len(run.suite.languages.seen))
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    engine = _build_engine(run, spec, hook, world, device)
    start = 0
    if run.resume and checkpoints(run.run_dir):
        last = checkpoints(run.run_dir)[-1]
        start = engine.resume(torch.load(last / "state.pt", map_location=device, weights_only=False))
    if rank == 0:
        _log_start(run, engine, spec, hook, world, start)
    rows = _train_steps(run, engine, start, world, rank)
    summary = summarize(rows, engine.cfg.warmup_steps - start)
    peak = torch.tensor([summary.get("perf/peak_mem_mb", 0.0)], dtype=torch.float64, device=device)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    summary["perf/peak_mem_mb"] = float(peak)
    summary["train/skipped_steps"] = float(engine.skipped_steps)
    summary["dist/world_size"] = float(world)
    return engine.model, summary


def summarize(rows: list[dict[str, float]], warmup_rows: int) -> dict[str, float]:
    """Run summary: communication means over the steps after warm-up (all steps if none), perf over steps > first."""
    if not rows:
        return {}
    steady = rows[max(warmup_rows, 0):] or rows
    timed = rows[1:] or rows

    def mean(key: str, over: list[dict[str, float]]) -> float:
        vals = [r[key] for r in over if key in r and _finite(r[key])]
        return sum(vals) / len(vals) if vals else float("nan")

    out = {k: mean(k, steady) for k in ("dist/bytes_per_step", "dist/bytes_ratio_allreduce", "dist/hook_time_s")}
    out["perf/step_time_s"] = mean("perf/step_time_s", timed)
    out["perf/mean_step_time_s"] = out["perf/step_time_s"]
    out["perf/peak_mem_mb"] = max(r["perf/peak_mem_mb"] for r in rows)
    out["train/final_loss"] = rows[-1].get("train/loss", float("nan"))
    return out


def _finite(v: Any) -> bool:
    import math

    return isinstance(v, (int, float)) and math.isfinite(v)


