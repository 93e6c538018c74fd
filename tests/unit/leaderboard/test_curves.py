"""Δ-vs-joint-SFT training curves: paired by model, seed and suite settings, averaged over seeds with a
standard-error band; and their plot."""

from __future__ import annotations

import math
import statistics

import pytest

from harness import plots
from harness.leaderboard.curves import ALL, RunCurves, band, delta_curves, difference, language_mean


def _run(method, seed, en, fr=None, *, model="llama", shared="s1", config=None):
    series = {"en": list(enumerate(en, 1))}
    if fr is not None:
        series["fr"] = list(enumerate(fr, 1))
    return RunCurves(model, method, str(seed), shared, config or f"{method}-{shared}", series)


RUNS = [
    _run("joint_sft", 0, [3.0, 2.0, 1.0], [4.0, 3.0, 2.0]),
    _run("joint_sft", 1, [3.2, 2.2, 1.2], [4.2, 3.2, 2.2]),
    _run("pcgrad", 0, [3.0, 1.8, 0.9], [4.0, 2.9, 1.9]),
    _run("pcgrad", 1, [3.2, 1.9, 0.8], [4.2, 3.0, 2.0]),
    _run("pcgrad", 2, [9.0, 9.0, 9.0], [9.0, 9.0, 9.0]),  # no joint_sft at seed 2: left out, not compared
    _run("mgda", 0, [9.0, 9.0, 9.0], shared="s2"),  # other suite settings than joint_sft's: no curve
]


def test_pieces():
    assert difference([(1, 3.0), (2, 2.0), (4, 1.0)], [(1, 1.0), (2, 1.5), (3, 0.0)]) == [(1, 2.0), (2, 0.5)]
    assert language_mean({"en": [(1, 1.0), (2, 2.0)], "fr": [(2, 4.0)]}) == [(2, 3.0)]
    b = band([[(1, 1.0), (2, 2.0)], [(1, 3.0), (2, 2.0)]])
    assert b[0] == (1, 2.0, pytest.approx(statistics.stdev([1.0, 3.0]) / math.sqrt(2)), 2)
    assert b[1][2] == 0.0
    assert math.isnan(band([[(1, 1.0)]])[0][2])  # one seed: no band


def test_delta_curves_pair_by_seed_and_settings():
    out = delta_curves(RUNS)
    assert set(out) == {"pcgrad"}, "mgda ran with other settings than joint_sft: no curve against it"
    en = out["pcgrad"]["en"]
    # seed 0: (0, -0.2, -0.1); seed 1: (0, -0.3, -0.4); the seed-2 run has no partner
    assert [s for s, *_ in en] == [1, 2, 3]
    assert [m for _, m, _, _ in en] == [pytest.approx(0.0), pytest.approx(-0.25), pytest.approx(-0.25)]
    assert en[2][2] == pytest.approx(statistics.stdev([-0.1, -0.4]) / math.sqrt(2))
    assert all(n == 2 for *_, n in en)
    both = out["pcgrad"][ALL]  # mean over en and fr, differenced, then over seeds
    assert both[1][1] == pytest.approx(statistics.fmean([(-0.2 - 0.1) / 2, (-0.3 - 0.2) / 2]))


def test_several_models_and_settings_get_distinct_labels():
    runs = [*RUNS[:4], _run("joint_sft", 0, [1.0], model="qwen3"), _run("pcgrad", 0, [0.5], model="qwen3"),
            _run("pcgrad", 0, [2.0, 1.0, 0.0], config="other-options")]
    out = delta_curves(runs)
    assert set(out) == {"pcgrad (llama) [other-op]", "pcgrad (llama) [pcgrad-s]", "pcgrad (qwen3)"}
    assert out["pcgrad (qwen3)"]["en"] == [(1, -0.5, pytest.approx(math.nan, nan_ok=True), 1)]


def test_world_sizes_pair_with_their_own_reference():
    runs = [_run("joint_sft (N=2)", 0, [2.0]), _run("bkmoo (N=2)", 0, [1.5]),
            _run("joint_sft (N=4)", 0, [3.0]), _run("bkmoo (N=4)", 0, [2.0])]
    out = delta_curves(runs)
    assert out["bkmoo (N=2)"]["en"][0][1] == pytest.approx(-0.5)
    assert out["bkmoo (N=4)"]["en"][0][1] == pytest.approx(-1.0)


def test_delta_plot(tmp_path):
    path = plots.delta_curves(delta_curves(RUNS), tmp_path / "delta.png")
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"
    assert plots.delta_curves({}, tmp_path / "none.png") is None
    assert plots.delta_curves({"pcgrad": {"en": []}}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
