"""Inputs that tests and golden records rely on are frozen in the repository and do not move with a library
release: the data slice and the tiny tokenizer match their provenance notes, and tiny-twin weights come from the
project's own seeded initialiser (independent of the library's draws and of the global RNG)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from harness.models.catalog import ARCHITECTURES
from harness.models.tiny import INIT_STD, init_tiny_weights, tiny_config, weights_fingerprint
from harness.models.tokenizer import FROZEN_DIR, offline_tokenizer, tokenizer_fingerprint
from tests.conftest import DATA_SLICE


def test_data_slice_matches_its_provenance():
    note = json.loads(DATA_SLICE.with_name("chatterbot_slice.provenance.json").read_text())
    assert hashlib.sha256(DATA_SLICE.read_bytes()).hexdigest() == note["sha256"], (
        "tests/fixtures/chatterbot_slice.jsonl changed without re-freezing: python -m tests.fixtures.freeze '<why>'")
    languages = {json.loads(line)["language"] for line in DATA_SLICE.read_text(encoding="utf-8").splitlines()}
    assert {"en", "fr", "de", "es", "nl"} <= languages


def test_frozen_tokenizer_matches_its_provenance_and_is_a_copy():
    note = json.loads((FROZEN_DIR / "provenance.json").read_text())
    tok = offline_tokenizer()
    assert tokenizer_fingerprint(tok) == note["fingerprint"] and len(tok) == note["vocab_size"] == 4096
    tok.padding_side = "left"
    assert offline_tokenizer().padding_side == "right", "callers get their own copy"


def _fresh(arch: str, global_seed: int) -> torch.nn.Module:
    tok = offline_tokenizer()
    config = tiny_config(arch, len(tok), {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
                                          "eos_token_id": tok.eos_token_id})
    torch.manual_seed(global_seed)  # the library's own init draws from the global RNG
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_own_init_ignores_the_library_init_and_the_global_rng(arch):
    a, b = _fresh(arch, 1), _fresh(arch, 2)
    assert weights_fingerprint(a) != weights_fingerprint(b), "the library init differs, so the test can tell"
    init_tiny_weights(a, seed=0)
    init_tiny_weights(b, seed=0)
    assert weights_fingerprint(a) == weights_fingerprint(b)
    matrices = [p for p in a.parameters() if p.dim() >= 2]
    assert matrices and all(abs(float(p.detach().std()) - INIT_STD) < 0.1 * INIT_STD for p in matrices)


def test_own_init_depends_on_the_parameter_name_and_seed_only():
    a = _fresh("llama", 0)
    init_tiny_weights(a, seed=0)
    weights = dict(a.named_parameters())
    q0, q1 = weights["model.layers.0.self_attn.q_proj.weight"], weights["model.layers.1.self_attn.q_proj.weight"]
    assert not torch.equal(q0, q1)
    c = _fresh("llama", 0)
    init_tiny_weights(c, seed=1)
    assert weights_fingerprint(a) != weights_fingerprint(c)


def test_a_non_constant_vector_parameter_is_refused():
    config = AutoConfig.for_model("llama", vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                  num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        model.model.norm.weight.uniform_()
    with pytest.raises(ValueError, match="model.norm.weight is not constant"):
        init_tiny_weights(model, seed=0)
