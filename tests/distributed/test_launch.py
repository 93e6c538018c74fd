"""The suite path under torchrun (2 gloo processes): a rank killed mid-run fails the run (non-zero exit within the
timeout, MLflow run FAILED with its metrics kept) and `--resume` continues from the last checkpoint."""

from __future__ import annotations

import copy
import os
import subprocess
import time

import pytest
import yaml

from harness.distributed.launch import torchrun_command
from harness.faults import KILL_ENV
from tests.conftest import BASE_SUITE, REPO

pytestmark = [pytest.mark.distributed, pytest.mark.integration]


def _suite_file(tmp_path, **train):
    data = copy.deepcopy(BASE_SUITE)
    data["suite"]["name"] = "dist-kill"
    data["languages"] = {"seen": ["en", "fr"], "unseen": []}
    data["output_dir"] = str(tmp_path / "runs")
    data["train"].update({"steps": 8, "save_every": 3, **train})
    data["eval"] = {"heldout_loss": True, "tasks": [], "mc_items_per_language": 4}
    data["distributed"] = {"nproc": 2, "hook": "sharded", "timeout_s": 60, "warmup_steps": 1}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _launch(suite, env, *extra, timeout=240):
    cmd = torchrun_command(["run", str(suite), "--no-leaderboard", *extra], 2)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.perf_counter() - t0


def _run_info(uri):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("polymoo/dist-kill")
    (run,) = c.search_runs([exp.experiment_id])
    history = [m.step for m in c.get_metric_history(run.info.run_id, "train/loss")]
    return c, run, history


def test_killed_rank_fails_run_and_resume_continues(tmp_path, tmp_store):
    suite = _suite_file(tmp_path)
    env = {**os.environ, KILL_ENV: "1:5", "PYTHONPATH": str(REPO)}
    proc, elapsed = _launch(suite, env)
    assert proc.returncode != 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert elapsed < 60 + 90  # the process-group timeout plus start-up, not a hang
    c, run, history = _run_info(tmp_store)
    assert run.info.status == "FAILED"
    assert history == [1, 2, 3, 4, 5] or history == [1, 2, 3, 4]  # what was logged before the kill is kept
    ckpts = sorted(p.name for p in (tmp_path / "runs").rglob("dist-step-*"))
    assert ckpts == ["dist-step-000003"]

    env.pop(KILL_ENV)
    proc, _ = _launch(suite, env, "--resume")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resumed from step 3" in proc.stdout
    c, run2, history = _run_info(tmp_store)
    assert run2.info.run_id == run.info.run_id and run2.info.status == "FINISHED"
    assert run2.data.tags.get("polymoo.resumed_from_step") == "3"
    assert history == list(range(1, 9))  # every step logged once: the killed attempt's steps 4-5 are superseded
    for key in ("dist/bytes_per_step", "dist/bytes_ratio_allreduce", "dist/hook_time_s", "perf/step_time_s",
                "perf/peak_mem_mb"):
        assert key in run2.data.metrics, key
