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


def test_slow_rank0_evaluation_and_start_outlast_the_collective_timeout(tmp_path, tmp_store):
    """Rank 0 evaluates for longer than `distributed.timeout_s` while rank 1 waits for the next run, and logs each
    run's start for longer than that while rank 1 waits to train: both waits are on a group of their own
    (`distributed.eval_timeout_s`), so the job finishes; the weights are saved before evaluation. With that wait as
    short as the training timeout the job dies, as it did when rank 1 waited on the training group."""
    from mlflow.tracking import MlflowClient

    from harness.faults import SLOW_EVAL_ENV, SLOW_START_ENV

    suite = _suite_file(tmp_path, steps=2, save_every=0, save_model=True)
    data = yaml.safe_load(suite.read_text())
    data["suite"]["name"], data["seeds"] = "dist-slow-eval", [0, 1]
    data["distributed"]["timeout_s"] = 8
    suite.write_text(yaml.safe_dump(data))
    env = {**os.environ, SLOW_EVAL_ENV: "10", SLOW_START_ENV: "10", "PYTHONPATH": str(REPO)}
    proc, _ = _launch(suite, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    c = MlflowClient(tmp_store)
    runs = c.search_runs([c.get_experiment_by_name("polymoo/dist-slow-eval").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert all(r.data.params.get("dist.world_size") == "2" for r in runs)
    assert len(list((tmp_path / "runs").rglob("final/config.json"))) == 2

    env.pop(SLOW_START_ENV)  # only the slow evaluation: the wait after it is what times out
    proc, _ = _launch(suite, env, "--set", "distributed.eval_timeout_s=8")
    assert proc.returncode != 0  # the wait times out: the old behaviour, now only when asked for
