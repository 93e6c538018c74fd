"""harness.analysis.lab_report: worst-language losses paired by seed, from DONE records written by the runner."""

from __future__ import annotations

import json
import re

import pytest

from harness.analysis.lab_report import compare, main, table
from harness.suite import suite_from_data


def _suite(tmp_path):
    return suite_from_data({
        "suite": {"name": "lab"}, "models": ["llama"], "languages": {"seen": ["lab1", "lab3"]},
        "data": {"source": "interference", "conflict": 0.5, "dissenters": ["lab3"]}, "eval": {"tasks": []},
        "methods": [{"name": "joint_sft"}, {"name": "mgda"}], "seeds": [0, 1, 2], "output_dir": str(tmp_path)})


def _done(tmp_path, method, seed, lab1, lab3, made_by=None, environment=None):
    """A finished run as the runner leaves it: DONE and the resolved suite it ran (`made_by`, else the test suite)."""
    import yaml

    folder = tmp_path / "lab" / "llama" / method / f"seed{seed}"
    folder.mkdir(parents=True)
    suite = (made_by or _suite(tmp_path)).with_only(method=method, seed=seed)
    (folder / "config.yaml").write_text(yaml.safe_dump(suite.resolved(), sort_keys=False))
    metrics = {"eval/loss/lab1": lab1, "eval/loss/lab3": lab3, "eval/acc/lab1": 0.5, "eval/acc/lab3": 0.25,
               "perf/mean_step_time_s": (0.04 if method == "joint_sft" else 0.05) * (1 + seed),
               "eval/answer_loss/lab1": lab1 / 2, "eval/answer_loss/lab3": lab3 / 2}
    (folder / "DONE").write_text(json.dumps({"run_id": "x", "metrics": metrics,
                                             **({"environment": environment} if environment else {})}))


def test_worst_language_paired_by_seed(tmp_path, capsys):
    suite = _suite(tmp_path)
    for seed, (j1, j3, m1, m3) in enumerate([(1.0, 2.0, 1.2, 1.5), (1.1, 2.1, 1.3, 1.7), (0.9, 1.9, 1.0, 1.6)]):
        _done(tmp_path, "joint_sft", seed, j1, j3)
        _done(tmp_path, "mgda", seed, m1, m3)
    report = compare(suite, metric="loss")
    mgda = report["methods"]["mgda"]
    assert mgda["worst_language"] == ["lab3"] * 3 and mgda["worst_loss"] == [1.5, 1.7, 1.6]
    assert mgda["vs_baseline"]["mean_diff"] == pytest.approx(-0.4)
    assert "vs_baseline" not in report["methods"]["joint_sft"]
    assert "| mgda | 1.6000 ± 0.0577 | -0.4000" in table(report)
    assert mgda["step_time_s"] == pytest.approx([0.05, 0.10, 0.15])
    assert mgda["step_time_vs_baseline"] == pytest.approx(1.25)  # paired by seed: the machine's speed cancels
    assert report["methods"]["joint_sft"]["step_time_vs_baseline"] == pytest.approx(1.0)
    answers = compare(suite)  # the default statistic: the answer words' loss
    assert answers["metric"] == "eval/answer_loss" and answers["methods"]["mgda"]["worst_loss"] == [0.75, 0.85, 0.8]
    assert answers["methods"]["mgda"]["vs_baseline"]["mean_diff"] == pytest.approx(-0.2)


def test_the_report_names_every_machine_its_runs_computed_on(tmp_path):
    """The same seed gives other float trajectories on another CPU or thread count: a record says where it ran."""
    amd = {"cpu": "AMD EPYC", "torch_threads": "2", "git_commit": "abc"}
    _done(tmp_path, "joint_sft", 0, 1.0, 2.0, environment=amd)
    _done(tmp_path, "mgda", 0, 1.0, 1.5, environment={**amd, "cpu": "Intel Xeon"})
    _done(tmp_path, "mgda", 1, 1.0, 1.5)  # finished before DONE recorded its machine
    _done(tmp_path, "mgda", 7, 1.0, 1.5, environment={**amd, "cpu": "not a seed of the suite"})
    env = compare(_suite(tmp_path), metric="loss")["environment"]
    assert env == {"cpu": ["(not recorded)", "AMD EPYC", "Intel Xeon"], "git_commit": ["abc"], "torch_threads": ["2"]}


def test_missing_metric_names_the_fix(tmp_path):
    suite = _suite(tmp_path)
    _done(tmp_path, "joint_sft", 0, 1.0, 2.0)
    folder = tmp_path / "lab" / "llama" / "joint_sft" / "seed0"
    (folder / "DONE").write_text(json.dumps({"metrics": {"eval/loss/lab1": 1.0, "eval/loss/lab3": 2.0}}))
    with pytest.raises(ValueError, match="--metric loss"):
        compare(suite)
    assert compare(suite, metric="loss")["methods"]["joint_sft"]["worst_loss"] == [2.0]


def test_main_writes_json(tmp_path, capsys):
    import yaml

    suite = _suite(tmp_path)
    for seed in (0, 1):
        _done(tmp_path, "joint_sft", seed, 1.0, 2.0 + seed)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump({**suite.resolved(), "suite": {"name": "lab"}}))
    assert main([str(path), "--metric", "loss", "--out", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["methods"]["joint_sft"]["worst_loss"] == [2.0, 3.0]
    with pytest.raises(ValueError, match="no finished"):
        compare(suite_from_data({**suite.resolved(), "methods": [{"name": "mgda"}], "output_dir": str(tmp_path / "no")}))


def _variant(tmp_path, **changes):
    data = _suite(tmp_path).resolved()
    for key, value in changes.items():
        section, _, name = key.partition("__")
        data[section] = {**data[section], name: value} if name else value
    return suite_from_data(data)


@pytest.mark.parametrize(("changes", "named"), [
    ({"data__conflict": 0.25}, "data.conflict: 0.25 (run) vs 0.5 (suite)"),
    ({"data__answer_vocabulary": "separate"}, "data.answer_vocabulary: separate (run) vs (absent) (suite)"),
    ({"suite__version": 2}, "suite.version: 2 (run) vs 1 (suite)"),
    ({"train__lr": 0.5}, "train.lr: 0.5 (run)"),
    ({"methods": [{"name": "joint_sft"}, {"name": "mgda", "options": {"normalize": "l2"}}]}, "methods.mgda"),
])
def test_a_run_made_with_other_settings_is_refused_by_name(tmp_path, changes, named):
    _done(tmp_path, "joint_sft", 0, 1.0, 2.0)
    _done(tmp_path, "mgda", 0, 1.0, 1.5, made_by=_variant(tmp_path, **changes))
    with pytest.raises(ValueError, match=re.escape(named)) as error:
        compare(_suite(tmp_path), metric="loss")
    assert "mgda/seed0 was made with other settings" in str(error.value)


def test_settings_that_decide_no_result_do_not_exclude_a_run(tmp_path):
    _done(tmp_path, "joint_sft", 0, 1.0, 2.0)
    _done(tmp_path, "mgda", 0, 1.0, 1.5, made_by=_variant(
        tmp_path, suite={"name": "lab", "version": 1, "description": "another"}, output_dir="/elsewhere",
        train__save_model=True))
    assert compare(_suite(tmp_path).with_only(seed=0), metric="loss")["methods"]["mgda"]["worst_loss"] == [1.5]


def test_a_run_without_its_config_cannot_be_checked(tmp_path):
    _done(tmp_path, "joint_sft", 0, 1.0, 2.0)
    (tmp_path / "lab" / "llama" / "joint_sft" / "seed0" / "config.yaml").unlink()
    with pytest.raises(ValueError, match="no config.yaml"):
        compare(_suite(tmp_path), metric="loss")
