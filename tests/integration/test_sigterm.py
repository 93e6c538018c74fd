"""A single-process run stopped by SIGTERM (a scheduler's stop, `kill`) ends KILLED in MLflow with what it logged
kept, exits 143 with a message naming `--resume`, and `--resume` finishes it in the same MLflow run with every step
logged exactly once (the steps logged after the last checkpoint are replaced by the resumed run's)."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.conftest import BASE_SUITE, REPO

pytestmark = pytest.mark.integration


def test_sigterm_ends_the_run_killed_and_resume_finishes_it(tmp_path, tmp_store):
    from mlflow.tracking import MlflowClient

    data = copy.deepcopy(BASE_SUITE)
    data["suite"]["name"] = "sigterm"
    data["output_dir"] = str(tmp_path / "runs")
    data["train"].update({"steps": 40, "save_every": 2})
    data["eval"] = {"heldout_loss": False, "tasks": []}
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(data))
    cmd = [sys.executable, "-m", "harness", "run", str(suite), "--no-leaderboard"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = None
    deadline = time.monotonic() + 180
    while checkpoint is None and time.monotonic() < deadline and proc.poll() is None:
        found = sorted((tmp_path / "runs").rglob("checkpoints/checkpoint-*/POLYMOO_COMPLETE"))  # renamed into place
        checkpoint = found[0] if found else None
        time.sleep(0.2)
    assert checkpoint is not None, "the run never wrote a checkpoint"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-2000:] + err[-2000:]
    assert "ended KILLED" in err and "--resume" in err

    c = MlflowClient(tmp_store)
    (run,) = c.search_runs([c.get_experiment_by_name("polymoo/sigterm").experiment_id])
    assert run.info.status == "KILLED"
    assert c.get_metric_history(run.info.run_id, "train/loss"), "what was logged before the stop is kept"

    done = subprocess.run([*cmd, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    finished = c.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED"
    resumed_from = int(finished.data.tags["polymoo.resumed_from_step"])
    assert resumed_from >= 2 and resumed_from % 2 == 0, "resumed from a checkpoint, not from scratch"
    for key in ("train/loss", "train/loss/en", "train/lr"):
        steps = sorted(m.step for m in c.get_metric_history(run.info.run_id, key))
        assert steps == list(range(1, 41)), f"{key}: every step exactly once"
