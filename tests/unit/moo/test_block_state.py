"""Stateful weightings through the block layer: one state per block, losses passed when needed, checkpointed and
restored (harness.moo.blocks.BlockRule, harness.moo.combiners.GramCombiner), refused under DDP where they cannot run."""

from __future__ import annotations

import io

import pytest
import torch

from harness.moo.blocks import Block, BlockRule
from harness.moo.combiners import CombinerSpec, GramCombiner
from harness.moo.weightings import combine, gram, stateful_weighting
from harness.seeding import generator

LANGS = ["en", "fr", "de"]


def grads(step, k=3, p=30):
    return torch.randn(k, p, generator=torch.Generator().manual_seed(100 + step), dtype=torch.float64)


def blocks():
    return [Block(0, ((0, 12),)), Block(1, ((12, 30),))]


def test_each_block_keeps_its_own_gradvac_state_across_steps():
    comb = GramCombiner(blocks(), CombinerSpec("gradvac", {"beta": 0.5}), seed=7)
    w = stateful_weighting("gradvac", beta=0.5)
    states = {b.index: w.init_state(3) for b in blocks()}
    for step in range(3):
        g = grads(step)
        out = comb(g, LANGS, step)
        for b in blocks():
            (s, e), = b.ranges
            c, states[b.index] = w(gram(g[:, s:e]), None, states[b.index], generator=generator(7, "pcgrad", step, b.index))
            torch.testing.assert_close(out.direction[s:e], combine(g[:, s:e], c))
    assert not torch.equal(comb.rule.states[0]["phi_hat"], comb.rule.states[1]["phi_hat"])


def test_famo_gets_the_losses_and_refuses_without_them():
    comb = GramCombiner([Block(0, ((0, 30),))], CombinerSpec("famo"), seed=0)
    assert comb.needs_losses
    with pytest.raises(ValueError, match="needs the per-language losses"):
        comb(grads(0), LANGS, 0)
    w = stateful_weighting("famo")
    state = w.init_state(3)
    for step, losses in enumerate(([2.0, 1.0, 3.0], [1.5, 0.9, 2.0], [1.2, 0.8, 1.0])):
        g, loss = grads(step), torch.tensor(losses, dtype=torch.float64)
        out = comb(g, LANGS, step, losses=loss)
        c, state = w(gram(g), loss, state)
        torch.testing.assert_close(out.direction, combine(g, c))


@pytest.mark.parametrize("solver", ["gradvac", "famo", "mgda"])
def test_state_dict_round_trip_continues_the_same_trajectory(solver):
    spec = CombinerSpec(solver, {}, normalize="l2")
    straight = GramCombiner(blocks(), spec, seed=1)
    losses = [torch.tensor([2.0 - 0.1 * s, 1.0, 3.0 - 0.3 * s], dtype=torch.float64) for s in range(4)]
    dirs = [straight(grads(s), LANGS, s, losses=losses[s]).direction for s in range(4)]
    first = GramCombiner(blocks(), spec, seed=1)
    for s in range(2):
        first(grads(s), LANGS, s, losses=losses[s])
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = GramCombiner(blocks(), spec, seed=1)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    for s in (2, 3):
        torch.testing.assert_close(resumed(grads(s), LANGS, s, losses=losses[s]).direction, dirs[s], rtol=0, atol=0)


def test_load_state_dict_refuses_another_weighting_or_shape():
    a = GramCombiner(blocks(), CombinerSpec("gradvac"), seed=0)
    a(grads(0), LANGS, 0)
    with pytest.raises(ValueError, match="gradvac"):
        GramCombiner(blocks(), CombinerSpec("famo"), seed=0).load_state_dict(a.state_dict())
    saved = a.state_dict()
    saved["blocks"]["0"] = {"phi_hat": torch.zeros(3, 2)}
    with pytest.raises(ValueError, match="shape"):
        GramCombiner(blocks(), CombinerSpec("gradvac"), seed=0).load_state_dict(saved)


def test_gradvac_rule_starts_as_pcgrad_and_only_stateful_rules_keep_state():
    rule = BlockRule(stateful_weighting("gradvac").__class__(beta=0.0))  # beta 0 at phi_hat 0: PCGrad
    g = gram(grads(0))
    from harness.moo.weightings import weighting

    pc = BlockRule(weighting("pcgrad"))
    torch.testing.assert_close(rule(g, 3, 0), pc(g, 3, 0))
    assert pc.states == {} and set(rule.states) == {0}


def test_ddp_refuses_rotating_languages_and_split_modules_with_the_reason():
    """FAMO runs under DDP (the engine all-gathers the losses); a per-language state cannot follow rotating
    languages, nor a module split over two buckets."""
    from harness.distributed.engine import EngineConfig, engine_weighting

    assert engine_weighting(EngineConfig(hook="full", weighting="famo"), 2, 2).needs_losses
    with pytest.raises(ValueError, match="'gradvac' cannot run under DDP: .*rotate"):
        engine_weighting(EngineConfig(hook="full", weighting="gradvac"), 2, 4)
    with pytest.raises(ValueError, match="'gradvac' cannot run under DDP: .*module"):
        engine_weighting(EngineConfig(hook="sharded", weighting="gradvac", granularity="module"), 2, 2)
    assert engine_weighting(EngineConfig(hook="sharded", weighting="gradvac"), 2, 2).needs_losses is False
