"""Golden per-step loss trajectories of every registered gradient method on the tiny llama twin (seed 0, 10 steps),
compared at rtol 1e-4 with ``results/golden/<label>.json``. Re-record deliberately with
``nox -s record_golden -- "<reason>"`` (``python -m tests.golden.record "<reason>"``)."""

from __future__ import annotations

import json

import pytest

from tests.golden.cases import CASES, INPUT_NAMES, STEPS, golden_inputs, golden_path, golden_verdict, run_case
from tests.methods._tiny import gradient_methods


def test_every_registered_gradient_method_has_a_golden_case_and_file():
    covered = {name for name, _ in CASES.values()}
    missing_case = sorted(set(gradient_methods()) - covered)
    assert not missing_case, f"add a golden case to tests/golden/cases.py for {missing_case} and record it"
    missing_file = [label for label in CASES if not golden_path(label).exists()]
    assert not missing_file, f"no golden file for {missing_file}: nox -s record_golden -- '<reason>'"


@pytest.mark.parametrize("label", CASES)
def test_golden_records_are_complete(label):
    if not golden_path(label).exists():
        pytest.fail(f"{golden_path(label)} missing: nox -s record_golden -- '<reason>'")
    record = json.loads(golden_path(label).read_text())
    name, options = CASES[label]
    assert (record["method"], record["options"]) == (name, options), "the case changed: re-record it"
    assert len(record["loss"]) == STEPS and record["reason"]
    assert set(record["inputs"]) == {*INPUT_NAMES, "versions"} and record["inputs"]["versions"]["torch"]


@pytest.mark.slow
@pytest.mark.parametrize("label", CASES)
def test_loss_trajectory_matches_golden(tmp_path, label):
    if not golden_path(label).exists():
        pytest.fail(f"{golden_path(label)} missing: nox -s record_golden -- '<reason>'")
    record = json.loads(golden_path(label).read_text())
    verdict = golden_verdict(label, record, golden_inputs(label), run_case(label, tmp_path))
    if verdict:
        pytest.fail(verdict, pytrace=False)
