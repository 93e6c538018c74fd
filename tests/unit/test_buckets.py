"""harness.buckets reproduces DDP's buckets: the pure assignment vs torch's, helpers, and real DDP in a 1-process group."""

from __future__ import annotations

import random

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from harness.buckets import (
    Bucket,
    assign_by_size,
    bucket_caps,
    bucket_plan,
    bucket_slices,
    flatten_by_plan,
    grad_ready_order,
    initial_bucket_plan,
    unflatten_by_plan,
)

CAP_MB = 0.01  # 10 485 bytes: several buckets on the tiny models below


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(16, 64),
        nn.ReLU(),
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Linear(128, 96),
        nn.ReLU(),
        nn.Linear(96, 32),
        nn.ReLU(),
        nn.Linear(32, 200),
        nn.ReLU(),
        nn.Linear(200, 4),
    )


class LoraLinear(nn.Module):
    def __init__(self, base: nn.Linear, r: int = 4):
        super().__init__()
        self.base = base
        self.lora_a = nn.Parameter(torch.randn(r, base.in_features) * 0.01)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + x @ self.lora_a.T @ self.lora_b.T


def lora_mlp() -> nn.Sequential:
    model = mlp()
    for p in model.parameters():
        p.requires_grad_(False)
    for i, m in enumerate(model):
        if isinstance(m, nn.Linear):
            model[i] = LoraLinear(m, r=16)
    return model


def tiny_llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=500,
        max_position_embeddings=64,
    )
    return transformers.LlamaForCausalLM(cfg)


# ----------------------------------------------------------------------------------------------------------------------
# pure logic
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_assign_by_size_matches_torch(seed):
    rng = random.Random(seed)
    dtypes = [torch.float32] if seed % 2 else [torch.float32, torch.bfloat16]
    tensors = [torch.empty(rng.randint(1, 5000), dtype=rng.choice(dtypes)) for _ in range(rng.randint(1, 30))]
    limits = [rng.randint(1, 8000), rng.randint(1, 20000)]
    order = list(range(len(tensors)))
    rng.shuffle(order)
    ours = assign_by_size(tensors, limits, order)
    theirs, _ = dist._compute_bucket_assignment_by_size(
        [tensors[i] for i in order], limits, [False] * len(tensors), order
    )
    if len(dtypes) == 1:
        assert ours == [list(b) for b in theirs]
    else:  # torch emits the still-open buckets of different dtypes in hash-map order
        assert sorted(map(tuple, ours)) == sorted(map(tuple, theirs))
    ours0 = assign_by_size(tensors, limits)
    theirs0, _ = dist._compute_bucket_assignment_by_size(tensors, limits, [False] * len(tensors))
    assert ours0 == [list(b) for b in theirs0]


def test_bucket_caps_follow_ddp():
    assert bucket_caps(None) == (dist._DEFAULT_FIRST_BUCKET_BYTES, 25 * 2**20)
    assert bucket_caps(25.0) == (25 * 2**20, 25 * 2**20)
    assert bucket_caps(0.05) == (52428, 52428)
    assert bucket_caps(4.0, 1.0) == (2**20, 4 * 2**20)
    with pytest.raises(ValueError):
        bucket_caps(0.0)


def test_tensor_crossing_the_cap_stays_in_its_bucket():
    model = nn.Sequential(
        nn.Linear(10, 10, bias=False), nn.Linear(10, 1000, bias=False), nn.Linear(1000, 1, bias=False)
    )
    plan = bucket_plan(model, 1000 * 4 / 2**20 * 0.999)
    # reverse order: 2.weight (1000 el.) alone closes bucket 0; then 1.weight (10 000) closes bucket 1 with nothing else
    assert [b.names for b in plan] == [("2.weight",), ("1.weight",), ("0.weight",)]
    assert [b.nbytes for b in plan] == [4000, 40000, 400]
    assert all(isinstance(b, Bucket) for b in plan)


def test_plan_skips_frozen_and_counts_bytes():
    model = lora_mlp()
    plan = bucket_plan(model, CAP_MB)
    names = [n for b in plan for n in b.names]
    assert sorted(names) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert all("lora" in n for n in names)
    assert sum(b.numel for b in plan) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert [b.index for b in plan] == list(range(len(plan)))


def test_flatten_roundtrip_with_language_dim():
    model = mlp()
    plan = bucket_plan(model, CAP_MB)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    grads = {n: torch.randn(3, *s) for n, s in shapes.items()}
    flat = flatten_by_plan(grads, plan, batch_dims=1)
    assert [f.shape for f in flat] == [(3, b.numel) for b in plan]
    back = unflatten_by_plan(flat, plan, shapes)
    assert back.keys() == grads.keys()
    for n in grads:
        assert torch.equal(back[n], grads[n])
    slices = bucket_slices(plan, shapes)
    for n, (bi, sl) in slices.items():
        assert torch.equal(flat[bi][:, sl].reshape(3, *shapes[n]), grads[n])
    flat1 = flatten_by_plan({n: g[0] for n, g in grads.items()}, plan)
    assert [f.shape for f in flat1] == [(b.numel,) for b in plan]


def test_grad_ready_order_restores_grads_and_validates():
    model = mlp()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    x = torch.randn(2, 16)
    order = grad_ready_order(model, lambda: model(x).sum().backward())
    assert order == [n for n, _ in model.named_parameters()][::-1]
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    assert bucket_plan(model, CAP_MB, ready_order=order) == bucket_plan(model, CAP_MB)
    with pytest.raises(ValueError, match="ready_order"):
        bucket_plan(model, CAP_MB, ready_order=order[:-1])


def test_empty_model():
    assert bucket_plan(nn.ReLU()) == [] and initial_bucket_plan(nn.ReLU()) == []


# ----------------------------------------------------------------------------------------------------------------------
# real DDP, one-process gloo group
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gloo_group(tmp_path_factory):
    if dist.is_initialized():
        pytest.skip("a process group is already initialised")
    store = dist.FileStore(str(tmp_path_factory.mktemp("gloo") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def record_ddp_buckets(model: nn.Module, step, iterations: int = 3, **ddp_kwargs) -> list[list[tuple[int, tuple]]]:
    """Per iteration, the (bucket index, parameter names) a comm hook sees."""
    names = {id(p): n for n, p in model.named_parameters()}
    seen: list[list[tuple[int, tuple]]] = []

    def hook(state, bucket):
        params = bucket.parameters()
        assert bucket.buffer().numel() == sum(p.numel() for p in params)
        seen[-1].append((bucket.index(), tuple(names[id(p)] for p in params)))
        fut = torch.futures.Future()
        fut.set_result(bucket.buffer())
        return fut

    ddp = DDP(model, **ddp_kwargs)
    ddp.register_comm_hook(None, hook)
    for _ in range(iterations):
        seen.append([])
        step(ddp)
    return [sorted(s) for s in seen]


def as_pairs(plan):
    return [(b.index, b.names) for b in plan]


def mlp_step(ddp):
    ddp(torch.randn(4, 16)).pow(2).mean().backward()


@pytest.mark.distributed
@pytest.mark.parametrize("builder", [mlp, lora_mlp], ids=["mlp", "lora"])
def test_ddp_buckets_sequential(gloo_group, builder):
    model = builder()
    seen = record_ddp_buckets(model, mlp_step, bucket_cap_mb=CAP_MB)
    plan = bucket_plan(model, CAP_MB)
    assert len(plan) > 2
    assert seen[0] == as_pairs(initial_bucket_plan(model, CAP_MB))  # iteration 0: one bucket, forward order
    assert len(seen[0]) == 1
    assert seen[1] == seen[2] == as_pairs(plan)  # after the rebuild


@pytest.mark.distributed
def test_ddp_buckets_partially_frozen(gloo_group):
    model = mlp()
    model[2].weight.requires_grad_(False)
    model[6].bias.requires_grad_(False)
    seen = record_ddp_buckets(model, mlp_step, bucket_cap_mb=CAP_MB)
    assert seen[1] == seen[2] == as_pairs(bucket_plan(model, CAP_MB))
    assert "2.weight" not in {n for _, names in seen[1] for n in names}


@pytest.mark.distributed
def test_ddp_buckets_find_unused_never_rebuilds(gloo_group):
    model = mlp()
    seen = record_ddp_buckets(model, mlp_step, bucket_cap_mb=CAP_MB, find_unused_parameters=True)
    expected = as_pairs(initial_bucket_plan(model, CAP_MB, find_unused_parameters=True))
    assert len(expected) > 2
    assert seen[0] == seen[1] == seen[2] == expected


@pytest.mark.distributed
def test_ddp_buckets_default_caps(gloo_group):
    model = nn.Sequential(*[nn.Linear(256, 256) for _ in range(12)])  # 3 MiB: 1 MiB first bucket, then 25 MiB
    seen = record_ddp_buckets(model, lambda d: d(torch.randn(2, 256)).sum().backward(), iterations=2)
    plan = bucket_plan(model, None)
    assert len(plan) == 2
    assert seen[1] == as_pairs(plan)


@pytest.mark.distributed
def test_ddp_buckets_llama_need_recorded_ready_order(gloo_group):
    model = tiny_llama()
    x = torch.randint(0, 500, (2, 8))

    def step(m):
        m(input_ids=x, labels=x).loss.backward()

    plan = bucket_plan(model, CAP_MB, ready_order=lambda: step(model))
    seen = record_ddp_buckets(model, step, bucket_cap_mb=CAP_MB)
    assert len(plan) > 2
    assert seen[1] == seen[2] == as_pairs(plan)
    assert seen[0] == as_pairs(initial_bucket_plan(model, CAP_MB))
    # HF registers the RMSNorms after attention/MLP, so plain reverse order is not DDP's ready order here
    assert as_pairs(bucket_plan(model, CAP_MB)) != seen[1]
