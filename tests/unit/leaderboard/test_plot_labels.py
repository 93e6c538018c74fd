"""Readable plots: Pareto labels never overprint one another (even on coincident points, as at tiny scale), the
chance level is drawn, and error bars are standard errors."""

from __future__ import annotations

import itertools

import pytest

from harness import plots
from harness.leaderboard.aggregate import Cell, Row, Table


def _overlap(a, b, gap=0.0):
    (ax, ay), (aw, ah) = a
    (bx, by), (bw, bh) = b
    return abs(ax - bx) < (aw + bw) / 2 + gap - 1e-9 and abs(ay - by) < (ah + bh) / 2 + gap - 1e-9


@pytest.mark.parametrize("anchors", [
    [(100.0, 100.0)] * 8,  # eight methods with the same score: the quickstart today
    [(100.0 + i, 100.0 + (i % 2)) for i in range(12)],  # a tight cluster
    [(10.0, 10.0), (300.0, 300.0), (12.0, 11.0)],  # far apart and nearly coincident
    [],
])
def test_spread_labels_never_overlap(anchors):
    sizes = [(14.0 + 3 * (i % 3), 10.0) for i in range(len(anchors))]
    centres = plots.spread_labels(anchors, sizes, gap=1.0)
    assert len(centres) == len(anchors)
    boxes = list(zip(centres, sizes, strict=True))
    assert not [(i, j) for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2) if _overlap(a, b)]
    assert plots.spread_labels(anchors, sizes, gap=1.0) == centres  # deterministic


def test_spread_labels_falls_back_to_a_column():
    anchors, sizes = [(0.0, 0.0)] * 5, [(10.0, 10.0)] * 5
    centres = plots.spread_labels(anchors, sizes, iters=0)  # no sweep at all: the column fallback
    boxes = list(zip(centres, sizes, strict=True))
    assert not any(_overlap(a, b) for a, b in itertools.combinations(boxes, 2))


def _table(n_rows=8, same=True):
    keys = ["en", "sw", "seen_mean", "unseen_mean"]
    rows = []
    for i in range(n_rows):
        base = 0.30 if same else 0.30 + 0.001 * i
        rows.append(Row("llama", f"method{i}", 3, {k: Cell([base, base + 0.01, base + 0.02], ["0", "1", "2"])
                                                   for k in keys}))
    return Table("acc", ["en", "sw"], keys, rows, chance={"en": 0.25, "sw": 0.25, "seen_mean": 0.25})


def test_placed_labels_do_not_overlap_in_the_figure():
    plt = plots._plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    points = [(0.3, 0.3)] * 6 + [(0.3005, 0.3002)] * 4
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    artists = plots.place_labels(ax, points, [str(i) for i in range(1, len(points) + 1)])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [a.get_window_extent(renderer) for a in artists]
    hits = [(i, j) for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2) if a.overlaps(b)]
    plt.close(fig)
    assert not hits, f"labels overprint: {hits}"


def test_pareto_and_bars_with_chance_level(tmp_path):
    for same in (True, False):
        path = plots.pareto_scatter(_table(same=same), "seen_mean", "unseen_mean", tmp_path / f"p{same}.png")
        assert path is not None and path.read_bytes()[:4] == b"\x89PNG"
    bars = plots.score_bars(_table(3), tmp_path / "bars.png")
    assert bars is not None and bars.read_bytes()[:4] == b"\x89PNG"
    assert plots.pareto_scatter(_table(), "en", "xx", tmp_path / "none.png") is None
