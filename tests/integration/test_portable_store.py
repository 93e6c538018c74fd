"""The MLflow store is portable and self-describing: a `results/` folder copied elsewhere (the original deleted)
serves the leaderboard, the runs' artifacts and `polymoo ui` (the store re-pointed before the server reads it) from
its new place and writes nothing to the old one; experiments
are tagged as model development with a description (existing ones too), and the run's data is an MLflow dataset
input whose digest is the harness's data fingerprint."""

from __future__ import annotations

import shutil
import sqlite3

import pytest
import yaml

from tests.conftest import BASE_SUITE

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_copied_results_folder_serves_the_leaderboard_and_artifacts(tmp_path, monkeypatch, capsys):
    from harness.cli import main
    from harness.tracking import client
    from tests._store import copy_store

    old, new = tmp_path / "a" / "results", tmp_path / "b" / "results"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("POLYMOO_RESULTS", str(old))
    copy_store(old / "mlflow")  # the default store, results/mlflow/mlflow.db (a copy of an empty one: no migrations)
    data = {**BASE_SUITE, "output_dir": str(old / "runs"), "eval": {"heldout_loss": True, "tasks": []}}
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(data))
    assert main(["run", str(suite), "--set", "train.steps=2"]) == 0
    assert (old / "mlflow" / "artifacts").is_dir() and (old / "leaderboards" / "test_loss.md").exists()

    shutil.copytree(old, new)
    shutil.rmtree(old.parent)
    monkeypatch.setenv("POLYMOO_RESULTS", str(new))
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # mlflow.set_tracking_uri set it in this process; a new one has none
    assert main(["ui", "--dry-run"]) == 0
    assert f"--backend-store-uri sqlite:///{new / 'mlflow' / 'mlflow.db'}" in capsys.readouterr().out
    with sqlite3.connect(new / "mlflow" / "mlflow.db") as db:  # what a plain `mlflow server` now reads
        locations = [row[0] for row in db.execute("SELECT artifact_uri FROM runs")]
    assert locations and all(u.startswith((new / "mlflow" / "artifacts").as_uri() + "/") for u in locations)
    assert main(["leaderboard", str(suite), "--metric", "loss"]) == 0
    assert "| llama | joint_sft |" in capsys.readouterr().out

    c = client()
    exp = c.get_experiment_by_name("polymoo/test")
    assert exp.artifact_location == (new / "mlflow" / "artifacts").as_uri()
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development" and exp.tags["mlflow.note.content"]
    (run,) = c.search_runs([exp.experiment_id])
    assert run.info.artifact_uri.startswith((new / "mlflow" / "artifacts").as_uri() + "/")
    assert {"config.yaml", "versions.json"} <= {a.path for a in c.list_artifacts(run.info.run_id)}
    config = yaml.safe_load(open(c.download_artifacts(run.info.run_id, "config.yaml")))
    assert config["train"]["steps"] == 2
    reports = c.get_experiment_by_name("polymoo/test/reports")
    for report in c.search_runs([reports.experiment_id]):  # the one logged before the move and the one after
        assert "leaderboard" in [a.path for a in c.list_artifacts(report.info.run_id)]
    assert len(c.search_runs([reports.experiment_id])) == 2
    assert not old.parent.exists(), "nothing was written to the old place"

    datasets = {(d.dataset.name, d.dataset.digest, d.tags[0].value) for d in run.inputs.dataset_inputs}
    fingerprint = run.data.params["run.data_fingerprint"]
    assert datasets == {("json/train", fingerprint, "training"), ("json/heldout", fingerprint, "evaluation")}


def test_an_existing_experiment_gets_the_model_development_kind_and_a_description(tmp_store):
    from harness.tracking import client, ensure_experiment

    c = client(tmp_store)
    bare = c.create_experiment("made-elsewhere")
    described = c.create_experiment("described", tags={"mlflow.note.content": "a person's words"})
    assert ensure_experiment(c, "made-elsewhere", "polymoo suite x") == bare
    assert ensure_experiment(c, "described", "polymoo suite y") == described
    tags = c.get_experiment(bare).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development" and tags["mlflow.note.content"] == "polymoo suite x"
    assert c.get_experiment(described).tags["mlflow.note.content"] == "a person's words", "a description is kept"
