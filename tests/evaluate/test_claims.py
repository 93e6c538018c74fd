"""Claim verdicts on synthetic leaderboard tables: the checks at the paper's scale, and the refusals elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.leaderboard.aggregate import Cell, Row, Table
from harness.reproduce.claims import (
    NO_PUBLIC_VALUE,
    NOT_COMPARABLE,
    NOT_MEASURED,
    NOT_REPRODUCED,
    REPRODUCED,
    evaluate_claim,
    load_claims,
)

REPO = Path(__file__).resolve().parents[2]
CLAIMS = {c["id"]: c for c in load_claims(REPO / "results" / "paper" / "bkmoo.yaml")["claims"]}


def _table(gains_seen: dict[str, float], gains_unseen: dict[str, float], mem: dict[str, float] | None = None) -> Table:
    """Two models; joint_sft at 0.50 seen / 0.40 unseen; methods at reference + gain (in points / 100)."""
    keys = ["seen_mean", "unseen_mean", "perf/peak_mem_mb"]
    seeds = ["0", "1", "2"]
    rows = []
    for model in ("llama3.1-8b", "qwen3-8b"):
        def cells(seen, unseen, m):
            return {"seen_mean": Cell([seen - 0.001, seen, seen + 0.001], seeds),
                    "unseen_mean": Cell([unseen - 0.001, unseen, unseen + 0.001], seeds),
                    "perf/peak_mem_mb": Cell([m] * 3, seeds) if m else Cell()}
        rows.append(Row(model, "joint_sft", 3, cells(0.50, 0.40, (mem or {}).get("joint_sft"))))
        for method in gains_seen:
            rows.append(Row(model, method, 3, cells(0.50 + gains_seen[method] / 100, 0.40 + gains_unseen[method] / 100,
                                                    (mem or {}).get(method))))
        if mem and "mgda-global" in mem:
            rows.append(Row(model, "mgda-global", 3, cells(0.5, 0.4, mem["mgda-global"])))
    return Table("acc", [], keys, rows)


def _verdict(claim_id, table, scale="full", sep=None):
    tables = {"primary": table, "acc": table, "perf": table}
    return evaluate_claim(CLAIMS[claim_id], tables, "joint_sft", scale, "full", sep)


def test_seen_gain_range():
    ok = _verdict("seen_gain", _table({"bkmoo-mgda": 2.0, "bkmoo-pcgrad": 1.0}, {"bkmoo-mgda": 1, "bkmoo-pcgrad": 1}))
    assert ok.verdict == REPRODUCED
    assert [m.method for m in ok.measured] == ["bkmoo-mgda", "bkmoo-mgda"]  # best variant per model
    assert ok.measured[0].value == pytest.approx(2.0)
    low = _verdict("seen_gain", _table({"bkmoo-mgda": 0.5}, {"bkmoo-mgda": 1}))
    assert low.verdict == NOT_REPRODUCED
    tiny = _verdict("seen_gain", _table({"bkmoo-mgda": 2.0}, {"bkmoo-mgda": 1}), scale="tiny")
    assert tiny.verdict == NOT_COMPARABLE and "would pass" in tiny.note


def test_unseen_gain_up_to():
    assert _verdict("unseen_gain", _table({"bkmoo-mgda": 2}, {"bkmoo-mgda": 2.6})).verdict == REPRODUCED
    assert _verdict("unseen_gain", _table({"bkmoo-mgda": 2}, {"bkmoo-mgda": 1.0})).verdict == NOT_REPRODUCED


def test_memory_ratio():
    mem = {"bkmoo-mgda": 72_000.0, "mgda-global": 123_000.0}
    res = _verdict("memory", _table({"bkmoo-mgda": 2}, {"bkmoo-mgda": 1}, mem))
    assert res.verdict == REPRODUCED and res.measured[0].value == pytest.approx(72 / 123)
    assert "/ mgda-global 0.585" in res.summary
    same = _verdict("memory", _table({"bkmoo-mgda": 2}, {"bkmoo-mgda": 1}, {"bkmoo-mgda": 1.0, "mgda-global": 1.0}))
    assert same.verdict == NOT_REPRODUCED


def test_not_measured_and_not_public():
    assert _verdict("seen_gain", _table({"pcgrad": 2.0}, {"pcgrad": 1})).verdict == NOT_MEASURED
    assert _verdict("memory", _table({"bkmoo-mgda": 2}, {"bkmoo-mgda": 1})).verdict == NOT_MEASURED
    assert _verdict("per_model_scores", _table({}, {})).verdict == NO_PUBLIC_VALUE


def test_direction_claim_with_value_not_public():
    from harness.reproduce.claims import Measurement

    sep = {"probe_acc": [Measurement("llama3.1-8b", "bkmoo-mgda", 0.1, "base model", seeds=1)]}
    assert _verdict("language_specific_dimensions", _table({}, {}), sep=sep).verdict == REPRODUCED
    sep["probe_acc"][0].value = -0.1
    assert _verdict("language_specific_dimensions", _table({}, {}), sep=sep).verdict == NOT_REPRODUCED
    assert _verdict("language_specific_dimensions", _table({}, {}), scale="tiny", sep=sep).verdict == NOT_COMPARABLE
