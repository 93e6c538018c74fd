"""`polymoo eval CHECKPOINT --suite S`: evaluate a saved model outside training, exactly as the runner does.

Results are written to a fresh folder (built under a temporary name and renamed when complete, so a failed
evaluation never leaves a half-written or overwritten result) and, unless disabled, logged to MLflow as a
run of the experiment `<suite experiment>/eval` (kept apart from the training runs the leaderboard reads).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from harness.config import Suite


def evaluate_checkpoint(checkpoint: str | Path, suite: Suite, out_dir: Path | None = None,
                        extra_tasks: dict[str, str | None] | None = None, log: bool = True) -> tuple[dict[str, float], Path]:
    """(metrics, result folder). Every input problem raises before any model is loaded."""
    from harness.evaluate.checkpoint import load_checkpoint, resolve_checkpoint
    from harness.evaluate.pipeline import check_eval_config, evaluate_model

    folder = resolve_checkpoint(checkpoint)
    check_eval_config(suite, extra_tasks)
    if out_dir is None:
        out_dir = Path("results") / "eval" / suite.suite.name / _slug(folder)
    if out_dir.exists():
        out_dir = out_dir.with_name(f"{out_dir.name}.{time.strftime('%Y%m%d-%H%M%S')}")
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model, tokenizer, folder = load_checkpoint(folder, suite.train.dtype)
    data = None
    if suite.eval.heldout_loss:
        from harness.data.sft import load_language_data

        data = load_language_data(suite.data, suite.languages.all)
    try:
        metrics = evaluate_model(suite, model, tokenizer, data, tmp, None, extra_tasks)
        (tmp / "checkpoint.json").write_text(json.dumps({"checkpoint": str(folder.resolve()),
                                                         "suite": suite.suite.name}, indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tmp.rename(out_dir)
    if log:
        _log(suite, folder, out_dir, metrics)
    return metrics, out_dir


def _slug(folder: Path) -> str:
    parts = [p for p in folder.resolve().parts[-4:] if p not in ("/", "final")]
    return "_".join(parts)


def _log(suite: Suite, folder: Path, out_dir: Path, metrics: dict[str, Any]) -> None:
    from harness.tracking import Tracker, client, ensure_experiment, experiment_name

    c = client(suite.tracking.uri)
    exp = ensure_experiment(c, f"{experiment_name(suite)}/eval")
    run = c.create_run(exp, run_name=f"eval/{_slug(folder)}",
                       tags={"polymoo.kind": "eval", "polymoo.suite": suite.suite.name,
                             "polymoo.checkpoint": str(folder.resolve())})
    tracker = Tracker(c, run.info.run_id)
    tracker.log_metrics(metrics)
    tracker.log_artifact(out_dir / "eval_results.json", "eval")
    tracker.finish("FINISHED")
