"""The leaderboard's worst-seen-language column (`seen_worst`): per run the largest loss / smallest score over the
seen languages the run logged, then mean ± standard error over seeds and a paired test against joint SFT — the
interference lab's statistic (docs/interference_lab.md). Synthetic runs tables, no MLflow."""

from __future__ import annotations

import math
import statistics

import pandas as pd
import pytest
from scipy import stats

from harness.leaderboard.aggregate import WORST, aggregate, with_worst
from harness.leaderboard.render import to_markdown

# per seed: (lab1, lab2, lab3) answer loss; lab3 is the worst for bkmoo, lab1 for joint SFT on seed 2
JOINT = [(0.60, 0.60, 1.30), (0.55, 0.55, 1.28), (1.40, 1.40, 1.29)]
BKMOO = [(0.50, 0.50, 1.60), (0.45, 0.45, 1.70), (0.40, 0.40, 1.55)]


def _runs(seen: str | None = "['lab1', 'lab2', 'lab3']") -> pd.DataFrame:
    rows = []
    for method, values in (("joint_sft", JOINT), ("bkmoo_mgda", BKMOO)):
        for seed, losses in enumerate(values):
            row = {"tags.polymoo.model": "llama", "tags.polymoo.method": method, "tags.polymoo.seed": str(seed)}
            row |= {f"metrics.eval/answer_loss/lab{i + 1}": v for i, v in enumerate(losses)}
            row |= {f"metrics.eval/acc/lab{i + 1}": 1 - v / 2 for i, v in enumerate(losses)}
            row["metrics.eval/answer_loss/seen_mean"] = statistics.fmean(losses)
            if seen is not None:
                row["params.languages.seen"] = seen
            rows.append(row)
    return pd.DataFrame(rows)


def test_worst_is_the_largest_loss_and_the_smallest_score_over_seen_languages():
    runs = _runs()
    loss = with_worst(runs, "answer_loss")[f"metrics.eval/answer_loss/{WORST}"].tolist()
    acc = with_worst(runs, "acc")[f"metrics.eval/acc/{WORST}"].tolist()
    assert loss == [max(v) for v in JOINT + BKMOO]
    assert acc == pytest.approx([1 - max(v) / 2 for v in JOINT + BKMOO])


def test_only_the_seen_languages_count():
    runs = with_worst(_runs("['lab1', 'lab2']"), "answer_loss")
    assert runs[f"metrics.eval/answer_loss/{WORST}"].tolist() == [max(v[:2]) for v in JOINT + BKMOO]


def test_runs_without_seen_languages_get_no_worst_column():
    runs = _runs(seen=None)
    assert f"metrics.eval/answer_loss/{WORST}" not in with_worst(runs, "answer_loss").columns
    assert WORST not in aggregate(runs, "answer_loss").groups


def test_table_tests_the_worst_language_paired_by_seed():
    table = aggregate(_runs(), "answer_loss")
    assert WORST in table.groups
    joint, bkmoo = ({r.method: r for r in table.rows}[m] for m in ("joint_sft", "bkmoo_mgda"))
    worst_joint, worst_bkmoo = [max(v) for v in JOINT], [max(v) for v in BKMOO]
    assert joint.cells[WORST].mean == pytest.approx(statistics.fmean(worst_joint))
    assert joint.cells[WORST].sem == pytest.approx(statistics.stdev(worst_joint) / math.sqrt(3))
    test = bkmoo.tests[WORST]
    assert test.kind == "paired"
    assert test.delta == pytest.approx(statistics.fmean(worst_bkmoo) - statistics.fmean(worst_joint))
    assert test.p == pytest.approx(stats.ttest_rel(worst_bkmoo, worst_joint).pvalue)
    md = to_markdown(table)
    assert "p(seen_worst)" in md and "seen_worst: per run, its worst seen language" in md
