"""The contract every registered gradient method keeps (parametrised over the registry, so a new method is covered
without editing this file): it trains two steps on the tiny twin and moves the parameters, deterministically for a
seed; it logs the per-language losses (and, with a combiner, the moo/* diagnostics and buckets.json); its options
round-trip through YAML; every option names its source and the module docstring is a method card."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
import yaml

from harness.registry import get_method, parse_options
from harness.validate import to_dict
from tests.methods._tiny import gradient_methods, max_diff, train

METHODS = gradient_methods()
SOURCES = {"paper", "reference-code", "reconstruction", "harness"}
# options that make a method exercise its interesting path on the tiny twin (several buckets)
CONTRACT_OPTIONS = {"bkmoo": {"bucket_cap_mb": 0.25}, "pcgrad": {"diagnostics": {"bucket_cap_mb": 0.25}}}
NO_COMBINER = {"joint_sft"}  # gradient methods that train with one mixed-batch loss (no per-language gradients)
MOO_KEYS = ["moo/cos/en-fr", "moo/conflict_fraction", "moo/residual/global", "moo/residual/bucket_mean",
            "moo/dir_norm_ratio", "moo/weights/en/mean", "moo/bucket/0/cos_min"]


def test_registry_has_the_gradient_methods():
    assert {"joint_sft", "pcgrad", "mgda", "cagrad", "bkmoo"} <= set(METHODS)


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_two_steps_change_parameters_log_and_are_deterministic(tmp_path, name):
    out = train(name, CONTRACT_OPTIONS.get(name), tmp_path=tmp_path / "a")
    assert out.changed()
    assert all(torch.isfinite(p).all() for p in out.params().values())
    last = out.tracker.metrics[2]
    for lang in out.suite.languages.seen:
        assert f"train/loss/{lang}" in last
    assert last["train/skipped_steps"] == 0
    if name not in NO_COMBINER:
        for key in MOO_KEYS:
            assert key in last, key
        assert "buckets.json" in out.tracker.dicts
        assert "moo/conflict_heatmap.png" in out.tracker.figures
    again = train(name, CONTRACT_OPTIONS.get(name), tmp_path=tmp_path / "b")
    assert max_diff(out.params(), again.params()) == 0.0
    assert out.tracker.series("train/loss") == again.tracker.series("train/loss")


@pytest.mark.parametrize("name", METHODS)
def test_options_round_trip_through_yaml(name):
    method = get_method(name)
    options = parse_options(name, CONTRACT_OPTIONS.get(name, {}))
    text = yaml.safe_dump(to_dict(options))
    assert parse_options(name, yaml.safe_load(text) or {}) == options
    assert parse_options(name, {}) == method.Options()


def _fields(cls):
    for f in dataclasses.fields(cls):
        yield f
        if dataclasses.is_dataclass(f.default):
            yield from _fields(type(f.default))


@pytest.mark.parametrize("name", METHODS)
def test_every_option_names_its_source_and_the_docstring_is_a_card(name):
    method = get_method(name)
    for f in _fields(method.Options):
        assert f.metadata.get("source") in SOURCES, f"{name}.{f.name}: source {f.metadata.get('source')!r}"
        assert f.metadata.get("doc"), f"{name}.{f.name}: no doc"
    module = sys.modules[method.Options.__module__]  # the method module: its Options live there
    doc = module.__doc__ or ""
    assert len(doc) > 200
    if method.family == "proposed" or name != "joint_sft":
        assert "arXiv" in doc
        assert "Method card" in doc
