"""Publish: a suite's leaderboard end to end (collect → aggregate → render to files, with its plots) and logged to
MLflow, in `<experiment>/reports`, an experiment of its own so reports never mix with the training runs a leaderboard
reads. `log_files` is shared with `polymoo reproduce`, which logs its report folder the same way."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from harness.leaderboard.aggregate import Table, aggregate
from harness.leaderboard.collect import suite_runs
from harness.leaderboard.render import write_all

log = logging.getLogger(__name__)


def title_for(suite: Any, metric: str) -> str:
    return f"polymoo leaderboard — {suite.suite.name} (eval/{metric})"


def log_files(paths: dict[str, Path] | list[Path] | Path, experiment: str, run_name: str, uri: str | None = None,
              tags: dict[str, str] | None = None, artifact_dir: str = "leaderboard") -> str:
    """Log files (or a whole folder) as artifacts of a fresh run in `<experiment>/reports`, an experiment of
    its own so reports never mix with the training runs a leaderboard reads."""
    from harness.tracking import Tracker, client, ensure_experiment

    c = client(uri)
    exp = ensure_experiment(c, f"{experiment}/reports")
    run = c.create_run(exp, run_name=run_name, tags={"polymoo.kind": "report", **(tags or {})})
    tracker = Tracker(c, run.info.run_id)
    if isinstance(paths, Path):
        c.log_artifacts(run.info.run_id, str(paths), artifact_dir)
    else:
        for p in (paths.values() if isinstance(paths, dict) else paths):
            tracker.log_artifact(p, artifact_dir)
    tracker.finish("FINISHED")
    return run.info.run_id


def write_plots(table: Table, runs: Any, out_dir: Path, stem: str, uri: str | None = None) -> dict[str, Path]:
    """`<stem>_scores.png` (bars with standard errors and the chance line) and `<stem>_training_delta.png` (training
    loss minus the reference's, paired by seed); a plot that cannot be drawn is skipped with a warning, never raised."""
    from harness import plots
    from harness.leaderboard.curves import delta_curves, run_curves

    out: dict[str, Path] = {}
    try:
        bars = plots.score_bars(table, out_dir / f"{stem}_scores.png")
        if bars is not None:
            out["scores"] = bars
        if "run_id" in runs.columns:
            deltas = delta_curves(run_curves(runs, "train/loss/", uri), table.reference)
            curves = plots.delta_curves(deltas, out_dir / f"{stem}_training_delta.png", table.reference)
            if curves is not None:
                out["training_delta"] = curves
    except Exception as err:  # plots are a view of the table: a leaderboard must not fail because of one
        log.warning("polymoo: leaderboard plots skipped: %s", err)
    return out


def publish(suite: Any, metric: str = "acc", out_dir: Path = Path("results/leaderboards"), log: bool = True,
            runs: Any = None) -> tuple[Table, dict[str, Path]]:
    """Aggregate a suite's runs, write md/csv/html and the plots under `out_dir` and log them to MLflow."""
    from harness.tracking import experiment_name

    runs = suite_runs(suite) if runs is None else runs
    table = aggregate(runs, metric, language_order=suite.languages.all)
    paths = write_all(table, out_dir, f"{suite.suite.name}_{metric}", title_for(suite, metric))
    paths |= write_plots(table, runs, out_dir, f"{suite.suite.name}_{metric}", suite.tracking.uri)
    if log:
        log_files(paths, experiment_name(suite), f"leaderboard/{metric}", suite.tracking.uri,
                  {"polymoo.suite": suite.suite.name})
    return table, paths
