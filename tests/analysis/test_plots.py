"""Plots: each writes a PNG from plain data and returns None (never raises) when there is nothing to draw."""

from __future__ import annotations

import math

import pytest

from harness import plots
from harness.leaderboard.aggregate import Cell, Row, Table


def _table():
    langs = ["en", "fr", "sw"]
    keys = [*langs, "seen_mean", "unseen_mean"]

    def row(method, base):
        return Row("llama", method, 2, {k: Cell([base + i * 0.01, base + i * 0.02], ["0", "1"]) for i, k in enumerate(keys)})

    return Table("acc", langs, keys, [row("joint_sft", 0.3), row("bkmoo-mgda", 0.35), row("pcgrad", 0.2)])


def _png(path):
    assert path is not None and path.exists() and path.read_bytes()[:4] == b"\x89PNG"


def test_score_bars_and_pareto(tmp_path):
    table = _table()
    _png(plots.score_bars(table, tmp_path / "bars.png"))
    _png(plots.pareto_scatter(table, "en", "sw", tmp_path / "pareto.png"))
    assert plots.pareto_scatter(table, "en", "xx", tmp_path / "none.png") is None


def test_pareto_front():
    pts = [(1, 1), (2, 0.5), (0.5, 2), (0.4, 0.4), (math.nan, 3)]
    assert plots.pareto_front(pts) == [0, 1, 2]


def test_training_curves(tmp_path):
    hist = {"joint_sft": {"en": [[(1, 3.0), (2, 2.5)], [(1, 3.2), (2, 2.7)]], "fr": [[(1, 3.1), (2, 2.9)]]},
            "pcgrad": {"en": [[(1, 3.0), (2, 2.4)]]}}
    assert plots.mean_series(hist["joint_sft"]["en"]) == [(1, pytest.approx(3.1)), (2, pytest.approx(2.6))]
    _png(plots.training_curves(hist, tmp_path / "curves.png"))
    assert plots.training_curves({}, tmp_path / "none.png") is None


def test_conflict_heatmap_robust_to_absence(tmp_path):
    _png(plots.conflict_heatmap({"en-fr": [(1, 0.2), (2, -0.3)], "en-sw": [(1, -0.5)]}, tmp_path / "heat.png"))
    assert plots.conflict_heatmap({}, tmp_path / "none.png") is None
    assert plots.conflict_heatmap({"en-fr": []}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_separability_curves(tmp_path):
    res = {"before": {"probe_acc": [0.3, 0.5], "silhouette": [0.0, 0.1]},
           "after": {"probe_acc": [0.4, 0.9], "silhouette": [0.1, 0.4]}}
    _png(plots.separability_curves(res, tmp_path / "sep.png", chance=0.25))
