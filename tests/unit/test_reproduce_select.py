"""`polymoo reproduce --from-mlflow` reads back only runs made with the suite's current settings."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.reproduce.run import select_runs
from harness.suite import load_suite
from harness.tracking import config_params
from tests.conftest import REPO


def _runs(suite, lr_by_start: dict[int, str]) -> pd.DataFrame:
    params = {f"params.{k}": v for k, v in config_params(suite).items()}
    rows = []
    for start, lr in lr_by_start.items():
        for m in suite.models:
            for spec in suite.methods:
                for seed in suite.seeds:
                    rows.append({**params, "params.train.lr": lr, "start_time": start, "run_id": f"{start}-{m}-{spec.display}-{seed}",
                                 "tags.polymoo.model": m, "tags.polymoo.method": spec.display,
                                 "tags.polymoo.seed": str(seed), "tags.polymoo.scale": suite.scale})
    return pd.DataFrame(rows)


def test_a_later_run_with_other_settings_is_not_read_back():
    suite = load_suite(REPO / "suites" / "quickstart.yaml")
    lr = config_params(suite)["train.lr"]
    picked = select_runs(suite, _runs(suite, {1: lr, 2: "0.5"}))  # the later runs used another learning rate
    assert set(picked["start_time"]) == {1} and len(picked) == len(suite.models) * len(suite.methods) * len(suite.seeds)
    with pytest.raises(ValueError, match="with the suite's current settings"):
        select_runs(suite, _runs(suite, {2: "0.5"}))


def test_settings_that_only_decide_saved_files_do_not_exclude_a_run():
    """`reproduce` saves the final models for separability; runs made without saving them are the same runs."""
    suite = load_suite(REPO / "suites" / "quickstart.yaml")
    params = config_params(suite)
    runs = _runs(suite, {1: params["train.lr"]})
    flipped = "False" if params["train.save_model"] == "True" else "True"
    other_files = runs.assign(**{"params.train.save_model": flipped, "params.train.save_every": "7"})
    assert params["train.save_every"] != "7"
    assert len(select_runs(suite, other_files)) == len(runs)


def test_a_run_with_a_setting_the_suite_leaves_at_its_default_is_not_read_back():
    """`data.answer_vocabulary` at its default is absent from the suite's params; a run that logged it ran another."""
    suite = load_suite(REPO / "suites" / "quickstart.yaml")
    runs = _runs(suite, {1: config_params(suite)["train.lr"]})
    assert "data.answer_vocabulary" not in config_params(suite)
    other = runs.assign(**{"params.data.answer_vocabulary": "separate"})
    with pytest.raises(ValueError, match="with the suite's current settings"):
        select_runs(suite, other)
    moved = runs.assign(**{"params.output_dir": "/elsewhere", "params.suite.description": "edited"})
    assert len(select_runs(suite, moved)) == len(runs)  # where a run was written decides none of its numbers
