"""Tiny twins: random-init models of the base LLMs' architectures (a few M parameters), built offline.

Same architecture classes as Llama-3.1, Qwen3, Gemma-2 and Mistral (attention layout, norms, MLP, RoPE),
shrunk. Saved with `save_pretrained` so `AutoModelForCausalLM` reloads them. They assert mechanics (loss
decreases, determinism, equivalences), never quality.

The weights come from the project's own seeded initialiser (`init_tiny_weights`), not from the library's
`_init_weights`: a transformers release that changes its initialisation (or the order it draws in) must not move
every tiny-twin number. `weights_fingerprint` names the result, and golden records store it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from harness.models.catalog import ARCHITECTURES
from harness.models.tokenizer import offline_tokenizer, tokenizer_fingerprint
from harness.seeding import generator

TINY_SHAPE = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 512}
INIT_STD = 0.02  # the initializer_range of every base config (Llama, Qwen3, Gemma-2, Mistral)
INIT_VERSION = 1  # bump when init_tiny_weights changes: it is part of the cache key


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


@torch.no_grad()
def init_tiny_weights(model: torch.nn.Module, seed: int) -> None:
    """Every matrix (embeddings, projections) ~ N(0, INIT_STD²) from a generator of (seed, parameter name), so a
    parameter's values depend on its name only, not on the library's draw order. Vectors (norm scales, biases) keep
    the architecture's constant init (ones, or zeros for Gemma's 1 + w norms); a non-constant vector is refused,
    since its values would then come from the library."""
    for name, param in model.named_parameters():
        if param.dim() >= 2:
            values = torch.randn(param.shape, generator=generator(seed, "tiny-init", name), dtype=torch.float32)
            param.copy_(values * INIT_STD)
        elif param.numel() and not torch.all(param == param.flatten()[0]):
            raise ValueError(f"tiny twin init: vector parameter {name} is not constant; give it an explicit init")


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 (12 hex) of the state dict: names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}\x00{t.dtype}\x00{tuple(t.shape)}\x01".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:12]


def build_tiny(arch: str, seed: int = 0, cache_dir: Path | None = None) -> Path:
    """Path of the cached tiny twin of `arch` (model + tokenizer), building it on first use."""
    cache_dir = cache_dir or default_cache_dir()
    tok = offline_tokenizer()
    key = f"tf{transformers.__version__}-tok{tokenizer_fingerprint(tok)[:8]}-init{INIT_VERSION}"
    path = cache_dir / f"tiny-{arch}-s{seed}-{key}"
    if (path / "config.json").exists():
        return path
    ids = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    config = tiny_config(arch, len(tok), ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    init_tiny_weights(model, seed)
    save_atomic(model, tok, path)
    return path


def save_atomic(model: torch.nn.Module, tok: object, path: Path, notes: dict[str, str] | None = None) -> None:
    """Save model, tokenizer and text `notes` (file name -> text) to `path` through a temporary folder and one rename:
    a reader (another rank, another process) sees a whole model or none; when two writers race, the loser drops its
    identical copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)  # type: ignore[attr-defined]
    for name, text in (notes or {}).items():
        (tmp / name).write_text(text)
    try:
        tmp.rename(path)  # atomic: a reader sees a whole twin or none
    except OSError:
        if not (path / "config.json").exists():
            raise
        shutil.rmtree(tmp)  # another process won the race with identical bytes
