"""The two training loops agree: joint SFT through the single-process HF Trainer path and through the DDP engine
(2 gloo processes, one language per rank, the `mean` hook) follow the same loss trajectory on the same suite.

Both see the same language-balanced batches in the same order; the DDP mean of the two ranks' per-language losses is
the joint loss. So optimizer groups, schedule, warm-up, clipping and the step count must agree between the engines
for the trajectories to match; this is the test that ties them together (issue 10, "two training loops")."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import yaml

from harness.distributed.launch import torchrun_command
from tests.conftest import BASE_SUITE, REPO

pytestmark = [pytest.mark.distributed, pytest.mark.integration]
STEPS = 6


def _suite_file(tmp_path, name: str, nproc: int):
    data = copy.deepcopy(BASE_SUITE)
    data["suite"]["name"] = name
    data["languages"] = {"seen": ["en", "fr"], "unseen": []}
    data["output_dir"] = str(tmp_path / "runs")
    data["train"].update({"steps": STEPS, "schedule": "cosine", "warmup_steps": 2, "weight_decay": 0.1,
                          "max_grad_norm": 0.5, "lr": 2.0e-3})
    data["eval"] = {"heldout_loss": False, "tasks": []}
    data["distributed"] = {"nproc": nproc, "hook": "sharded", "timeout_s": 120, "warmup_steps": 1}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _losses(uri: str, experiment: str) -> list[float]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    (run,) = c.search_runs([c.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FINISHED"
    history = sorted((m.step, m.value) for m in c.get_metric_history(run.info.run_id, "train/loss"))
    assert [s for s, _ in history] == list(range(1, STEPS + 1))
    return [v for _, v in history]


def test_joint_sft_same_trajectory_single_process_and_ddp(tmp_path, tmp_store):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    single = _suite_file(tmp_path, "engines-single", 1)
    proc = subprocess.run([sys.executable, "-m", "harness", "run", str(single),
                           "--no-leaderboard"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    ddp = _suite_file(tmp_path, "engines-ddp", 2)
    proc = subprocess.run(torchrun_command(["run", str(ddp), "--no-leaderboard"], 2), cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    a, b = _losses(tmp_store, "polymoo/engines-single"), _losses(tmp_store, "polymoo/engines-ddp")
    assert b == pytest.approx(a, rel=1e-4), list(zip(a, b, strict=True))
