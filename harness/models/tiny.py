"""Tiny twins: random-init models of the base LLMs' architectures (a few M parameters), built offline.

Same architecture classes as Llama-3.1, Qwen3, Gemma-2 and Mistral (attention layout, norms, MLP, RoPE),
shrunk. Deterministic from the seed; saved with `save_pretrained` so `AutoModelForCausalLM` reloads them.
They assert mechanics (loss decreases, determinism, equivalences), never quality.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from harness.models.catalog import ARCHITECTURES
from harness.models.tokenizer import offline_tokenizer

TINY_SHAPE = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 512}


def default_cache_dir() -> Path:
    return Path(os.environ.get("POLYMOO_CACHE", Path(__file__).resolve().parents[2] / "results" / "cache"))


def tiny_config(arch: str, vocab_size: int, tokenizer_ids: dict[str, int]) -> PretrainedConfig:
    if arch not in ARCHITECTURES:
        raise KeyError(f"no tiny twin for architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    extra: dict = {"tie_word_embeddings": arch == "gemma2"}  # Gemma ties embeddings; the others do not
    if arch == "gemma2":
        extra |= {"query_pre_attn_scalar": TINY_SHAPE["head_dim"], "sliding_window": 64}
    if arch == "mistral":
        extra |= {"sliding_window": None}
    return AutoConfig.for_model(arch, vocab_size=vocab_size, **TINY_SHAPE, **tokenizer_ids, **extra)


def build_tiny(arch: str, seed: int = 0, cache_dir: Path | None = None) -> Path:
    """Path of the cached tiny twin of `arch` (model + tokenizer), building it on first use."""
    cache_dir = cache_dir or default_cache_dir()
    path = cache_dir / f"tiny-{arch}-s{seed}-tf{transformers.__version__}"
    if (path / "config.json").exists():
        return path
    tok = offline_tokenizer(cache_dir)
    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    config = tiny_config(arch, len(tok), ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if path.exists():  # another process won the race
        shutil.rmtree(tmp)
    else:
        tmp.rename(path)
    return path
