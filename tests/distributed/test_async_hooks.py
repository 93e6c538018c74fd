"""The DDP hooks are asynchronous, move bf16 buckets in bf16, and the engine skips non-finite steps with one check.

Asynchrony is observed without timing: rank 1 starts its backward only after rank 0's hook has returned for the first
bucket (a file rank 0 writes). A collective cannot complete before every rank has joined it, so an asynchronous hook
returns a future that is not done yet; a synchronous one would block in its collective until rank 1 gave up waiting
(`PEER_WAIT_S`) and then return a done future, which the test reports.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.distributed as dist

from harness.distributed.accounting import allreduce_bytes
from harness.distributed.assignment import StepAssignment
from harness.distributed.engine import token_mean_loss
from harness.distributed.hooks import HOOKS, HookState
from harness.distributed.simulate import ddp_plan, simulate
from harness.distributed.workers import spawn
from tests.distributed._hook_worker import engine_parts, flat_params, run_spec

PEER_WAIT_S = 20.0  # how long rank 1 waits for rank 0's hook to return (only reached by a synchronous hook)
BF16_RUN = {"name": "bf16", "hook": "sharded", "steps": 3, "model": {"dtype": torch.bfloat16}, "dtype": "bfloat16"}
NAN_RUN = {"name": "nan", "hook": "sharded", "steps": 3}
NAN_STEP = 1


def _wait_for(path: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _probe_hook(rank: int, out: Path, hook: str) -> dict[str, Any]:
    """One warm-up step, then one step of `hook` where rank 1 starts its backward only after rank 0's hook has
    returned (its forward comes before: DDP's forward of step 1 syncs the rebuilt buckets, a collective)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    from harness.api import polymoo_hook_state
    from harness.distributed.data import synthetic_batch_fn
    from harness.distributed.hooks import comm_hook
    from harness.distributed.workers import micro_llama

    model = micro_llama()
    ddp = DDP(model, bucket_cap_mb=0.02, forward_sync_buffers=False)
    state = polymoo_hook_state(ddp, "mgda", hook=hook, n_languages=2)
    signal, returned = out / f"{hook}.returned", []

    def probe(st: HookState, bucket: dist.GradBucket) -> torch.futures.Future:
        fut = comm_hook(st, bucket)
        if not st.warmup:
            returned.append(fut.done())
            if rank == 0 and len(returned) == 1:
                signal.write_text("returned")
        return fut

    probe.__annotations__ = comm_hook.__annotations__  # DDP checks them; here they would be strings
    ddp.register_comm_hook(state, probe)
    batch_fn = synthetic_batch_fn(model.config.vocab_size, 12, 2, 0, 2)
    waited = True
    for step in (0, 1):
        state.begin(step)
        loss = token_mean_loss(ddp, batch_fn(step, rank, 0, state.assignment_at(step)))  # DDP syncs its rebuilt
        state.share_loss(loss)  # buckets in the forward of step 1, so the wait comes after it
        if step == 1 and rank == 1:
            waited = _wait_for(signal, PEER_WAIT_S)
        loss.backward()
        state.end()
    grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    gathered = torch.empty(2 * grads.numel())
    dist.all_gather_into_tensor(gathered, grads)
    peers: list[Any] = [None, None]
    dist.all_gather_object(peers, waited)
    return {"done_at_return": returned, "peer_waited": all(peers), "buckets": len(returned),
            "replicas_equal": torch.equal(*gathered.view(2, -1))}


def _engine_run(run: dict[str, Any], loss_fn=token_mean_loss) -> dict[str, Any]:
    from harness.distributed.engine import DistEngine

    model, cfg, train, batch_fn = engine_parts(run)
    train = dataclasses.replace(train, master_weights=run_spec(run)["dtype"] == "float32")
    engine = DistEngine(model, cfg, train, run_spec(run)["languages"], batch_fn, loss_fn)
    metrics, params = [], []
    for step in range(train.steps):
        metrics.append(engine.step(step))
        params.append(flat_params(model))
    return {"metrics": metrics, "params": params, "state": model.state_dict(), "grad_bytes": engine.grad_bytes,
            "buckets": engine.state.buckets, "run": run_spec(run)}


def _nan_at(step_of_nan: int):
    calls = {"n": 0}

    def loss_fn(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = token_mean_loss(model, inputs)
        calls["n"] += 1
        return loss * float("nan") if calls["n"] == step_of_nan + 1 else loss

    return loss_fn


def async_worker(rank: int, world: int, out_dir: str) -> None:
    out = Path(out_dir)
    results: dict[str, Any] = {h: _probe_hook(rank, out, h) for h in HOOKS}
    dist.barrier()
    results["bf16"] = _engine_run(BF16_RUN)
    results["nan"] = _engine_run(NAN_RUN, _nan_at(NAN_STEP))
    if rank == 0:
        torch.save(results, out / "results.pt")
    dist.barrier()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("async_hooks")
    spawn(async_worker, 2, str(out))
    return torch.load(out / "results.pt", weights_only=False)


@pytest.mark.distributed
@pytest.mark.parametrize("hook", HOOKS)
def test_hook_returns_before_its_collectives_complete(results, hook):
    """Rank 0's hook hands DDP a future that is not done while rank 1 has not even started its backward; DDP waits
    on it at the end of the backward and the replicas agree."""
    r = results[hook]
    assert r["peer_waited"], f"{hook}: rank 1 gave up waiting: rank 0's hook blocked in its collective (synchronous)"
    assert r["done_at_return"][0] is False, f"{hook}: the hook returned a completed future (synchronous)"
    assert r["buckets"] > 1  # several buckets were chained in one backward
    assert r["replicas_equal"]


@pytest.mark.distributed
def test_bf16_slices_travel_in_bf16(results):
    """Pure bf16 weights: the sharded hook sends one bf16 all-reduce's bytes plus the float64 K×K Grams (1.0×, not the
    1.5× of an fp32 all-gather), and equals the single-process simulation up to one bf16 rounding per element."""
    r = results["bf16"]
    world, k = 2, 2
    assert r["grad_bytes"] == 2 * sum(p.numel() for p in engine_parts(BF16_RUN)[0].parameters())  # bf16 gradients
    allreduce = allreduce_bytes(r["grad_bytes"], world)
    grams = len(r["buckets"]) * allreduce_bytes(8 * k * k, world)
    padding = len(r["buckets"]) * 2 * (world - 1) * 2  # at most N−1 zero elements per bucket, in both collectives
    for m in r["metrics"][r["run"]["warmup_steps"]:]:
        slices = m["dist/bytes/all_to_all.slices"] + m["dist/bytes/all_gather.slices"]
        assert allreduce <= slices <= allreduce + padding
        assert m["dist/bytes_per_step"] == pytest.approx(slices + grams, rel=1e-12)
        assert m["dist/bytes_ratio_allreduce"] == pytest.approx(1.0, abs=0.01)
    model, cfg, train, batch_fn = engine_parts(BF16_RUN)
    train = dataclasses.replace(train, master_weights=False)
    plan = ddp_plan(model, cfg, batch_fn, token_mean_loss, world, k)
    simulate(model, cfg, train, world, k, batch_fn, token_mean_loss, train.steps, plan)
    ulp = torch.finfo(torch.bfloat16).eps
    for name, value in model.state_dict().items():  # equal to the simulation up to one bf16 rounding per element
        assert ((r["state"][name].float() - value.float()).abs() <= ulp * value.float().abs()).all(), name


@pytest.mark.distributed
def test_non_finite_step_is_skipped_with_one_check(results):
    """A NaN loss on every rank: the fused check skips the update (parameters unchanged), counts it, and the next
    step trains again."""
    r = results["nan"]
    m = r["metrics"]
    assert m[NAN_STEP]["train/skipped_steps"] == 1.0 and m[NAN_STEP - 1]["train/skipped_steps"] == 0.0
    assert torch.equal(r["params"][NAN_STEP], r["params"][NAN_STEP - 1])
    assert not torch.equal(r["params"][NAN_STEP + 1], r["params"][NAN_STEP])
    assert torch.isfinite(r["params"][-1]).all()


def test_mixing_matrix_is_copied_once_per_assignment():
    """Every bucket of every step with the same language assignment reuses one on-device copy per dtype; a rotated
    assignment (N < K) gets its own."""
    state = HookState(comm=SimpleNamespace(world=2, rank=0), hook="sharded", weighting=None)
    first = StepAssignment(0, (0, 1))
    state.begin_step(0, first, warmup=False)
    mix = state.mixing(torch.device("cpu"), torch.float32)
    rows = state.language_rows(torch.ones(2, 3, dtype=torch.bfloat16))
    assert rows.dtype == torch.float32 and torch.equal(rows, torch.ones(2, 3))
    state.begin_step(1, StepAssignment(1, (0, 1)), warmup=False)
    assert state.mixing(torch.device("cpu"), torch.float32) is mix
    assert state.mixing(torch.device("cpu"), torch.float64) is not mix
    state.begin_step(2, StepAssignment(2, (2, 3)), warmup=False)
    assert state.mixing(torch.device("cpu"), torch.float32) is not mix
