"""A stateful weighting (GradVac) under the DDP hooks on 2 gloo ranks: equal to the single-process simulation of the
same buckets at every hook, its state carried across steps (it differs from PCGrad, its first step), and restored
from the engine's state dict on resume."""

from __future__ import annotations

import pytest
import torch

from tests.distributed.test_hooks import _load, _max_diff, _simulated

pytestmark = pytest.mark.distributed


def test_gradvac_under_the_hooks_equals_the_simulation_and_resumes(tmp_path):
    from harness.distributed.workers import hook_worker, spawn

    base = {"weighting": "gradvac", "weighting_options": {"beta": 0.5}, "steps": 5}
    runs = [{"name": "gv_full", "hook": "full", **base},
            {"name": "gv_sharded", "hook": "sharded", **base},
            {"name": "gv_sharded_tensor", "hook": "sharded", "granularity": "tensor", **base},
            {"name": "pc_full", "hook": "full", **base, "weighting": "pcgrad", "weighting_options": {}},
            {"name": "gv_full_resumed", "hook": "full", **base, "resume_at": 3}]
    spawn(hook_worker, 2, str(tmp_path), runs)
    results = {r["name"]: _load(tmp_path, r["name"]) for r in runs}
    for name, res in results.items():
        assert all(res["identical"]), name
        if name != "gv_full_resumed":
            assert _max_diff(res["state"], _simulated(res, 2)) < 1e-5, name
    # the EMA state acts (GradVac's first step is PCGrad's; later ones differ) ...
    assert _max_diff(results["gv_full"]["state"], results["pc_full"]["state"]) > 1e-6
    # ... and a resume from the engine's state dict continues the same trajectory
    assert _max_diff(results["gv_full_resumed"]["state"], results["gv_full"]["state"]) < 1e-6


def test_famo_is_refused_under_ddp_with_the_reason():
    from harness.distributed.engine import EngineConfig, engine_weighting

    with pytest.raises(ValueError, match="famo.*per-language losses.*hooks see only gradients"):
        engine_weighting(EngineConfig(hook="full", weighting="famo"), 2, 2)
    assert torch.is_tensor(engine_weighting(EngineConfig(hook="full", weighting="mgda"), 2, 2)(torch.eye(2)))
