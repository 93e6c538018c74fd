"""`polymoo eval CHECKPOINT --suite S`: a saved model evaluated outside training, and its clear errors."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from harness.cli import main
from tests.conftest import BASE_SUITE


def _suite_file(tmp_path, **eval_overrides):
    data = copy.deepcopy(BASE_SUITE)
    data["eval"] = {**data["eval"], **eval_overrides}
    data["output_dir"] = str(tmp_path / "runs")
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder as the runner leaves it: final/ holds the saved model."""
    from harness.models.loading import load_model

    model, tok = load_model("llama", "tiny")
    run = tmp_path_factory.mktemp("run") / "seed0"
    model.save_pretrained(run / "final")
    tok.save_pretrained(run / "final")
    (run / "DONE").write_text("{}")
    return run


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    suite = _suite_file(tmp_path)
    assert main(["eval", str(tmp_path / "nowhere"), "--suite", str(suite)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint" in err and "does not exist" in err


def test_run_folder_without_model_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "DONE").write_text("{}")
    assert main(["eval", str(run), "--suite", str(_suite_file(tmp_path))]) == 2
    assert "no saved model under final/" in capsys.readouterr().err


def test_task_without_language_is_a_clear_error(run_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["eval", str(run_folder), "--suite", str(_suite_file(tmp_path)), "--task", "xcopa_sw",
                 "--out", str(out), "--no-log"])
    assert code == 2
    err = capsys.readouterr().err
    assert "xcopa_sw" in err and "no language mapping" in err
    assert not out.exists() and not out.with_name("out.partial").exists()  # nothing written


def test_unknown_local_task_is_a_clear_error(run_folder, tmp_path, capsys):
    assert main(["eval", str(run_folder), "--suite", str(_suite_file(tmp_path, tasks=["babel"])), "--no-log"]) == 2
    assert "eval.tasks[0]: unknown task 'babel' (did you mean 'babel_mc'?)" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_saved_checkpoint(run_folder, tmp_path, tmp_store, capsys):
    suite = _suite_file(tmp_path, tasks=["babel_mc"], mc_items_per_language=6)
    out = tmp_path / "out"
    assert main(["eval", str(run_folder), "--suite", str(suite), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "eval/acc/seen_mean" in printed and "eval/loss/nl" in printed
    saved = json.loads((out / "eval_results.json").read_text())
    assert set(saved["metrics"]) >= {"eval/acc/en", "eval/acc/unseen_mean", "eval/ppl/fr"}
    assert json.loads((out / "checkpoint.json").read_text())["checkpoint"].endswith("final")
    # logged apart from the training runs
    from harness.tracking import client

    c = client(tmp_store)
    exp = c.get_experiment_by_name("polymoo/test/eval")
    runs = c.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["polymoo.kind"] == "eval"
    assert runs[0].data.metrics["eval/acc/en"] == pytest.approx(saved["metrics"]["eval/acc/en"])
    # a second evaluation never overwrites the first
    assert main(["eval", str(run_folder / "final"), "--suite", str(suite), "--out", str(out), "--no-log"]) == 0
    assert len(list(tmp_path.glob("out*"))) == 2
