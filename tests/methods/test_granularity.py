"""bkmoo's `granularity` option (harness.moo.blocks): `whole` is the full-gradient method, `ddp_bucket` is the per-bucket
loop Bucket-Level MOO always ran, `module` / `tensor` train through the single-process path, and the option reaches
the distributed path (hook resolution, GradientPlan)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.config import MethodSpec
from harness.executor import gradient_plan, resolve_hook
from harness.method import RunContext
from harness.models.loading import load_model
from harness.moo.weightings import combine, gram, weighting
from harness.registry import get_method, parse_options
from harness.seeding import generator
from tests.methods._tiny import RecordingTracker, _data, make_suite, max_diff, train

STEPS = 2


def _combiner(options: dict, tmp_path: Path):
    spec = {"name": "bkmoo", "options": options}
    suite = make_suite(None, spec)
    model, tokenizer = load_model("llama", "tiny")
    run = RunContext(suite=suite, method=MethodSpec(**spec), model_name="llama", seed=3, model=model,
                     tokenizer=tokenizer, data=_data(suite.data, suite.languages.all), tracker=RecordingTracker(),
                     run_dir=Path(tmp_path))
    return get_method("bkmoo").build(parse_options("bkmoo", options), run), run


def test_ddp_bucket_is_the_per_bucket_loop(tmp_path):
    """The default granularity weights each DDP bucket on its own Gram, PCGrad seeded by (seed, step, bucket)."""
    comb, run = _combiner({"solver": "pcgrad", "bucket_cap_mb": 0.25}, tmp_path)
    assert comb.granularity == "ddp_bucket" and len(comb.blocks) == 6
    layout = run.tracker.dicts["buckets.json"]
    total = sum(p.numel() for p in run.model.parameters())
    g = torch.randn(5, total, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # exact Grams
    g[1] = -0.8 * g[0] + 0.2 * g[1]
    out = comb(g, ["en", "fr", "de", "es", "it"], 4).direction
    for bucket in layout["buckets"]:
        cols = torch.cat([torch.arange(s, e) for s, e in bucket["flat_ranges"]])
        c = weighting("pcgrad")(gram(g[:, cols]), generator=generator(3, "pcgrad", 4, bucket["index"]))
        torch.testing.assert_close(out[cols], combine(g[:, cols], c), rtol=1e-6, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["mgda", "pcgrad"])
def test_whole_granularity_equals_the_full_gradient_method(tmp_path, solver):
    overrides = {"train": {"steps": STEPS}}
    full = train(solver, tmp_path=tmp_path, overrides=overrides)
    whole = train("bkmoo", {"solver": solver, "granularity": "whole", "bucket_cap_mb": 0.25}, tmp_path=tmp_path,
                  overrides=overrides)
    assert whole.tracker.dicts["buckets.json"]["granularity"] == "whole"
    assert full.changed()
    # float32 partial Grams: the whole vector's Gram and the sum of the diagnostic buckets' Grams (full MGDA) differ
    # in rounding order only (~1e-7 relative), which Adam's normalised steps carry into the weights
    assert max_diff(full.params(), whole.params()) <= 2e-5
    assert whole.tracker.series("train/loss") == pytest.approx(full.tracker.series("train/loss"), rel=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(("granularity", "n_blocks"), [("module", 2 + 2), ("tensor", 21)])
def test_module_and_tensor_train_through_the_single_process_path(tmp_path, granularity, n_blocks):
    options = {"solver": "mgda", "granularity": granularity, "bucket_cap_mb": 0.25}
    out = train("bkmoo", options, tmp_path=tmp_path, overrides={"train": {"steps": STEPS}})
    layout = out.tracker.dicts["buckets.json"]
    assert layout["granularity"] == granularity and len(layout["blocks"]) == n_blocks
    assert out.changed() and all(torch.isfinite(p).all() for p in out.params().values())
    last = out.tracker.metrics[STEPS]
    assert f"moo/bucket/{n_blocks - 1}/cos_min" in last and last["train/skipped_steps"] == 0
    bucket = train("bkmoo", {**options, "granularity": "ddp_bucket"}, tmp_path=tmp_path,
                   overrides={"train": {"steps": STEPS}})
    assert max_diff(out.params(), bucket.params()) > 0  # the blocks really differ from the buckets


@pytest.mark.parametrize(("options", "hook", "granularity"), [
    ({}, "sharded", "ddp_bucket"),
    ({"granularity": "module", "hook": "allgather"}, "allgather", "module"),
    ({"granularity": "tensor"}, "sharded", "tensor"),
    ({"granularity": "whole"}, "full", "whole"),
    ({"granularity": "whole", "hook": "full_gather"}, "full_gather", "whole"),
])
def test_granularity_reaches_the_distributed_path(tmp_path, options, hook, granularity):
    comb, _ = _combiner({"bucket_cap_mb": 0.25, **options}, tmp_path)
    spec = gradient_plan(comb)
    assert (resolve_hook(spec, "sharded"), spec.granularity) == (hook, granularity)


@pytest.mark.parametrize("options", [{"granularity": "whole", "hook": "sharded"},
                                     {"granularity": "module", "hook": "full"}])
def test_a_hook_that_does_not_implement_the_granularity_is_refused(options):
    with pytest.raises(ValueError, match=r"options\.hook: granularity"):
        parse_options("bkmoo", options)
