"""A suite run end to end on a tiny twin: what lands in MLflow, failure marking and resumption, the leaderboard."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import pytest
import torch

from harness.cli import main
from harness.leaderboard.aggregate import aggregate
from harness.leaderboard.collect import fetch_runs
from harness.leaderboard.render import to_markdown
from harness.tracking import experiment_name

if TYPE_CHECKING:  # mlflow and harness.runner (transformers.Trainer) are imported by the tests, not at collection
    from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _history(c: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in c.get_metric_history(run_id, key)]


def test_run_logs_everything_a_researcher_needs(tmp_store, make_suite):
    import mlflow
    from mlflow.tracking import MlflowClient

    from harness.runner import run_one

    suite = make_suite(eval={"tasks": ["babel_mc"], "mc_items_per_language": 6})
    result = run_one(suite, "llama", suite.methods[0], 0)
    c = MlflowClient(tmp_store)
    run = c.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    for key in ("polymoo.method", "polymoo.model", "polymoo.suite", "polymoo.seed", "polymoo.git_commit",
                "polymoo.config_hash"):
        assert key in tags
    assert params["train.steps"] == "4" and params["languages.seen"] == "['en', 'fr', 'de']"
    assert params["version.torch"] and params["run.data_fingerprint"]
    assert params["run.tokenizer_fingerprint"] and params["run.initial_weights_fingerprint"]
    assert not [k for k in params if k.startswith("methods")], "a run logs its own method, not the suite's list"
    experiment = c.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # not MLflow's GenAI view
    assert experiment.tags["mlflow.note.content"]
    for lang in ("en", "fr", "de"):
        assert [s for s, _ in _history(c, result.run_id, f"train/loss/{lang}")] == [1, 2, 3, 4]
        assert f"eval/acc/{lang}" in metrics
    for lang in ("en", "fr", "de", "nl"):
        assert f"eval/loss/{lang}" in metrics and f"eval/ppl/{lang}" in metrics
    for key in ("eval/acc/seen_mean", "eval/acc/unseen_mean", "eval/loss/seen_mean", "perf/peak_mem_mb",
                "perf/step_time_s", "perf/tokens_per_s", "train/lr"):
        assert key in metrics, key
    seen = [metrics[f"eval/acc/{lang}"] for lang in ("en", "fr", "de")]
    assert metrics["eval/acc/seen_mean"] == pytest.approx(sum(seen) / 3)
    artifacts = {a.path for a in c.list_artifacts(result.run_id)}
    assert {"config.yaml", "versions.json", "eval"} <= artifacts
    import yaml

    config = yaml.safe_load(open(mlflow.artifacts.download_artifacts(f"{run.info.artifact_uri}/config.yaml")))
    assert config["train"]["steps"] == 4 and config["methods"] == [{"name": "joint_sft", "options": {}, "label": None}]


def test_failed_run_is_marked_and_resumes_from_checkpoint(tmp_store, make_suite, monkeypatch):
    from mlflow.tracking import MlflowClient

    from harness.faults import FAIL_ENV
    from harness.runner import run_dir_for, run_one

    suite = make_suite(train={"steps": 6, "save_every": 2})
    with monkeypatch.context() as faults:
        faults.setenv(FAIL_ENV, "4")
        with pytest.raises(RuntimeError, match="simulated failure"):
            run_one(suite, "llama", suite.methods[0], 0)
    run_dir = run_dir_for(suite, "llama", suite.methods[0], 0)
    run_id = (run_dir / "mlflow_run_id").read_text()
    c = MlflowClient(tmp_store)
    assert c.get_run(run_id).info.status == "FAILED"
    assert [s for s, _ in _history(c, run_id, "train/loss/en")] == [1, 2, 3, 4], "logged so far is kept"
    assert (run_dir / "checkpoints" / "checkpoint-4").exists()

    resumed = make_suite(train={"steps": 6, "save_every": 2})
    result = run_one(resumed, "llama", resumed.methods[0], 0, resume=True)
    assert result.run_id == run_id
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["polymoo.resumed"] == "true"
    steps = [s for s, _ in _history(c, run_id, "train/loss/en")]
    assert steps == [1, 2, 3, 4, 5, 6], "resumed at step 5 from checkpoint-4, not from scratch"
    again = run_one(resumed, "llama", resumed.methods[0], 0, resume=True)
    assert again.status.startswith("SKIPPED")


def test_resume_is_equivalent_to_an_uninterrupted_run(tmp_store, make_suite, monkeypatch):
    from harness.faults import FAIL_ENV
    from harness.runner import run_one

    straight = make_suite(train={"steps": 4, "save_every": 2})
    a = run_one(straight, "llama", straight.methods[0], 0)
    fixed = make_suite(train={"steps": 4, "save_every": 2}, suite={"name": "other"})
    with monkeypatch.context() as faults:
        faults.setenv(FAIL_ENV, "2")
        with pytest.raises(RuntimeError):
            run_one(fixed, "llama", fixed.methods[0], 0)
    b = run_one(fixed, "llama", fixed.methods[0], 0, resume=True)
    assert b.metrics["eval/loss/en"] == pytest.approx(a.metrics["eval/loss/en"], rel=1e-5)


def test_cli_run_then_leaderboard_from_store_alone(tmp_store, make_suite, tmp_path, capsys):
    import yaml

    from tests.conftest import BASE_SUITE

    data = {**BASE_SUITE, "output_dir": str(tmp_path / "runs"), "seeds": [0, 1],
            "eval": {"heldout_loss": True, "tasks": []}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "lb"
    assert main(["run", str(path), "--set", "train.steps=2"]) == 0
    printed = capsys.readouterr().out
    assert main(["leaderboard", str(path), "--metric", "loss", "--out", str(out)]) == 0
    table_md = capsys.readouterr().out
    assert re.search(r"\| llama \| joint_sft \| [0-9a-f]{8} \| 2 \|", table_md)  # model, method, config hash, n
    runs = fetch_runs("polymoo/test")
    table = to_markdown(aggregate(runs, "loss", language_order=["en", "fr", "de", "nl"]))
    assert table in (out / "test_loss.md").read_text() and table.splitlines()[2] in table_md
    assert "llama" in printed and (out / "test_loss.csv").exists() and (out / "test_loss.html").exists()
    done = json.loads((tmp_path / "runs" / "test" / "llama" / "joint_sft" / "seed1" / "DONE").read_text())
    assert done["run_id"] and done["environment"]["cpu"] and done["environment"]["device"] == "cpu"
    assert done["environment"]["torch_threads"] == str(torch.get_num_threads()) and done["environment"]["git_commit"]
    assert set(runs["tags.polymoo.cpu"]) == {done["environment"]["cpu"]}  # the MLflow runs name their machine too


def test_fresh_run_keeps_earlier_run_files(tmp_store, make_suite):
    from harness.runner import run_dir_for, run_one

    suite = make_suite(train={"steps": 1})
    run_one(suite, "llama", suite.methods[0], 0)
    run_one(suite, "llama", suite.methods[0], 0)
    run_dir = run_dir_for(suite, "llama", suite.methods[0], 0)
    assert len([p for p in run_dir.parent.iterdir() if p.name.startswith("seed0")]) == 2
    assert experiment_name(suite) == "polymoo/test"


def test_an_unwritable_run_folder_leaves_no_running_mlflow_run(tmp_store, make_suite, tmp_path):
    from mlflow.tracking import MlflowClient

    from harness.runner import run_one

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the run folder should go")
    suite = make_suite(output_dir=str(blocker / "runs"))
    with pytest.raises(OSError):
        run_one(suite, "llama", suite.methods[0], 0)
    c = MlflowClient(tmp_store)
    experiment = c.get_experiment_by_name("polymoo/test")
    runs = c.search_runs([experiment.experiment_id]) if experiment else []
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == []


def test_resume_with_changed_settings_is_refused_naming_them(tmp_store, make_suite, monkeypatch):
    from mlflow.tracking import MlflowClient

    from harness.faults import FAIL_ENV
    from harness.runner import run_dir_for, run_one

    suite = make_suite(train={"steps": 4, "save_every": 2})
    with monkeypatch.context() as faults:
        faults.setenv(FAIL_ENV, "2")
        with pytest.raises(RuntimeError):
            run_one(suite, "llama", suite.methods[0], 0)
    changed = make_suite(train={"steps": 4, "save_every": 2, "lr": 5.0e-4})
    with pytest.raises(ValueError, match=r"the suite changed since MLflow run .* \(train.lr: 0.001 -> 0.0005\)"):
        run_one(changed, "llama", changed.methods[0], 0, resume=True)
    run_id = (run_dir_for(suite, "llama", suite.methods[0], 0) / "mlflow_run_id").read_text()
    assert MlflowClient(tmp_store).get_run(run_id).info.status == "FAILED", "the refused resume left the run as it was"


def test_resume_skips_a_half_written_checkpoint(tmp_store, make_suite, monkeypatch):
    from harness.faults import FAIL_ENV
    from harness.runner import run_dir_for, run_one
    from harness.train.sft import CHECKPOINT_COMPLETE

    suite = make_suite(train={"steps": 4, "save_every": 1})
    with monkeypatch.context() as faults:
        faults.setenv(FAIL_ENV, "3")
        with pytest.raises(RuntimeError):
            run_one(suite, "llama", suite.methods[0], 0)
    checkpoints = run_dir_for(suite, "llama", suite.methods[0], 0) / "checkpoints"
    assert (checkpoints / "checkpoint-3" / CHECKPOINT_COMPLETE).exists()
    # a stop while HF wrote checkpoint-3: the folder is there, its marker (written last) is not
    (checkpoints / "checkpoint-3" / CHECKPOINT_COMPLETE).unlink()
    (checkpoints / "checkpoint-3" / "trainer_state.json").unlink()
    result = run_one(suite, "llama", suite.methods[0], 0, resume=True)
    assert result.status == "FINISHED"
