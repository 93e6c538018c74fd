"""Saved models: find and load a checkpoint for evaluation or analysis outside training.

A run saves its final weights under `<run_dir>/final` (full weights, or a peft adapter when the suite
trains LoRA); `resolve_checkpoint` accepts that folder, the run folder itself, or any HF model folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def resolve_checkpoint(path: str | Path) -> Path:
    """The model folder behind `path`; FileNotFoundError with what was looked for when there is none."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    for candidate in (p, p / "final"):
        if (candidate / "config.json").exists() or (candidate / "adapter_config.json").exists():
            return candidate
    if (p / "DONE").exists() or (p / "mlflow_run_id").exists():
        raise FileNotFoundError(f"run folder {str(p)!r} has no saved model under final/ (was train.save_model false?)")
    raise FileNotFoundError(f"{str(p)!r} is not a model checkpoint: no config.json or adapter_config.json "
                            f"(in it or in {str(p / 'final')!r})")


def is_adapter(path: Path) -> bool:
    return (path / "adapter_config.json").exists() and not (path / "config.json").exists()


def load_checkpoint(path: str | Path, dtype: str = "float32") -> tuple[Any, Any, Path]:
    """(model, tokenizer, resolved folder); a peft adapter folder is loaded on top of its base model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models.loading import DTYPES

    folder = resolve_checkpoint(path)
    if is_adapter(folder):
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(str(folder), dtype=DTYPES[dtype])
    else:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=DTYPES[dtype])
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model.eval()
    return model, tokenizer, folder


def load_any(name_or_path: str, scale: str = "tiny", dtype: str = "float32") -> tuple[Any, Any, str]:
    """A checkpoint folder, a run folder, or a model name of the catalog (tiny twin at scale tiny)."""
    if Path(name_or_path).exists():
        model, tok, folder = load_checkpoint(name_or_path, dtype)
        return model, tok, str(folder)
    from harness.models.catalog import check_model_name
    from harness.models.loading import load_model

    problem = check_model_name(name_or_path, scale)
    if problem:
        raise FileNotFoundError(f"{name_or_path!r} is neither an existing checkpoint folder nor a model name: {problem}")
    model, tok = load_model(name_or_path, scale, dtype)
    model.eval()
    return model, tok, name_or_path
