"""The Gram combiners (harness.moo.combiners) and diagnostics on synthetic gradients: per-block maths, options,
seeding, the DDP bucket layout on a tiny twin, and the metrics/artifacts the diagnostics produce."""

from __future__ import annotations

import pytest
import torch

from harness.buckets import bucket_plan
from harness.moo import combine, gram, weighting
from harness.moo.combiners import (
    Block,
    CombinerSpec,
    GramCombiner,
    block_coefficients,
    blocks_for_plan,
    ddp_bucket_plan,
    flat_offsets,
)
from harness.moo.diagnostics import Diagnostics, DiagnosticsOptions, cosines
from tests.methods._tiny import RecordingTracker

SOLVERS = {"mean": {}, "mgda": {}, "pcgrad": {"reduction": "sum"}, "cagrad": {"c": 0.5, "rescale": 1}}
LANGS = ["en", "fr", "de", "es"]


def grads(k=4, p=40, seed=0):
    return torch.randn(k, p, generator=torch.Generator().manual_seed(seed))


def two_blocks(p=40, cut=15):
    return [Block(0, ((cut, p),)), Block(1, ((0, cut),))]


@pytest.mark.parametrize("solver", SOLVERS)
def test_whole_combiner_is_the_weighting_on_the_whole_vector(solver):
    g = grads()
    comb = GramCombiner([Block(0, ((0, 40),))], CombinerSpec(solver, SOLVERS[solver]), seed=3)
    out = comb(g, LANGS, step=5)
    gen = torch.Generator().manual_seed(0)
    if solver == "pcgrad":
        from harness.seeding import generator

        gen = generator(3, "pcgrad", 5, 0)
    c = weighting(solver, **SOLVERS[solver])(gram(g), generator=gen)
    torch.testing.assert_close(out.direction, combine(g, c), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("solver", SOLVERS)
def test_bucket_combiner_applies_the_weighting_per_block(solver):
    g = grads()
    comb = GramCombiner(two_blocks(), CombinerSpec(solver, SOLVERS[solver]), seed=1)
    out = comb(g, LANGS, step=2)
    from harness.seeding import generator

    for block in two_blocks():
        (s, e), = block.ranges
        gen = generator(1, "pcgrad", 2, block.index) if solver == "pcgrad" else None
        c = weighting(solver, **SOLVERS[solver])(gram(g[:, s:e]), generator=gen)
        torch.testing.assert_close(out.direction[s:e], combine(g[:, s:e], c), rtol=1e-6, atol=1e-6)


def test_design_golden_direction_through_the_combiner():
    j = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    out = GramCombiner([Block(0, ((0, 3),))], CombinerSpec("mgda"))(j, ["a", "b"], 0)
    torch.testing.assert_close(out.direction, torch.tensor([0.0, 1.0, 1.0]), atol=1e-6, rtol=0)


def test_pcgrad_order_depends_on_step_and_bucket_only():
    g = grads(k=6, p=30, seed=4)
    g[1] = -0.8 * g[0] + 0.2 * g[1]  # make conflicts so the order matters
    g[2] = -0.5 * g[0] + 0.5 * g[2]
    blocks = [Block(0, ((0, 30),))]
    comb = GramCombiner(blocks, CombinerSpec("pcgrad"), seed=0)
    a, b = comb(g, LANGS + ["it", "pt"], 0).direction, comb(g, LANGS + ["it", "pt"], 0).direction
    assert torch.equal(a, b)
    state = torch.get_rng_state()
    outs = {s: comb(g, LANGS + ["it", "pt"], s).direction for s in range(6)}
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is never touched
    assert any(not torch.allclose(outs[0], outs[s]) for s in range(1, 6))


def test_l2_normalize_matches_mgda_l2_and_drops_zero_gradients():
    g = grads()
    g[1] *= 50.0
    c = block_coefficients(gram(g), weighting("mgda"), normalize="l2")
    torch.testing.assert_close(c, weighting("mgda", normalize="l2")(gram(g)), rtol=1e-9, atol=1e-12)
    g[2] = 0.0
    for solver in SOLVERS:
        c = block_coefficients(gram(g), weighting(solver), normalize="l2", gen=torch.Generator().manual_seed(0))
        assert torch.isfinite(c).all() and c[2] == 0.0


@pytest.mark.parametrize("solver", SOLVERS)
def test_mean_norm_output_scale_matches_the_mean_gradient_norm_per_block(solver):
    g = grads()
    out = GramCombiner(two_blocks(), CombinerSpec(solver, SOLVERS[solver], output_scale="mean_norm"))(g, LANGS, 0)
    for s, e in ((0, 15), (15, 40)):
        expected = g[:, s:e].mean(0).norm()
        assert float(out.direction[s:e].norm()) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("case", ["one_language", "zero_row", "all_zero", "huge", "duplicate"])
def test_degenerate_gradients_give_finite_directions(solver, case):
    g = grads()
    if case == "one_language":
        g = g[:1]
    elif case == "zero_row":
        g[1] = 0.0
    elif case == "all_zero":
        g.zero_()
    elif case == "huge":
        g = g * 1e18
    elif case == "duplicate":
        g[1] = g[0]
    for normalize in ("none", "l2"):
        for scale in ("raw", "mean_norm"):
            spec = CombinerSpec(solver, SOLVERS[solver], normalize=normalize, output_scale=scale)
            diag = Diagnostics(RecordingTracker(), LANGS[: len(g)], two_blocks(), DiagnosticsOptions(), total_steps=1)
            out = GramCombiner(two_blocks(), spec, diagnostics=diag)(g, LANGS[: len(g)], 0)
            assert torch.isfinite(out.direction).all()
            assert all(v == v and abs(v) != float("inf") for v in out.metrics.values())
    if case == "one_language" and solver != "cagrad":
        torch.testing.assert_close(out.direction, g[0] * (1.0 if scale == "raw" else 1.0))


def test_diagnostics_metrics_and_artifacts():
    # DESIGN.md "Idea 2": g1=(1,1), g2=(-1,-2) over two 1-D buckets (each Pareto-stationary, the whole is not),
    # plus a third bucket where the languages agree
    g = torch.tensor([[1.0, 1.0, 2.0], [-1.0, -2.0, 2.0]])
    blocks = [Block(0, ((0, 1),)), Block(1, ((1, 2),)), Block(2, ((2, 3),))]
    tracker = RecordingTracker()
    diag = Diagnostics(tracker, ["en", "fr"], blocks, DiagnosticsOptions(dump_every=2), total_steps=3)
    comb = GramCombiner(blocks, CombinerSpec("mgda"), diagnostics=diag)
    m = comb(g, ["en", "fr"], 0).metrics
    cos = float(cosines(gram(g))[0, 1])
    assert m["moo/cos/en-fr"] == pytest.approx(cos)
    assert m["moo/bucket/0/cos/en-fr"] < 0 < m["moo/bucket/2/cos/en-fr"]
    assert m["moo/conflict_fraction"] == pytest.approx(2 / 3)
    assert m["moo/bucket/0/residual"] == pytest.approx(0.0, abs=1e-9)
    assert m["moo/bucket/1/residual"] == pytest.approx(0.0, abs=1e-9)
    assert m["moo/residual/global"] > 0.1  # bucket-stationary does not imply globally stationary
    assert m["moo/weights/en/min"] <= m["moo/weights/en/mean"] <= m["moo/weights/en/max"]
    plain = GramCombiner(blocks, CombinerSpec("mgda"))
    assert m["moo/dir_norm_ratio"] == pytest.approx(float(plain(g, ["en", "fr"], 0).direction.norm())
                                                    / float(g.mean(0).norm()), rel=1e-6)
    assert not tracker.dicts  # no dump before dump_every steps
    comb(g, ["en", "fr"], 1)
    assert "moo/dump/step_000002.json" in tracker.dicts and "moo/conflict_heatmap.json" in tracker.dicts
    assert not tracker.figures  # the picture is drawn when training ends, outside the timed steps
    comb(g, ["en", "fr"], 2)  # last step: dump again
    dump = tracker.dicts["moo/dump/step_000003.json"]
    assert dump["buckets"][0]["weights"].keys() == {"en", "fr"}
    heat = tracker.dicts["moo/conflict_heatmap.json"]
    assert heat["conflict_frequency"] == [[1.0], [1.0], [0.0]]
    comb.close()
    comb.close()  # drawn once
    assert list(tracker.figures) == ["moo/conflict_heatmap.png"]


def test_diagnostics_follow_log_every():
    diag = Diagnostics(RecordingTracker(), LANGS, two_blocks(), DiagnosticsOptions(), total_steps=10, log_every=4)
    assert [s for s in range(10) if diag.due(s)] == [3, 7, 9]
    off = Diagnostics(RecordingTracker(), LANGS, two_blocks(), DiagnosticsOptions(enabled=False), total_steps=10)
    assert not any(off.due(s) for s in range(10))


def _tiny_llama():
    from harness.models.loading import load_model

    return load_model("llama", "tiny")[0]


def test_ddp_bucket_plan_records_the_ready_order_and_leaves_no_trace():
    model = _tiny_llama()
    x = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(1))
    expected = bucket_plan(model, 0.25, ready_order=lambda: model(input_ids=x, labels=x).loss.backward())
    state = torch.get_rng_state()
    plan = ddp_bucket_plan(model, 0.25)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(p.grad is None for p in model.parameters())
    assert [b.names for b in plan] == [b.names for b in expected]
    assert [b.names for b in plan] != [b.names for b in bucket_plan(model, 0.25)]  # HF norms: not reverse order
    blocks = blocks_for_plan(plan, flat_offsets(model))
    assert len(blocks) == 6
    covered = sorted(r for b in blocks for r in b.ranges)
    assert covered[0][0] == 0 and all(a[1] <= b[0] for a, b in zip(covered, covered[1:], strict=False))
    assert sum(b.numel for b in blocks) == sum(p.numel() for p in model.parameters())
