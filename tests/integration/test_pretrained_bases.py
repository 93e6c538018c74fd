"""Tiny pretrained bases: deterministic, cached atomically under a key that names the plan, and better than random."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.config import DataConfig
from harness.data.sft import load_language_data
from harness.evaluate.heldout import heldout_loss
from harness.models.pretrain import PretrainPlan, build_pretrained, pretrained_key
from harness.models.tiny import build_tiny, weights_fingerprint

PLAN = PretrainPlan(steps=25, batch_size=8, seq_len=48, lr=3e-3, warmup_steps=2)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    first = build_pretrained("llama", cache_dir=tmp_path_factory.mktemp("a"), plan=PLAN)
    second = build_pretrained("llama", cache_dir=tmp_path_factory.mktemp("b"), plan=PLAN)
    return first, second


def test_two_builds_give_the_same_weights_and_the_cache_is_reused(built):
    first, second = built
    a = AutoModelForCausalLM.from_pretrained(first)
    b = AutoModelForCausalLM.from_pretrained(second)
    assert weights_fingerprint(a) == weights_fingerprint(b)
    assert build_pretrained("llama", cache_dir=first.parent, plan=PLAN) == first  # cached: no second pre-training
    note = json.loads((first / "pretrain.json").read_text())
    assert note["steps"] == PLAN.steps and note["last_loss"] < note["first_loss"]
    assert not list(first.parent.glob("*.tmp*")), "the temporary folder was renamed away"


def test_the_key_names_what_decides_the_weights():
    assert pretrained_key("llama", PLAN) != pretrained_key("llama", PretrainPlan(steps=26))
    assert pretrained_key("llama", PLAN) != pretrained_key("qwen3", PLAN)
    assert "corpus" in pretrained_key("llama", PLAN) and "tok" in pretrained_key("llama", PLAN)


def test_pretrained_lowers_heldout_loss_vs_random(built, tmp_path):
    data = load_language_data(DataConfig(max_examples_per_language=40), ["en", "fr"])  # the default held-out split
    held = {lang: data.heldout[lang][:10] for lang in ("en", "fr")}
    losses = {}
    for name, path in (("random", build_tiny("llama", cache_dir=tmp_path)), ("pretrained", built[0])):
        model = AutoModelForCausalLM.from_pretrained(path)
        losses[name] = heldout_loss(model, AutoTokenizer.from_pretrained(path), held, 64)
    for lang in ("en", "fr"):
        assert losses["pretrained"][f"eval/loss/{lang}"] < losses["random"][f"eval/loss/{lang}"] - 0.5
