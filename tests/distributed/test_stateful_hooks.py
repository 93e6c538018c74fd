"""Stateful weightings under the DDP hooks on 2 gloo ranks: GradVac (per language pair) and FAMO (per-language
losses, all-gathered before the backward) equal the single-process simulation of the same buckets at every hook,
their state is carried across steps (GradVac differs from PCGrad, its first step), and a resume from the engine's
state dict continues the same trajectory, also for the bucket hooks whose blocks are DDP's rebuilt buckets."""

from __future__ import annotations

import pytest
import torch

from tests.distributed.test_hooks import _load, _max_diff, _simulated

pytestmark = pytest.mark.distributed


def test_gradvac_under_the_hooks_equals_the_simulation_and_resumes(tmp_path):
    from harness.distributed.workers import spawn
    from tests.distributed._hook_worker import hook_worker

    base = {"weighting": "gradvac", "weighting_options": {"beta": 0.5}, "steps": 5}
    runs = [{"name": "gv_full", "hook": "full", **base},
            {"name": "gv_sharded", "hook": "sharded", **base},
            {"name": "gv_sharded_tensor", "hook": "sharded", "granularity": "tensor", **base},
            {"name": "pc_full", "hook": "full", **base, "weighting": "pcgrad", "weighting_options": {}},
            {"name": "gv_full_resumed", "hook": "full", **base, "resume_at": 3},
            {"name": "gv_sharded_resumed", "hook": "sharded", **base, "resume_at": 3}]
    spawn(hook_worker, 2, str(tmp_path), runs)
    results = {r["name"]: _load(tmp_path, r["name"]) for r in runs}
    for name, res in results.items():
        assert all(res["identical"]), name
        if not name.endswith("_resumed"):
            assert _max_diff(res["state"], _simulated(res, 2)) < 1e-5, name
    # the EMA state acts (GradVac's first step is PCGrad's; later ones differ) ...
    assert _max_diff(results["gv_full"]["state"], results["pc_full"]["state"]) > 1e-6
    # ... and a resume from the engine's state dict continues the same trajectory
    assert _max_diff(results["gv_full_resumed"]["state"], results["gv_full"]["state"]) < 1e-6
    assert _max_diff(results["gv_sharded_resumed"]["state"], results["gv_sharded"]["state"]) < 1e-6


def test_famo_under_the_hooks_equals_the_simulation_and_resumes(tmp_path):
    from harness.distributed.workers import spawn
    from tests.distributed._hook_worker import hook_worker

    base = {"weighting": "famo", "weighting_options": {"lr": 0.5}, "steps": 5}
    runs = [{"name": "famo_full", "hook": "full", **base},
            {"name": "famo_allgather", "hook": "allgather", **base},
            {"name": "famo_sharded", "hook": "sharded", **base},
            {"name": "mean_full", "hook": "full", **base, "weighting": "mean", "weighting_options": {}},
            {"name": "famo_sharded_resumed", "hook": "sharded", **base, "resume_at": 3}]
    spawn(hook_worker, 2, str(tmp_path), runs)
    results = {r["name"]: _load(tmp_path, r["name"]) for r in runs}
    for name, res in results.items():
        assert all(res["identical"]), name
        if name != "famo_sharded_resumed":
            assert _max_diff(res["state"], _simulated(res, 2)) < 1e-5, name
    # the losses reach the weighting: FAMO's task weights move away from the mean's ...
    assert _max_diff(results["famo_full"]["state"], results["mean_full"]["state"]) > 1e-6
    # ... the loss all-gather is counted with the method's bytes, on steps past the warm-up only ...
    steps = results["famo_sharded"]["metrics"]
    assert "dist/bytes/all_gather.losses" not in steps[0]
    assert all(m["dist/bytes/all_gather.losses"] > 0 for m in steps[1:])
    # ... and a resume (DDP rebuilds its buckets again in the new process) continues the same trajectory
    assert _max_diff(results["famo_sharded_resumed"]["state"], results["famo_sharded"]["state"]) < 1e-6


def test_stateful_weightings_refused_under_ddp_say_why():
    from harness.distributed.engine import EngineConfig, engine_weighting

    with pytest.raises(ValueError, match="gradvac.*2 ranks < 3 languages"):
        engine_weighting(EngineConfig(hook="sharded", weighting="gradvac"), 2, 3)
    with pytest.raises(ValueError, match="famo.*module split over two DDP buckets"):
        engine_weighting(EngineConfig(hook="sharded", weighting="famo", granularity="module"), 2, 2)
    assert engine_weighting(EngineConfig(hook="full", weighting="famo"), 2, 2).needs_losses
    assert torch.is_tensor(engine_weighting(EngineConfig(hook="full", weighting="mgda"), 2, 2)(torch.eye(2)))
