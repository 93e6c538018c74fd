"""The four tiny twins build offline, save, reload with the Auto classes, and train (loss decreases)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.config import LoraConfig
from harness.data.sft import Example, TokenizedLanguages, collate
from harness.models.catalog import ARCHITECTURES, resolve_model
from harness.models.loading import load_model
from harness.models.tiny import build_tiny

EXAMPLES = {"en": [Example("en", "Hello", "Hi, how are you?"), Example("en", "What is AI?", "Artificial intelligence.")],
            "fr": [Example("fr", "Bonjour", "Salut, ça va ?"), Example("fr", "Merci", "De rien")]}


def _batch(tokenizer):
    ds = TokenizedLanguages(tokenizer, EXAMPLES, 32)
    return collate(tokenizer.pad_token_id)([ds[i] for i in range(len(ds))])


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_twin_builds_reloads_and_trains(arch, tmp_path):
    from harness.train.sft import token_losses  # transformers.Trainer: imported by the test, not at collection

    path = build_tiny(arch)
    assert build_tiny(arch) == path, "cached"
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == arch
    n_params = sum(p.numel() for p in model.parameters())
    assert 5e5 < n_params < 1e7, n_params
    assert tok.chat_template and tok.pad_token_id is not None
    # fresh build from the same seed in another folder gives the same weights
    other = AutoModelForCausalLM.from_pretrained(build_tiny(arch, cache_dir=tmp_path))
    for (n, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=False):
        assert torch.equal(a, b), n
    batch = _batch(tok)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        sums, counts = token_losses(model, batch)
        loss = sums.sum() / counts.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.5, losses


def test_lora_from_config_trains_only_adapters():
    model, tok = load_model("llama", "tiny", lora=LoraConfig(rank=4, alpha=8))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_model_names_resolve_per_scale():
    assert resolve_model("llama3.1-8b", "tiny").source == "tiny:llama"
    assert resolve_model("llama3.1-8b", "full").source == "meta-llama/Llama-3.1-8B"
    assert resolve_model("gemma2-2b", "tiny").arch == "gemma2"
    assert resolve_model("org/some-model", "full").source == "org/some-model"
    with pytest.raises(KeyError):
        resolve_model("org/some-model", "tiny")
