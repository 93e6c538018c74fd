"""Fixtures of the preference tests: the tiny llama twin (full fine-tuning and LoRA) and a handful of pairs."""

from __future__ import annotations

import pytest

from harness.preference.pairs import Pair

PAIRS = [
    Pair("en", "Hello, how are you?", "I am fine, thank you.", "no", 3.0, 1.0),
    Pair("en", "What is AI?", "Artificial intelligence is a field of computer science.", "dunno what", 4.0, 0.0),
    Pair("en", "Tell me a joke", "Why did the chicken cross the road?", "jokes jokes jokes jokes", 2.0, 1.0),
    Pair("fr", "Bonjour", "Salut, ça va ?", "bof bof bof bof", 5.0, 2.0),
    Pair("fr", "Qui es-tu ?", "Je suis un assistant.", "rien", 4.0, 1.0),
    Pair("fr", "Quelle heure est-il ?", "Il est midi.", "je ne sais pas du tout l'heure", 3.0, 0.0),
    Pair("de", "Hallo", "Guten Tag!", "x", 4.0, 2.0),
    Pair("de", "Wie geht es dir?", "Mir geht es gut, danke.", "schlecht schlecht", 3.0, 1.0),
]


@pytest.fixture(scope="module")
def tiny_llama():
    from harness.models.loading import load_model

    model, tok = load_model("llama", "tiny")
    model.eval()
    return model, tok


@pytest.fixture(scope="module")
def tiny_llama_lora():
    from harness.config import LoraConfig
    from harness.models.loading import load_model

    model, tok = load_model("llama", "tiny", lora=LoraConfig(rank=4, alpha=8, target_modules=("q_proj", "v_proj")))
    # give the (zero-initialised) B matrices some weight so LoRA gradients are not degenerate
    import torch

    g = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.copy_(torch.randn(p.shape, generator=g) * 0.05)
    model.eval()
    return model, tok


@pytest.fixture
def pairs() -> list[Pair]:
    return list(PAIRS)
