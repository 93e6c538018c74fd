"""Collect: a suite's finished training runs from the MLflow store, as a pandas table (one row per run, columns
`tags.polymoo.*`, `params.*` and `metrics.*`), the latest run of every (model, method, seed, world size, settings):
a run with other settings is a row of its own, never a rerun (`harness.leaderboard.settings`).

MLflow itself is reached through `harness.tracking` only.
"""

from __future__ import annotations

from typing import Any

from harness.leaderboard.settings import SETTINGS_COL, with_settings

WORLD_TAG = "tags.polymoo.world_size"


def latest_per_seed(runs: Any) -> Any:
    """Keep the latest run of every (model, method, seed, world size, settings hash): a rerun with the same settings
    supersedes, it does not add a seed; a run with other settings supersedes nothing."""
    cols = ["tags.polymoo.model", "tags.polymoo.method", "tags.polymoo.seed"]
    if WORLD_TAG in runs.columns:
        cols.append(WORLD_TAG)
    if len(runs) == 0 or not all(c in runs.columns for c in cols) or "start_time" not in runs.columns:
        return runs
    runs = with_settings(runs)
    return runs.sort_values("start_time", kind="stable").drop_duplicates([*cols, SETTINGS_COL], keep="last").sort_index()


def fetch_runs(experiment: str, uri: str | None = None, latest_only: bool = True) -> Any:
    """Finished training runs of an experiment (runs tagged `polymoo.kind`, e.g. reports, are left out; with
    `latest_only`, the latest run of every (model, method, seed))."""
    from harness.tracking import search_runs

    runs = search_runs(experiment, uri, filter_string="attributes.status = 'FINISHED'")
    if len(runs) and "tags.polymoo.kind" in runs.columns:
        runs = runs[runs["tags.polymoo.kind"].isna()]
    if len(runs) and "tags.polymoo.model" in runs.columns:
        runs = runs[runs["tags.polymoo.model"].notna()]
    return latest_per_seed(runs) if latest_only else runs


def suite_runs(suite: Any) -> Any:
    """The finished training runs of `suite`: its experiment, its name and its `suite.version` (runs of an older
    version, whose numbers the version bump says are not comparable, are left out), the latest per seed."""
    from harness.tracking import experiment_name

    runs = fetch_runs(experiment_name(suite), suite.tracking.uri, latest_only=False)
    if len(runs) and "tags.polymoo.suite" in runs.columns:
        runs = runs[runs["tags.polymoo.suite"] == suite.suite.name]
    if len(runs) and "tags.polymoo.suite_version" in runs.columns:
        runs = runs[runs["tags.polymoo.suite_version"].astype(str) == str(suite.suite.version)]
    if len(runs) == 0:
        raise ValueError(f"no finished runs of suite {suite.suite.name!r} version {suite.suite.version} in MLflow; "
                         "run it first")
    return latest_per_seed(runs)
