"""Publish: a suite's leaderboard end to end (collect → aggregate → render to files) and logged to MLflow, in
`<experiment>/reports`, an experiment of its own so reports never mix with the training runs a leaderboard reads.
`log_files` is shared with `polymoo reproduce`, which logs its report folder the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.leaderboard.aggregate import Table, aggregate
from harness.leaderboard.collect import suite_runs
from harness.leaderboard.render import write_all


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


def publish(suite: Any, metric: str = "acc", out_dir: Path = Path("results/leaderboards"), log: bool = True,
            runs: Any = None) -> tuple[Table, dict[str, Path]]:
    """Aggregate a suite's runs, write md/csv/html under `out_dir` and log them to MLflow."""
    from harness.tracking import experiment_name

    runs = suite_runs(suite) if runs is None else runs
    table = aggregate(runs, metric, language_order=suite.languages.all)
    paths = write_all(table, out_dir, f"{suite.suite.name}_{metric}", title_for(suite, metric))
    if log:
        log_files(paths, experiment_name(suite), f"leaderboard/{metric}", suite.tracking.uri,
                  {"polymoo.suite": suite.suite.name})
    return table, paths
