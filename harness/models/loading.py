"""Load any HF causal LM by hub id, local path or tiny twin, with dtype and optional LoRA (peft)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.config import LoraConfig
from harness.models.catalog import resolve_model
from harness.models.tiny import build_tiny

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def model_path(name: str, scale: str, cache_dir: Path | None = None, init: str = "random") -> str:
    """Folder (or hub id) of a model; a tiny twin is built on first use, random-init or pretrained (`init`)."""
    resolved = resolve_model(name, scale)
    if resolved.is_tiny:
        arch = resolved.source.removeprefix("tiny:")
        if init == "pretrained":
            from harness.models.pretrain import build_pretrained

            return str(build_pretrained(arch, cache_dir=cache_dir))
        return str(build_tiny(arch, seed=0, cache_dir=cache_dir))
    return resolved.source


def load_model(name: str, scale: str, dtype: str = "float32", lora: LoraConfig | None = None,
               cache_dir: Path | None = None, init: str = "random") -> tuple[Any, Any]:
    """(model, tokenizer). Tiny twins always start from the same weights (init seed 0) whatever the run seed;
    `init: pretrained` starts them from their pretrained base (harness.models.pretrain)."""
    path = model_path(name, scale, cache_dir=cache_dir, init=init)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
    if lora is not None:
        model = apply_lora(model, lora)
    return model, tokenizer


def apply_lora(model: Any, lora: LoraConfig) -> Any:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    cfg = PeftLoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                         target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)
