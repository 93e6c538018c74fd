"""harness.reproduce.lab: lab claims read and checked, the worst-language answer loss per run from an MLflow frame,
paired verdicts in both directions, and the lab claim files of both papers."""

from __future__ import annotations

import fnmatch

import pandas as pd
import pytest

from harness.reproduce.claims import Measurement
from harness.reproduce.lab import (
    CONTRADICTED,
    HOLDS,
    NO_DIFFERENCE,
    NOT_MEASURED,
    evaluate_lab_claims,
    lab_claims_file,
    lab_markdown,
    load_lab_claims,
    worst_answer_loss,
)

LANGS = ("lab1", "lab3")


def _runs(rows):
    return pd.DataFrame([{"tags.polymoo.method": m, "tags.polymoo.seed": str(s), "metrics.eval/answer_loss/lab1": a,
                          "metrics.eval/answer_loss/lab3": b} for m, s, a, b in rows])


def _claims(expect="lower"):
    return {"alpha": 0.01, "claims": [{"id": "c", "claim": "x", "methods": ["m*"], "versus": "base", "expect": expect},
                                      {"id": "none", "claim": "y", "methods": ["absent"], "versus": "base",
                                       "expect": "lower"}]}


def test_worst_answer_loss_takes_the_largest_language():
    stat = worst_answer_loss(_runs([("base", 0, 0.2, 1.0), ("base", 1, 1.5, 0.5)]), LANGS)
    assert stat == {"base": {0: 1.0, 1: 1.5}}
    assert worst_answer_loss(_runs([("base", 0, 0.2, 1.0)]), ("lab1", "lab9")) == {}


@pytest.mark.parametrize(("shift", "expect", "verdict"), [(-0.5, "lower", HOLDS), (0.5, "lower", CONTRADICTED),
                                                          (0.5, "higher", HOLDS), (0.0, "lower", NO_DIFFERENCE)])
def test_paired_verdicts(shift, expect, verdict):
    noise = [0.01, -0.02, 0.015, -0.005, 0.0]
    rows = [("base", s, 0.1, 1.0 + 0.1 * s) for s in range(5)]
    rows += [("m1", s, 0.1, 1.0 + 0.1 * s + shift + (noise[s] if shift else 0.3 * (-1) ** s)) for s in range(5)]
    out = evaluate_lab_claims(_claims(expect), _runs(rows), LANGS)
    assert out[0].verdict == verdict and out[0].comparisons[0].n == 5
    assert out[0].comparisons[0].mean_diff == pytest.approx(shift if shift else 0.06)
    assert out[1].verdict == NOT_MEASURED and "absent" in out[1].note
    assert f"**{verdict}**" in "\n".join(lab_markdown(out, 0.01))


def test_separability_claim_by_direction():
    claims = {"claims": [{"id": "s", "claim": "x", "kind": "separability", "expect": "higher"}]}
    up = {"probe_acc": [Measurement("llama", "joint_sft", 0.2, "base model", seeds=1)]}
    assert evaluate_lab_claims(claims, _runs([]), LANGS, up)[0].verdict == HOLDS
    down = {"probe_acc": [Measurement("llama", "joint_sft", -0.2, "base model", seeds=1)]}
    assert evaluate_lab_claims(claims, _runs([]), LANGS, down)[0].verdict == CONTRADICTED
    assert evaluate_lab_claims(claims, _runs([]), LANGS, None)[0].verdict == NOT_MEASURED


def test_bad_claims_are_named(tmp_path):
    path = tmp_path / "x_lab.yaml"
    path.write_text("claims:\n  - {id: a, claim: b, methods: [m], versus: base, expect: sideways}\n")
    with pytest.raises(ValueError, match=r"claims\[0\].expect"):
        load_lab_claims(path)
    with pytest.raises(FileNotFoundError):
        load_lab_claims(tmp_path / "missing.yaml")


@pytest.mark.parametrize("paper", ["bkmoo", "congrad"])
def test_lab_claim_files_name_the_lab_suites_methods(paper):
    from harness.reproduce.run import load_paper_suite

    claims = load_lab_claims(lab_claims_file(paper))
    labels = {m.display for m in load_paper_suite(paper, "lab").methods}
    for c in claims["claims"]:
        if c.get("kind", "paired") == "paired":
            assert c["versus"] in labels, c["id"]
            assert any(fnmatch.fnmatchcase(label, p) for p in c["methods"] for label in labels), c["id"]
