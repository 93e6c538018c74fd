"""Leaderboards built from the MLflow store alone: one row per (model, method, settings), per-language columns,
seen / unseen averages, mean ± standard error over seeds with the seed count n, lm-eval's standard error over items,
the chance level of multiple-choice scores, Δ against joint SFT of the same model and settings with a significance
test over seeds, and the communication / step-time / memory columns where they were measured; markdown, CSV and a
self-contained sortable HTML page, plots (scores with the chance line, training loss minus joint SFT's), written
under `results/leaderboards/` and logged to MLflow.

Split by job:

- `collect`: the finished training runs of a suite or experiment, read from MLflow (through `harness.tracking`);
- `settings`: which runs share settings (hashes of the logged config params), so none is merged, superseded or
  compared across settings silently;
- `aggregate`: a runs table → `Table` (group by model, method and settings, mean ± s.e., Δ vs joint SFT, significance);
- `curves`: per-step training loss minus joint SFT's, paired by seed, averaged with a standard-error band;
- `render`: `Table` → markdown, CSV, HTML, the console, and the three files;
- `publish`: the whole chain for a suite, the plots, and logging the files to MLflow (`<experiment>/reports`).

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
from harness.leaderboard.curves import RunCurves, delta_curves, run_curves
from harness.leaderboard.publish import log_files, publish, title_for, write_plots
from harness.leaderboard.render import render, to_csv, to_html, to_markdown, write_all
from harness.leaderboard.settings import with_settings

__all__ = [
    "ALPHA", "GROUPS", "MIN_SEEDS_FOR_TEST", "PERF_COLUMNS", "REFERENCE_METHOD", "WORLD_TAG",
    "Cell", "Row", "RunCurves", "SigTest", "Table", "aggregate", "delta_curves", "fetch_runs", "latest_per_seed",
    "log_files", "publish", "render", "run_curves", "significance", "suite_runs", "title_for", "to_csv", "to_html",
    "to_markdown", "with_settings", "write_all", "write_plots",
]
