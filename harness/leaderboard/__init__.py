"""Leaderboards built from the MLflow store alone: one row per (model, method), per-language columns,
seen / unseen averages, mean ± std over seeds, Δ against joint SFT with a significance test over seeds,
and the communication / step-time / memory columns where they were measured; markdown, CSV and a
self-contained sortable HTML page, written under `results/leaderboards/` and logged to MLflow.

Split by job:

- `collect`: the finished training runs of a suite or experiment, read from MLflow (through `harness.tracking`);
- `aggregate`: a runs table → `Table` (group by model and method, mean ± std, Δ vs joint SFT, significance);
- `render`: `Table` → markdown, CSV, HTML, the console, and the three files;
- `publish`: the whole chain for a suite, and logging the files to MLflow (`<experiment>/reports`).

The public names are re-exported here, so `from harness.leaderboard import aggregate` keeps working.
"""

from harness.leaderboard.aggregate import (
    ALPHA,
    GROUPS,
    MIN_SEEDS_FOR_TEST,
    PERF_COLUMNS,
    REFERENCE_METHOD,
    Cell,
    Row,
    SigTest,
    Table,
    aggregate,
    significance,
)
from harness.leaderboard.collect import WORLD_TAG, fetch_runs, latest_per_seed, suite_runs
from harness.leaderboard.publish import log_files, publish, title_for
from harness.leaderboard.render import render, to_csv, to_html, to_markdown, write_all

__all__ = [
    "ALPHA", "GROUPS", "MIN_SEEDS_FOR_TEST", "PERF_COLUMNS", "REFERENCE_METHOD", "WORLD_TAG",
    "Cell", "Row", "SigTest", "Table", "aggregate", "fetch_runs", "latest_per_seed", "log_files", "publish", "render",
    "significance", "suite_runs", "title_for", "to_csv", "to_html", "to_markdown", "write_all",
]
