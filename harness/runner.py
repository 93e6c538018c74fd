"""Run a suite: for every (model, method, seed), one MLflow run that trains, evaluates and records.

The harness, not the method, builds the model and data, seeds, evaluates and records, so a comparison
measures the method and nothing else. A run that fails is marked FAILED in MLflow with everything logged
so far kept (SIGTERM and Ctrl-C: KILLED); `resume=True` skips finished runs and continues failed ones from their last
checkpoint, in the same MLflow run, with each step logged once (docs/tracking.md); `resume_changed=True` also accepts
a changed suite and records the change. Rank 0 prints a header and a summary line per run on stderr.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from harness.config import MethodSpec, Suite
from harness.data.sft import load_language_data
from harness.evaluate.pipeline import evaluate_model
from harness.faults import maybe_slow_evaluation, maybe_slow_start
from harness.interrupts import Terminated, stops_raised
from harness.method import DistInfo, RunContext
from harness.models.loading import load_model
from harness.models.tiny import weights_fingerprint
from harness.models.tokenizer import tokenizer_fingerprint
from harness.perf import machine
from harness.registry import get_method
from harness.seeding import seed_everything
from harness.suite import method_options
from harness.tracking import NullTracker, Tracker, git_commit, log_run_config, open_run


@dataclass(frozen=True)
class RunResult:
    model: str
    method: str
    seed: int
    run_id: str
    status: str
    metrics: dict[str, float]


def run_dir_for(suite: Suite, model: str, method: MethodSpec, seed: int) -> Path:
    return Path(suite.output_dir) / suite.suite.name / model / method.display / f"seed{seed}"


def _finished(run_dir: Path) -> bool:
    return (run_dir / "DONE").exists()


def _archive(run_dir: Path) -> None:
    """A fresh run never overwrites an earlier one's files: move them aside."""
    if run_dir.exists():
        run_dir.rename(run_dir.with_name(f"{run_dir.name}.{time.strftime('%Y%m%d-%H%M%S')}"))


def run_suite(suite: Suite, resume: bool = False, dist: DistInfo | None = None,
              resume_changed: bool = False) -> list[RunResult]:
    """Every (model, method, seed) in order; rank 0 prints a header before each run and a summary line after it
    (stderr, so stdout keeps the results table)."""
    dist = dist or DistInfo()
    plan = [(m, spec, seed) for m in suite.models for spec in suite.methods for seed in suite.seeds]
    results = []
    for i, (model, spec, seed) in enumerate(plan, 1):
        _say(dist, f"run {i}/{len(plan)}: {model} · {spec.display} · seed {seed}")
        started = time.perf_counter()
        result = run_one(suite, model, spec, seed, resume=resume, dist=dist, resume_changed=resume_changed)
        _say(dist, summary_line(i, len(plan), result, time.perf_counter() - started))
        results.append(result)
    return results


KEY_METRICS = ("eval/acc/seen_mean", "eval/acc/unseen_mean", "eval/loss/seen_mean", "eval/loss/unseen_mean",
               "train/final_loss", "train/skipped_steps")


def summary_line(i: int, n: int, result: RunResult, seconds: float) -> str:
    """``run 3/14 FINISHED in 42.1 s: eval/loss/seen_mean 3.2100 · train/final_loss 3.0500`` (skipped steps only
    when there were some)."""
    shown = [f"{k} {v:.4f}" if k != "train/skipped_steps" else f"{k} {int(v)}" for k in KEY_METRICS
             if (v := result.metrics.get(k)) is not None and (k != "train/skipped_steps" or v)]
    return f"run {i}/{n} {result.status} in {seconds:.1f} s" + (f": {' · '.join(shown)}" if shown else "")


def _say(dist: DistInfo, line: str) -> None:
    if dist.is_main:
        print(f"[polymoo] {line}", file=sys.stderr, flush=True)


def run_one(suite: Suite, model_name: str, spec: MethodSpec, seed: int, resume: bool = False,
            dist: DistInfo | None = None, resume_changed: bool = False) -> RunResult:
    """One MLflow run. `resume_changed` (implies `resume`) accepts a changed config for a resumed run and records
    the change; without it a resume with a different resolved config is refused, naming the keys."""
    dist = dist or DistInfo()
    resume = resume or resume_changed
    method = get_method(spec.name)
    options = method_options(spec)  # parsed once, when the suite was validated
    run_dir = run_dir_for(suite, model_name, spec, seed)
    if resume and _finished(run_dir):
        done = json.loads((run_dir / "DONE").read_text())
        return RunResult(model_name, spec.display, seed, done["run_id"], "SKIPPED (finished)", done["metrics"])
    if not resume and dist.is_main:
        _archive(run_dir)
    if dist.world_size > 1:  # rank 0 archived the folder, and finished evaluating the previous run
        from harness.distributed import between_runs

        between_runs(suite.distributed.eval_timeout_s)
    tags = {"polymoo.method": spec.display, "polymoo.method_name": spec.name, "polymoo.model": model_name,
            "polymoo.suite": suite.suite.name, "polymoo.suite_version": suite.suite.version, "polymoo.seed": seed,
            "polymoo.git_commit": git_commit(), "polymoo.config_hash": suite.config_hash(),
            "polymoo.scale": suite.scale, "polymoo.device": "cuda" if torch.cuda.is_available() else "cpu",
            "polymoo.family": method.family, "polymoo.method_version": method.version,
            "polymoo.world_size": dist.world_size, **{f"polymoo.{k}": v for k, v in machine().items()}}
    run_name = f"{model_name}/{spec.display}/seed{seed}"
    tracker: Tracker = (open_run(suite, run_name, tags, run_dir, resume, accept_changes=resume_changed)
                        if dist.is_main else NullTracker())
    try:
        with _killed_on_sigterm(dist):
            return _train_evaluate_record(suite, model_name, spec, seed, method, options, run_dir, tracker, dist,
                                          resume)
    except (Terminated, KeyboardInterrupt):  # a stop asked for (SIGTERM, Ctrl-C), not a failure
        tracker.finish("KILLED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise


@contextmanager
def _killed_on_sigterm(dist: DistInfo) -> Iterator[None]:
    """Turn SIGTERM into `Terminated` (and Ctrl-C into KeyboardInterrupt), held back while an MLflow write is in
    flight, while a single-process run trains (the distributed path has its own guard)."""
    if dist.world_size > 1:
        yield
        return
    with stops_raised():
        yield


def _train_evaluate_record(suite: Suite, model_name: str, spec: MethodSpec, seed: int, method: Any, options: Any,
                           run_dir: Path, tracker: Tracker, dist: DistInfo, resume: bool) -> RunResult:
    """Build, train, evaluate, record (and write DONE) for one run; the caller ends the MLflow run on failure."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(suite.resolved(), sort_keys=False, allow_unicode=True))
    seed_everything(seed)
    model, tokenizer = load_model(model_name, suite.scale, suite.train.weights_dtype, suite.train.lora, init=suite.init)
    data = load_language_data(suite.data, suite.languages.all)
    log_run_config(tracker, suite, {"run.model": model_name, "run.method": spec.name, "run.seed": seed,
                                    "run.method_options": json.dumps(spec.options, sort_keys=True),
                                    "run.data_fingerprint": data.fingerprint(),
                                    "run.tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
                                    **({"run.initial_weights_fingerprint": weights_fingerprint(model)}
                                       if suite.scale == "tiny" else {}),  # full scale: the hub revision names them
                                    "run.trainable_params": sum(p.numel() for p in model.parameters()
                                                                if p.requires_grad)})
    log_datasets(tracker, suite, data)
    if dist.world_size > 1:  # rank 0 logged the run alone (a slow store can take longer than the training timeout)
        from harness.distributed import between_runs

        if dist.is_main:
            maybe_slow_start()
        between_runs(suite.distributed.eval_timeout_s)
    run = RunContext(suite=suite, method=spec, model_name=model_name, seed=seed, model=model,
                     tokenizer=tokenizer, data=data, run_dir=run_dir, tracker=tracker, dist=dist, resume=resume)
    started = time.perf_counter()
    outcome = method.train(run, options)
    metrics = dict(outcome.metrics)
    metrics["perf/train_time_s"] = time.perf_counter() - started
    if dist.is_main:
        if suite.train.save_model:  # before evaluation: a failed or stopped evaluation keeps the trained weights
            save_final(outcome.model, tokenizer, run_dir / "final")
        maybe_slow_evaluation()
        metrics |= evaluate_model(suite, outcome.model, tokenizer, data, run_dir / "eval", tracker)
        tracker.log_final_metrics(metrics, step=suite.train.steps)
        from harness.evaluate.run_plots import log_run_plots

        log_run_plots(tracker, suite, metrics, run_dir / "plots")
        environment = {**machine(), "git_commit": git_commit()}  # a record names where it ran (lab_report)
        (run_dir / "DONE").write_text(json.dumps({"run_id": tracker.run_id, "metrics": metrics,
                                                  "environment": environment}))
        run.drop_checkpoints()
    tracker.finish("FINISHED")
    return RunResult(model_name, spec.display, seed, tracker.run_id, "FINISHED", metrics)


def save_final(model: Any, tokenizer: Any, final: Path) -> None:
    """The trained weights and tokenizer, written into a sibling folder and renamed into place: ``final/`` is
    complete or absent, never half written."""
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def log_datasets(tracker: Tracker, suite: Suite, data: Any) -> None:
    """The run's data as MLflow dataset inputs (training and evaluation), digest = the harness's data fingerprint."""
    digest = data.fingerprint()
    cfg = suite.data
    source = {"source": cfg.source, "path": cfg.path, "split": cfg.split, "heldout_fraction": cfg.heldout_fraction,
              "max_examples_per_language": cfg.max_examples_per_language}
    for split, rows, context in (("train", data.train, "training"), ("heldout", data.heldout, "evaluation")):
        profile = {"fingerprint": digest, "examples": {lang: len(v) for lang, v in sorted(rows.items())}}
        tracker.log_dataset(f"{cfg.source}/{split}", digest, source, profile, context)


def describe_results(results: list[RunResult]) -> list[dict[str, Any]]:
    return [{"model": r.model, "method": r.method, "seed": r.seed, "status": r.status, "run_id": r.run_id} for r in results]
