"""Per-run plots, for the runner to log after evaluation (one call; never fails a run):

    from harness.evaluate.run_plots import log_run_plots
    log_run_plots(tracker, suite, metrics, run_dir / "plots")

Draws the run's per-language eval scores, its per-language training curves (`train/loss/<lang>` history) and,
when the method logged them, its conflict heatmap (`moo/cos/<a>-<b>`), and logs the PNGs under `plots/`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from harness.config import Suite

log = logging.getLogger(__name__)


def _history(tracker: Any, prefix: str, keys: list[str]) -> dict[str, list[tuple[int, float]]]:
    out = {}
    for key in keys:
        hist = tracker.client.get_metric_history(tracker.run_id, key)
        if hist:
            out[key.removeprefix(prefix)] = sorted((m.step, m.value) for m in hist)
    return out


def run_plots(tracker: Any, suite: Suite, metrics: dict[str, float], out_dir: Path) -> list[Path]:
    from harness import plots
    from harness.leaderboard import Cell, Row, Table

    langs = list(suite.languages.all)
    made: list[Path | None] = []
    for metric in ("acc", "loss"):
        keys = [k for k in [*langs, "seen_mean", "unseen_mean"] if f"eval/{metric}/{k}" in metrics]
        if keys:
            row = Row("", suite.methods[0].display if len(suite.methods) == 1 else "run", 1,
                      {k: Cell([metrics[f"eval/{metric}/{k}"]], ["0"]) for k in keys})
            chance = {k: metrics[f"eval/{metric}/{k}/chance"] for k in keys if f"eval/{metric}/{k}/chance" in metrics}
            table = Table(metric, [k for k in keys if k in langs], keys, [row], chance=chance)
            made.append(plots.score_bars(table, out_dir / f"eval_{metric}.png"))
    if tracker.client is not None:
        data = tracker.client.get_run(tracker.run_id).data.metrics
        loss = _history(tracker, "train/loss/", [k for k in data if k.startswith("train/loss/")])
        made.append(plots.training_curves({"this run": {k: [v] for k, v in loss.items()}}, out_dir / "training_curves.png"))
        cos = _history(tracker, "moo/cos/", [k for k in data if k.startswith("moo/cos/")])
        made.append(plots.conflict_heatmap(cos, out_dir / "conflict_heatmap.png"))
    return [p for p in made if p is not None]


def log_run_plots(tracker: Any, suite: Suite, metrics: dict[str, float], out_dir: Path) -> list[Path]:
    """run_plots + log them as artifacts; a plotting problem is logged as a warning, never raised."""
    try:
        paths = run_plots(tracker, suite, metrics, out_dir)
        for p in paths:
            tracker.log_artifact(p, "plots")
        return paths
    except Exception as err:  # plots are a convenience: a run must not fail because of one
        log.warning("polymoo: per-run plots skipped: %s", err)
        return []
