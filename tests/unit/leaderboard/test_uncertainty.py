"""Uncertainty in the leaderboard: mean ± standard error over seeds with the seed count n, lm-eval's standard error
over items next to it, and the chance level of multiple-choice scores, in markdown, CSV and HTML."""

from __future__ import annotations

import csv
import io
import math
import statistics

import pytest

from harness.leaderboard.aggregate import Cell, aggregate
from harness.leaderboard.render import to_csv, to_html, to_markdown

ACC = {"joint_sft": [0.30, 0.35, 0.40], "pcgrad": [0.50, 0.52, 0.57]}
ITEM_SE = {"joint_sft": [0.070, 0.072, 0.074], "pcgrad": [0.080, 0.080, 0.080]}


def _runs(with_se: bool = True):
    import pandas as pd

    rows = []
    for method, values in ACC.items():
        for seed, acc in enumerate(values):
            run = {"tags.polymoo.model": "llama", "tags.polymoo.method": method, "tags.polymoo.seed": str(seed),
                   "metrics.eval/acc/en": acc, "metrics.eval/acc/seen_mean": acc,
                   "start_time": pd.Timestamp(10 * seed + len(rows), unit="s")}
            if with_se:
                run |= {"metrics.eval/acc/en/stderr": ITEM_SE[method][seed], "metrics.eval/acc/en/chance": 0.25,
                        "metrics.eval/acc/seen_mean/stderr": ITEM_SE[method][seed],
                        "metrics.eval/acc/seen_mean/chance": 0.25}
            rows.append(run)
    return pd.DataFrame(rows)


def test_cell_standard_error_and_format():
    c = Cell([0.3, 0.35, 0.4], ["0", "1", "2"], [0.07, 0.072, 0.074])
    assert c.n == 3
    assert c.sem == pytest.approx(statistics.stdev([0.3, 0.35, 0.4]) / math.sqrt(3))
    assert c.item_stderr == pytest.approx(0.072)
    assert c.fmt() == "0.350 ± 0.029 [0.072]"
    assert c.fmt(row_n=4) == "0.350 ± 0.029 [0.072] (n=3)"  # a seed of the row lacks this value
    one = Cell([0.3], ["0"])
    assert math.isnan(one.sem) and one.fmt() == "0.300"  # one seed: no spread to show
    assert Cell().fmt() == "—" and math.isnan(Cell().item_stderr)


def test_stderr_and_chance_are_read_next_to_the_score_not_as_languages():
    table = aggregate(_runs(), "acc")
    assert table.languages == ["en"] and table.columns == ["en", "seen_mean"]
    assert table.chance == {"en": 0.25, "seen_mean": 0.25}
    pc = next(r for r in table.rows if r.method == "pcgrad")
    assert pc.cells["en"].item_stderr == pytest.approx(0.08)
    assert pc.cells["en"].sem == pytest.approx(statistics.stdev(ACC["pcgrad"]) / math.sqrt(3))


def test_markdown_shows_se_n_item_se_and_a_chance_line():
    md = to_markdown(aggregate(_runs(), "acc"))
    lines = md.splitlines()
    assert lines[0].startswith("| model | method | n | en | seen |")
    pc = next(line for line in lines if "| pcgrad |" in line)
    assert "| 3 | 0.530 ± 0.021 [0.080] |" in pc
    chance = next(line for line in lines if line.startswith("| chance |"))
    assert chance.split("|")[4:6] == [" 0.250 ", " 0.250 "]
    assert len(chance.split("|")) == len(lines[0].split("|"))
    assert "standard error over seeds" in md and "lm-eval's standard error" in md and "chance" in md


def test_without_lm_eval_stderr_or_chance_nothing_is_invented():
    table = aggregate(_runs(with_se=False), "acc")
    md = to_markdown(table)
    assert not table.chance and "| chance |" not in md and "[" not in md.split("\n\n")[0]


def test_csv_and_html_carry_the_same():
    table = aggregate(_runs(), "acc")
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    pc = next(r for r in rows if r["method"] == "pcgrad")
    assert float(pc["en_sem"]) == pytest.approx(table.rows[1].cells["en"].sem)
    assert pc["en_n"] == "3" and float(pc["en_item_se"]) == pytest.approx(0.08)
    assert float(pc["en_chance"]) == 0.25 and float(pc["seen_mean_chance"]) == 0.25
    page = to_html(table, "t")
    assert "<tfoot><tr class=chance><td>chance</td>" in page  # below the sortable body: sorting never moves it
    assert "0.530 ± 0.021 [0.080]" in page
