"""Granularities finer than a bucket inside the DDP hooks (gloo on CPU): `module` and `tensor` blocks nested in each
bucket, through the allgather and the sharded hook. Replicas stay bit-identical, the result equals the single-process
simulation with the same nested blocks, allgather equals sharded, and the sharded hook all-reduces one K×K Gram per
block piece."""

from __future__ import annotations

import pytest
import torch

from harness.distributed.accounting import allreduce_bytes
from harness.distributed.engine import token_mean_loss
from harness.distributed.simulate import bucket_layouts, ddp_plan, simulate
from harness.distributed.workers import spawn
from tests.distributed._hook_worker import engine_parts, hook_worker

pytestmark = pytest.mark.distributed


def _load(d, name):
    return torch.load(d / f"{name}.pt", weights_only=False)


def _max_diff(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _simulated(result: dict, world: int) -> tuple[dict, list]:
    run = result["run"]
    model, cfg, train, batch_fn = engine_parts(run)
    plan = ddp_plan(model, cfg, batch_fn, token_mean_loss, world, run["languages"])
    assert result["buckets"] == {b.index: list(b.names) for b in plan}
    layouts = bucket_layouts(model, plan, cfg.granularity)
    simulate(model, cfg, train, world, run["languages"], batch_fn, token_mean_loss, train.steps, plan)
    return model.state_dict(), layouts


def _check_sharded_bytes(result: dict, layouts: list, world: int) -> None:
    """Sharded: the all-reduce-sized slice exchange plus one (M_b, K, K) float64 Gram all-reduce per bucket."""
    run = result["run"]
    k = min(world, run["languages"])
    expected = allreduce_bytes(result["grad_bytes"], world) + sum(
        allreduce_bytes(8 * len(blocks) * k * k, world) for blocks in layouts)
    for m in result["metrics"][run["warmup_steps"]:]:
        assert abs(m["dist/bytes_per_step"] - expected) <= 0.05 * expected


def test_module_and_tensor_blocks_inside_the_bucket_hooks(tmp_path):
    runs = [{"name": "bucket", "hook": "sharded"},
            {"name": "allgather_module", "hook": "allgather", "granularity": "module"},
            {"name": "sharded_module", "hook": "sharded", "granularity": "module"},
            {"name": "sharded_tensor_l2", "hook": "sharded", "granularity": "tensor", "weighting": "cagrad",
             "normalize": "l2", "output_scale": "mean_norm"},
            {"name": "allgather_tensor_pcgrad", "hook": "allgather", "granularity": "tensor", "weighting": "pcgrad"}]
    spawn(hook_worker, 2, str(tmp_path), runs)
    results = {r["name"]: _load(tmp_path, r["name"]) for r in runs}
    for name, res in results.items():
        assert all(res["identical"]), f"{name}: replicas diverged"
        state, layouts = _simulated(res, 2)
        assert _max_diff(res["state"], state) < 1e-5, name
        if res["run"]["hook"] == "sharded":
            _check_sharded_bytes(res, layouts, 2)
        if res["run"]["granularity"] == "module":  # the micro model's layers span two buckets: split at the boundary
            owners = [b.index for blocks in layouts for b in blocks]
            assert len(owners) > len(set(owners))
    assert _max_diff(results["allgather_module"]["state"], results["sharded_module"]["state"]) < 1e-5
    assert _max_diff(results["sharded_module"]["state"], results["bucket"]["state"]) > 1e-3  # observed 3e-2


def test_four_ranks_k4_pcgrad_tensor_blocks(tmp_path):
    """K = 4: PCGrad's order depends on the block index (here the tensor index), the same on every rank."""
    runs = [{"name": "k4_pcgrad_sharded_tensor", "hook": "sharded", "languages": 4, "weighting": "pcgrad",
             "granularity": "tensor"}]
    spawn(hook_worker, 4, str(tmp_path), runs)
    res = _load(tmp_path, runs[0]["name"])
    assert all(res["identical"])
    state, layouts = _simulated(res, 4)
    assert _max_diff(res["state"], state) < 1e-5
    _check_sharded_bytes(res, layouts, 4)
