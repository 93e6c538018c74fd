"""What a resume leaves in MLflow, single process: every step of the metric histories logged once (the points an
interrupted attempt logged after the checkpoint are replaced by the resumed ones and kept as an artifact), the
skipped-step counter restored from the checkpoint, a checkpoint whose write failed never resumed from, and a changed
suite refused or, with --resume-changed, accepted and recorded."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from tests.conftest import BASE_SUITE

pytestmark = [pytest.mark.integration, pytest.mark.slow]
# the step-2 losses are NaN (a skipped step), and only finite values are logged
STEPS = {"train/loss": [1, 3, 4, 5, 6], "train/loss/en": [1, 3, 4, 5, 6], "train/loss/de": [1, 3, 4, 5, 6],
         "train/skipped_steps": [1, 2, 3, 4, 5, 6], "train/lr": [1, 2, 3, 4, 5, 6]}


def _points(c, run_id: str, key: str) -> list[tuple[int, float, int]]:
    return sorted((m.step, m.value, m.timestamp) for m in c.get_metric_history(run_id, key))


def _nan_at_second_call(monkeypatch) -> None:
    """joint_sft computes its losses once per step: the second call (step 2) gets a NaN loss, so step 2 is skipped."""
    import harness.train.sft as sft

    real, calls = sft.language_losses, {"n": 0}

    def patched(model, inputs):
        out = real(model, inputs)
        calls["n"] += 1
        return {k: v * float("nan") for k, v in out.items()} if calls["n"] == 2 else out

    monkeypatch.setattr(sft, "language_losses", patched)


def test_resume_after_a_failure_logs_every_step_once_and_restores_the_counters(tmp_store, make_suite, monkeypatch):
    from mlflow.tracking import MlflowClient

    from harness.faults import FAIL_ENV
    from harness.runner import run_dir_for, run_one

    suite = make_suite(train={"steps": 6, "save_every": 2}, eval={"heldout_loss": False, "tasks": []})
    with monkeypatch.context() as faults:
        faults.setenv(FAIL_ENV, "5")  # steps 1..5 logged, last checkpoint at step 4
        _nan_at_second_call(faults)
        with pytest.raises(RuntimeError, match="simulated failure"):
            run_one(suite, "llama", suite.methods[0], 0)
    run_id = (run_dir_for(suite, "llama", suite.methods[0], 0) / "mlflow_run_id").read_text()
    c = MlflowClient(tmp_store)
    assert [s for s, _, _ in _points(c, run_id, "train/loss")] == [1, 3, 4, 5]
    assert [v for _, v, _ in _points(c, run_id, "train/skipped_steps")] == [0, 1, 1, 1, 1]

    resumed_at = int(time.time() * 1000)
    result = run_one(suite, "llama", suite.methods[0], 0, resume=True)
    run = c.get_run(run_id)
    assert result.status == "FINISHED" and run.info.status == "FINISHED"
    assert run.data.tags["polymoo.resumed_from_step"] == "4"
    for key, steps in STEPS.items():
        points = _points(c, run_id, key)
        assert [s for s, _, _ in points] == steps, f"{key}: every step exactly once"
        assert all(t < resumed_at for s, _, t in points if s <= 4), f"{key}: steps up to the checkpoint are kept"
        assert all(t >= resumed_at for s, _, t in points if s > 4), f"{key}: steps after it are the resumed run's"
    assert [v for _, v, _ in _points(c, run_id, "train/skipped_steps")] == [0, 1, 1, 1, 1, 1], "counter restored"
    assert result.metrics["train/skipped_steps"] == 1.0
    assert run.data.metrics["train/skipped_steps"] == 1.0  # MLflow's latest value, after the history was cut
    assert run.data.tags["polymoo.resume.superseded_steps"].startswith("5-5")
    (artifact,) = [a.path for a in c.list_artifacts(run_id, "resume")]
    superseded = json.loads(open(c.download_artifacts(run_id, artifact)).read())
    assert superseded["resumed_after_step"] == 4
    assert {p["step"] for p in superseded["points"]} == {5} and {"train/loss"} <= {p["key"] for p in superseded["points"]}


def test_a_checkpoint_whose_write_failed_is_never_resumed_from(tmp_store, make_suite, monkeypatch):
    """A full disk while HF writes checkpoint-4: the half-written folder stays in the staging folder (no marker, not
    under checkpoints/), and --resume continues from checkpoint-2 with steps 3 and 4 logged once."""
    from mlflow.tracking import MlflowClient
    from transformers import Trainer

    from harness.runner import run_dir_for, run_one
    from harness.train.sft import CHECKPOINT_COMPLETE, STAGING

    suite = make_suite(train={"steps": 6, "save_every": 2}, eval={"heldout_loss": False, "tasks": []})
    real = Trainer._save_rng_state

    def full_disk(self, output_dir):
        if str(output_dir).endswith("checkpoint-4"):
            raise OSError(28, "No space left on device")
        return real(self, output_dir)

    with monkeypatch.context() as disk:
        disk.setattr(Trainer, "_save_rng_state", full_disk)
        with pytest.raises(OSError, match="No space left"):
            run_one(suite, "llama", suite.methods[0], 0)
    checkpoints = run_dir_for(suite, "llama", suite.methods[0], 0) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir() if not p.name.startswith(".")) == ["checkpoint-2"]
    assert (checkpoints / "checkpoint-2" / CHECKPOINT_COMPLETE).exists()
    partial = checkpoints / STAGING / "checkpoint-4"
    assert partial.is_dir() and not (partial / CHECKPOINT_COMPLETE).exists()

    result = run_one(suite, "llama", suite.methods[0], 0, resume=True)
    c = MlflowClient(tmp_store)
    run = c.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["polymoo.resumed_from_step"] == "2"
    assert [m.step for m in sorted(c.get_metric_history(result.run_id, "train/loss"), key=lambda m: m.step)] == \
        [1, 2, 3, 4, 5, 6]


def test_resume_changed_accepts_a_changed_suite_and_records_the_change(tmp_store, tmp_path, monkeypatch, capsys):
    """Through the CLI: a crash (exit 1, run FAILED), a resume with a changed lr refused naming the key and the flag
    (exit 2), then --resume-changed: FINISHED, params updated, old -> new kept as a tag and an artifact."""
    from mlflow.tracking import MlflowClient

    from harness.cli import main
    from harness.faults import FAIL_ENV

    data = {**BASE_SUITE, "output_dir": str(tmp_path / "runs"), "eval": {"heldout_loss": False, "tasks": []}}
    data["train"] = {**BASE_SUITE["train"], "steps": 4, "save_every": 2}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    with monkeypatch.context() as faults:
        faults.setenv(FAIL_ENV, "3")
        assert main(["run", str(path), "--no-leaderboard"]) == 1
    assert "unexpected error: RuntimeError" in capsys.readouterr().err
    c = MlflowClient(tmp_store)
    (run,) = c.search_runs([c.get_experiment_by_name("polymoo/test").experiment_id])
    assert run.info.status == "FAILED" and run.data.params["train.lr"] == "0.001"

    changed = ["run", str(path), "--no-leaderboard", "--set", "train.lr=0.0005"]
    assert main([*changed, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.001 -> 0.0005" in err and "--resume-changed" in err
    assert c.get_run(run.info.run_id).info.status == "FAILED", "the refused resume left the run as it was"

    assert main([*changed, "--resume-changed"]) == 0
    after = c.get_run(run.info.run_id)
    assert after.info.status == "FINISHED"
    assert after.data.params["train.lr"] == "0.0005", "the params say what the run continued with"
    assert after.data.tags["polymoo.resume.config_changes"] == "train.lr: 0.001 -> 0.0005"
    assert after.data.tags["polymoo.resumed_from_step"] == "2"
    assert after.data.tags["polymoo.resume.previous_config_hash"] == run.data.tags["polymoo.config_hash"]
    assert after.data.tags["polymoo.config_hash"] != run.data.tags["polymoo.config_hash"]
    (artifact,) = [a.path for a in c.list_artifacts(run.info.run_id, "resume") if "config-changes" in a.path]
    record = json.loads(open(c.download_artifacts(run.info.run_id, artifact)).read())
    assert record["changes"] == {"train.lr": {"old": "0.001", "new": "0.0005"}}
    assert [m.step for m in sorted(c.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)] == \
        [1, 2, 3, 4]
