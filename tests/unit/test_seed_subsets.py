"""harness.analysis.seed_subsets: the paired test on every choice of n seeds from a pool of lab_report results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness.analysis.seed_subsets import analyse, main, pooled, power, some_method, subset_pvalues
from harness.analysis.stats import paired_test

ROOT = Path(__file__).resolve().parents[2]


def _report(seeds, rows, lr=0.01):
    return {"suite": "lab", "config_hash": f"seeds{list(seeds)}", "metric": "eval/answer_loss", "baseline": "joint_sft",
            "data": {"conflict": 0.75}, "train": {"lr": lr},
            "methods": {m: {"seeds": list(seeds), "worst_loss": [values[s] for s in seeds]} for m, values in rows.items()}}


BASE = {s: 1.0 + 0.01 * ((s * 7) % 5) for s in range(8)}
STEADY = {s: BASE[s] + 0.5 + 0.001 * s for s in range(8)}        # always worse by about 0.5: every subset finds it
NOISE = {s: BASE[s] + (0.3 if s % 2 else -0.3) for s in range(8)}  # no effect: few subsets find one


def test_every_subset_is_tested_with_lab_reports_t_test():
    pvalues = subset_pvalues(STEADY, BASE, 5)
    assert len(pvalues) == math.comb(8, 5)
    seeds = (0, 2, 3, 5, 7)
    assert pvalues[seeds] == paired_test([STEADY[s] for s in seeds], [BASE[s] for s in seeds]).p_t


def test_power_counts_the_share_below_alpha_and_names_the_worst_subset():
    steady = power(subset_pvalues(STEADY, BASE, 5), 0.01)
    assert steady.share_below_alpha == 1.0 and steady.worst_p < 0.01
    noise = power(subset_pvalues(NOISE, BASE, 5), 0.01)
    assert noise.share_below_alpha < 0.2 and noise.worst_p > 0.5
    assert noise.worst_p == subset_pvalues(NOISE, BASE, 5)[noise.worst_seeds]


def test_some_method_takes_the_smallest_p_per_subset():
    a = {(0, 1): 0.2, (0, 2): 0.001, (1, 2): 0.5}
    b = {(0, 1): 0.003, (0, 2): 0.4}
    assert some_method({"a": a, "b": b}) == {(0, 1): 0.003, (0, 2): 0.001, (1, 2): 0.5}  # b did not run (1, 2)


def test_analyse_pools_reports_of_disjoint_seed_sets():
    first = _report(range(4), {"joint_sft": BASE, "steady": STEADY, "noise": NOISE})
    second = _report(range(4, 8), {"joint_sft": BASE, "steady": STEADY, "noise": NOISE})
    result = analyse([first, second], size=5, alpha=0.01)
    assert result["seeds"] == list(range(8))
    assert result["methods"]["steady"]["share_below_alpha"] == 1.0
    assert result["methods"]["some method"]["share_below_alpha"] == 1.0
    assert result["methods"]["noise"]["subsets"] == 56


def test_reports_of_other_settings_or_conflicting_seeds_are_refused():
    first = _report(range(4), {"joint_sft": BASE})
    with pytest.raises(ValueError, match="differ in train"):
        pooled([first, _report(range(4, 8), {"joint_sft": BASE}, lr=0.02)])
    changed = _report(range(4), {"joint_sft": {s: v + 1 for s, v in BASE.items()}})
    with pytest.raises(ValueError, match="two different results"):
        pooled([first, changed])
    with pytest.raises(ValueError, match="subsets of 5 seeds from 4"):
        subset_pvalues(STEADY, {s: BASE[s] for s in range(4)}, 5)
    with pytest.raises(ValueError, match="no method shares 5 seeds"):
        analyse([_report(range(4), {"joint_sft": BASE, "steady": STEADY})])


def test_the_recorded_v4_lab_numbers(tmp_path, capsys):
    """The share quoted in docs/interference_lab.md, from the committed v4 records (15 seeds, 3003 subsets)."""
    files = [str(ROOT / "results" / "interference_lab" / f"v4_conflict0.75_seeds{s}.json") for s in ("0-4", "5-9", "10-14")]
    assert main([*files, "--out", str(tmp_path / "s.json")]) == 0
    result = json.loads((tmp_path / "s.json").read_text())
    rows = result["methods"]
    assert rows["cagrad"]["subsets"] == 3003 and rows["cagrad"]["share_below_alpha"] == pytest.approx(0.832, abs=5e-4)
    assert rows["some method"]["share_below_alpha"] == pytest.approx(0.927, abs=5e-4)
    assert rows["some method"]["worst_seeds"] == [1, 2, 3, 4, 12]
    assert "| some method | 3003 |" in capsys.readouterr().out
