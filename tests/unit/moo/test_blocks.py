"""The block layer (harness.moo.blocks): layouts of every granularity, Grams additive over blocks and slices, seeded
coefficients, and the sharded hook's slice arithmetic emulated in one process."""

from __future__ import annotations

import math

import pytest
import torch

from harness.buckets import ddp_bucket_plan
from harness.distributed.hooks import check_granularity
from harness.distributed.workers import micro_llama
from harness.moo.blocks import (
    GRANULARITIES,
    Block,
    BlockRule,
    block_directions,
    block_gram,
    block_grams,
    block_index,
    bucket_blocks,
    flat_offsets,
    model_blocks,
    nested_index,
    pad_blocks,
    restrict,
    solve_blocks,
)
from harness.moo.weightings import combine, gram, weighting
from harness.seeding import generator

CAP = 0.02  # MiB: every decoder layer of the micro llama spans two buckets


@pytest.fixture(scope="module")
def model():
    return micro_llama()


def _coverage(blocks: list[Block], total: int) -> torch.Tensor:
    hits = torch.zeros(total, dtype=torch.int64)
    for b in blocks:
        for s, e in b.ranges:
            hits[s:e] += 1
    return hits


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_every_granularity_covers_every_coordinate_exactly_once(model, granularity):
    total = sum(p.numel() for p in model.parameters())
    blocks = model_blocks(model, granularity, CAP)
    assert torch.equal(_coverage(blocks, total), torch.ones(total, dtype=torch.int64))
    assert sorted(n for b in blocks for n in b.names) == sorted(flat_offsets(model))
    expected = {"whole": 1, "ddp_bucket": len(ddp_bucket_plan(model, CAP)), "module": 2 + 2,
                "tensor": len(list(model.parameters()))}[granularity]
    assert len(blocks) == expected


def test_module_blocks_are_embeddings_each_layer_and_the_head(model):
    names = {b.index: b.names for b in model_blocks(model, "module")}
    assert names[0] == ("model.embed_tokens.weight",)
    assert all(n.startswith("model.layers.0.") for n in names[1])
    assert all(n.startswith("model.layers.1.") for n in names[2])
    assert names[3] == ("model.norm.weight", "lm_head.weight")
    # runs of top-level parameters between numbered containers are one group each, in registration order
    index = block_index(["emb", "0.w", "0.b", "mid", "1.w", "norm", "head"], "module")
    assert index == {"emb": 0, "0.w": 1, "0.b": 1, "mid": 2, "1.w": 3, "norm": 4, "head": 4}


@pytest.mark.parametrize("granularity", ["ddp_bucket", "module", "tensor"])
def test_blocks_nested_in_each_bucket_cover_it_exactly_once(model, granularity):
    plan = ddp_bucket_plan(model, CAP)
    index = nested_index(model, granularity)
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    owners: dict[int, set[int]] = {}
    for bucket in plan:
        blocks = bucket_blocks(bucket.index, bucket.names, [sizes[n] for n in bucket.names], index)
        assert torch.equal(_coverage(blocks, bucket.numel), torch.ones(bucket.numel, dtype=torch.int64))
        for b in blocks:
            owners.setdefault(b.index, set()).add(bucket.index)
    if granularity == "tensor":  # a tensor always lies in one bucket
        assert all(len(buckets) == 1 for buckets in owners.values())
    if granularity == "module":  # a module spanning two buckets is split at the boundary
        assert any(len(buckets) > 1 for buckets in owners.values())


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_block_grams_sum_to_the_whole_gram(model, granularity):
    blocks = model_blocks(model, granularity, CAP)
    total = sum(b.numel for b in blocks)
    rows = torch.randn(3, total, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # exact sums
    whole = gram(rows)
    torch.testing.assert_close(torch.stack(block_grams(rows, blocks)).sum(0), whole, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(block_gram(rows, blocks[0], chunk=7), block_gram(rows, blocks[0]), rtol=1e-12,
                               atol=1e-9)


def test_float32_grams_are_float64_grams_to_float32_rounding(model):
    """float32 rows: float32 partial Grams summed in float64 (`FLOAT32_GRAM_CHUNK`): within 1e-6 of ‖g_i‖‖g_j‖ of
    the float64 Gram, whatever the chunking, with no error growth over 1.3 M columns."""
    blocks = model_blocks(model, "ddp_bucket", CAP)
    total = sum(b.numel for b in blocks)
    rows = torch.randn(4, total, generator=torch.Generator().manual_seed(1)) * torch.tensor([[1.0], [1e-3], [1e3], [1]])
    exact = gram(rows.double())
    scale = exact.diagonal().sqrt().outer(exact.diagonal().sqrt())
    for fast in (gram(rows), gram(rows, chunk=1000), torch.stack(block_grams(rows, blocks)).sum(0)):
        assert fast.dtype == torch.float64
        assert ((fast - exact).abs() / scale).max() < 1e-6


def test_gram_is_additive_over_padded_slices():
    blocks = [Block(0, ((0, 5), (17, 23))), Block(1, ((5, 17),)), Block(2, ((23, 29),))]
    rows = torch.randn(4, 29, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # exact additivity
    for world in (2, 3, 4, 7):
        c = math.ceil(29 / world)
        padded = torch.cat([rows, rows.new_zeros(4, world * c - 29)], dim=1)
        local = [restrict(pad_blocks(blocks, 29, world * c), r * c, (r + 1) * c) for r in range(world)]
        for i, b in enumerate(blocks):
            partial = sum(block_gram(padded[:, r * c:(r + 1) * c], local[r][i]) for r in range(world))
            torch.testing.assert_close(partial, block_gram(rows, b), rtol=1e-12, atol=1e-12)
        assert all(len(slice_blocks) == len(blocks) for slice_blocks in local)  # same list on every rank


@pytest.mark.parametrize("solver", ["mgda", "pcgrad", "cagrad"])
def test_sharded_slices_give_the_allgather_direction(solver):
    """The sharded hook's arithmetic in one process: per-slice partial Grams summed, the same solve, own slices
    combined and concatenated == the whole-bucket block loop of the allgather hook."""
    blocks = [Block(3, ((0, 5), (17, 23))), Block(1, ((5, 17),)), Block(8, ((23, 29),))]
    rows = torch.randn(4, 29, generator=torch.Generator().manual_seed(2))
    rows[1] = -0.7 * rows[0] + 0.3 * rows[1]  # conflicts, so PCGrad's order matters
    rule = BlockRule(weighting(solver), seed=5)
    expected = solve_blocks(rows, blocks, rule, step=4)
    world = 3
    c = math.ceil(29 / world)
    padded = torch.cat([rows, rows.new_zeros(4, world * c - 29)], dim=1)
    local = [restrict(pad_blocks(blocks, 29, world * c), r * c, (r + 1) * c) for r in range(world)]
    grams = sum(torch.stack(block_grams(padded[:, r * c:(r + 1) * c], local[r])) for r in range(world))
    slices = [block_directions(padded[:, r * c:(r + 1) * c], local[r], rule.coefficients(grams, 4, local[r]))
              for r in range(world)]
    torch.testing.assert_close(torch.cat(slices)[:29], expected, rtol=1e-5, atol=1e-6)


def test_block_rule_seeds_pcgrad_by_seed_step_and_block_index():
    g = torch.randn(5, 40, generator=torch.Generator().manual_seed(3))
    g[1] = -0.8 * g[0] + 0.2 * g[1]
    g[2] = -0.5 * g[0] + 0.5 * g[2]
    G = gram(g)
    rule = BlockRule(weighting("pcgrad"), seed=7)
    for step, index in ((0, 0), (3, 2), (3, 5)):
        expected = weighting("pcgrad")(G, generator=generator(7, "pcgrad", step, index))
        torch.testing.assert_close(rule(G, step, index), expected, rtol=0, atol=0)
    assert any(not torch.equal(rule(G, 3, 0), rule(G, 3, i)) for i in range(1, 8))
    assert torch.equal(BlockRule(weighting("mgda"), seeded=False)(G, 0, 0), BlockRule(weighting("mgda"))(G, 9, 9))


def test_block_directions_combine_each_block_on_its_own_coefficients():
    blocks = [Block(0, ((0, 3), (6, 9))), Block(1, ((3, 6),))]
    rows = torch.randn(2, 9, generator=torch.Generator().manual_seed(4))
    coeffs = [torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.25, 0.5], dtype=torch.float64)]
    d = block_directions(rows, blocks, coeffs)
    torch.testing.assert_close(d[[0, 1, 2, 6, 7, 8]], rows[0, [0, 1, 2, 6, 7, 8]])
    torch.testing.assert_close(d[3:6], combine(rows[:, 3:6], coeffs[1]))


def test_hooks_refuse_granularities_they_do_not_implement():
    for hook in ("allgather", "sharded"):
        for granularity in ("ddp_bucket", "module", "tensor"):
            check_granularity(hook, granularity)
        with pytest.raises(ValueError, match="granularity 'whole' under DDP is the full-gradient path"):
            check_granularity(hook, "whole")
    for hook in ("full", "full_gather"):
        check_granularity(hook, "whole")
        with pytest.raises(ValueError, match="needs a bucket hook"):
            check_granularity(hook, "module")
    with pytest.raises(ValueError, match="unknown granularity"):
        check_granularity("sharded", "layer")


@pytest.mark.parametrize("solver", ["mean", "mgda", "pcgrad", "cagrad"])
def test_the_hooks_block_loop_reads_nothing_back_to_the_host(monkeypatch, solver):
    """Inside a DDP hook the layout is host-side metadata and the solve pure tensor code: no tensor is converted to a
    Python value (each conversion is a device synchronisation on a GPU). `normalize: l2` is the documented exception.
    The solvers take their accelerator path (support enumeration up to K = 8; the CPU's is the host active set)."""
    import importlib

    from harness.moo import _qp

    cagrad = importlib.import_module("harness.moo.weightings.cagrad")

    def as_on_an_accelerator(k: int, device: torch.device) -> bool:
        return k <= _qp.ENUM_MAX

    monkeypatch.setattr(_qp, "uses_enumeration", as_on_an_accelerator)
    monkeypatch.setattr(cagrad, "uses_enumeration", as_on_an_accelerator)
    blocks = [Block(3, ((0, 5), (17, 23))), Block(1, ((5, 17),)), Block(8, ((23, 29),))]
    rows = torch.randn(4, 29, generator=torch.Generator().manual_seed(5))
    rules = [BlockRule(weighting(solver), "none", scale, seed=1) for scale in ("raw", "mean_norm")]

    def host_sync(*_args, **_kwargs):
        raise AssertionError("a tensor was read back to the host")

    for name in ("__bool__", "item", "tolist", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, host_sync)
    for rule in rules:
        solve_blocks(rows, blocks, rule, step=2)
        local = restrict(pad_blocks(blocks, 29, 30), 10, 20)
        block_directions(rows[:, 10:20], local, rule.coefficients(torch.stack(block_grams(rows[:, 10:20], local)), 2,
                                                                   local))
