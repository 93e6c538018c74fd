"""`polymoo analyze interference`: the matrix on the lab and on real languages, at a very small budget."""

from __future__ import annotations

import argparse
import json

import pytest

from harness.analysis.interference import InterferenceResult, interference_matrix, log_result, write_outputs
from harness.suite import suite_from_data

pytestmark = pytest.mark.slow

TRAIN = {"steps": 2, "batch_size_per_language": 2, "max_seq_len": 32, "save_model": False, "log_every": 1}


def _suite(tmp_path, languages, data):
    return suite_from_data({"suite": {"name": "imatrix"}, "models": ["llama"], "languages": {"seen": languages},
                            "data": data, "train": TRAIN, "methods": [{"name": "joint_sft"}],
                            "eval": {"tasks": [], "batch_size": 8}, "seeds": [0], "output_dir": str(tmp_path / "runs"),
                            "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"}})


def test_matrix_arithmetic_by_hand():
    res = InterferenceResult(languages=["a", "b"], method="m", seeds=[0, 1], alone={"a": [2.0, 4.0], "b": [1.0, 1.0]},
                             paired={"a": {"b": [3.0, 4.0]}, "b": {"a": [0.5, 1.0]}})
    assert res.matrix() == [[0.0, 0.25], [-0.25, 0.0]]  # a: (+50 % + 0 %) / 2; b: (-50 % + 0 %) / 2
    assert res.metrics()["interference/a/b"] == 0.25 and res.metrics()["interference/loss/b/alone"] == 1.0
    assert "| a | 3.0000 | — | +0.250 |" in res.table()


def test_lab_matrix_table_heatmap_and_mlflow(tmp_path):
    suite = _suite(tmp_path, ["lab1", "lab2", "lab3"], {"source": "interference", "conflict": 0.5, "dissenters": ["lab3"],
                                                         "max_examples_per_language": 16})
    res = interference_matrix(suite, work_dir=tmp_path / "work")
    assert (tmp_path / "work" / "lab1+lab3" / "seed0").is_dir()
    assert not list((tmp_path / "work").rglob("checkpoint*"))  # only the losses are kept
    assert res.languages == ["lab1", "lab2", "lab3"] and all(len(v) == 1 for v in res.alone.values())
    files = write_outputs(res, tmp_path / "out", "lab")
    assert [f.name for f in files] == ["interference.json", "interference.md", "interference.png"]
    recorded = json.loads(files[0].read_text())
    assert recorded["interference"][0][0] == 0.0
    assert res.metric == "answer_loss" and recorded["metric"] == "eval/answer_loss"  # the lab's default: answer words
    assert "| measured \\ with | alone answer_loss |" in res.table()
    assert files[2].stat().st_size > 1000
    run_id = log_result(suite, res, files, "llama")
    from harness.tracking import client

    logged = client(suite.tracking.uri).get_run(run_id).data.metrics
    assert "interference/lab3/lab1" in logged


def test_real_languages_through_the_cli_command(tmp_path, capsys):
    from harness.analysis.interference_cli import add_parser, command

    suite_file = tmp_path / "real.yaml"
    import yaml

    suite_file.write_text(yaml.safe_dump({
        "suite": {"name": "imatrix_real"}, "models": ["llama"], "languages": {"seen": ["en", "de", "fr"]},
        "data": {"source": "chatterbot", "max_examples_per_language": 16}, "train": TRAIN,
        "methods": [{"name": "joint_sft"}], "eval": {"tasks": [], "batch_size": 8}, "seeds": [0],
        "output_dir": str(tmp_path / "runs")}))
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="analysis"))
    args = parser.parse_args(["interference", str(suite_file), "--steps", "1", "--out", str(tmp_path / "out"),
                              "--no-log"])
    assert command(args) == 0
    out = capsys.readouterr().out
    assert "| en |" in out and "| fr |" in out and "alone loss" in out  # real languages: every response token
    assert (tmp_path / "out" / "interference.png").exists()
    assert json.loads((tmp_path / "out" / "interference.json").read_text())["metric"] == "eval/loss"


def test_answer_loss_needs_the_lab_and_metric_names_are_checked(tmp_path):
    real = _suite(tmp_path, ["en", "de"], {"source": "chatterbot", "max_examples_per_language": 16})
    with pytest.raises(ValueError, match="answer_loss needs the lab's answer words"):
        interference_matrix(real, metric="answer_loss")
    with pytest.raises(ValueError, match="metric 'acc'"):
        interference_matrix(real, metric="acc")
