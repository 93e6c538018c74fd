"""Tiny pretrained bases (`init: pretrained`): each tiny twin pre-trained once on the offline multilingual corpus.

A random-init twin fine-tuned for tens of steps stays near the uniform loss (ln 4096 = 8.3), so methods cannot differ
on it. A pretrained base starts from a model that knows the tokens and the chat format: every chatterbot-corpus Q/A
pair of every language (28), chat-formatted, with a causal LM loss over all tokens, minus the pairs the default
held-out split keeps aside (`DataConfig()` split), so held-out losses of chatterbot suites stay held-out.

Deterministic: the start is the seeded tiny twin (`build_tiny`), the batch order comes from a generator of
(plan seed, "pretrain"), and the optimizer is plain AdamW with a cosine schedule. Cached like the twins (one folder per
key, written through a temporary folder and an atomic rename), and built under a file lock so that concurrent ranks
pre-train once and the others wait. The cache key holds what decides the weights: architecture, transformers version,
tokenizer fingerprint, init version, this module's version, the plan and the corpus package's version.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.models.tiny import INIT_VERSION, build_tiny, default_cache_dir, save_atomic
from harness.models.tokenizer import offline_tokenizer, tokenizer_fingerprint
from harness.seeding import generator

PRETRAIN_VERSION = 1  # bump when the corpus selection, the loss or the loop changes: it is part of the cache key


@dataclass(frozen=True)
class PretrainPlan:
    steps: int = 300
    batch_size: int = 16
    seq_len: int = 64
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.01
    seed: int = 0

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]


DEFAULT_PLAN = PretrainPlan()


def corpus_pairs() -> list[tuple[str, str]]:
    """Every chatterbot pair of every language, in language order, minus the default held-out split."""
    from harness.config import DataConfig
    from harness.data.chatterbot import load_pairs
    from harness.data.sft import _split
    from harness.languages import CHATTERBOT_DIRS

    everything = DataConfig(max_examples_per_language=10**9)  # the default split, nothing capped
    out = []
    for code in sorted(CHATTERBOT_DIRS):
        train, _ = _split(code, load_pairs(code), everything)
        out += [(ex.prompt, ex.response) for ex in train]
    return out


def corpus_rows(tok: Any, seq_len: int) -> list[list[int]]:
    rows = []
    for prompt, response in corpus_pairs():
        chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        ids = tok.apply_chat_template(chat, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "input_ids") else ids
        rows.append(list(ids)[:seq_len])
    return rows


def _batch(rows: list[list[int]], pick: torch.Tensor, pad_id: int) -> dict[str, torch.Tensor]:
    chosen = [rows[int(i)] for i in pick]
    width = max(len(r) for r in chosen)
    ids = torch.full((len(chosen), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(chosen):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def pretrain(model: torch.nn.Module, tok: Any, plan: PretrainPlan = DEFAULT_PLAN) -> list[float]:
    """Train `model` in place on the corpus for `plan.steps` steps; returns the loss of every step."""
    rows = corpus_rows(tok, plan.seq_len)
    gen = generator(plan.seed, "pretrain")
    opt = torch.optim.AdamW(model.parameters(), lr=plan.lr, weight_decay=plan.weight_decay)

    def factor(step: int) -> float:
        if step < plan.warmup_steps:
            return (step + 1) / plan.warmup_steps
        done = (step - plan.warmup_steps) / max(1, plan.steps - plan.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * done))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    model.train()
    losses = []
    for _ in range(plan.steps):
        pick = torch.randint(len(rows), (plan.batch_size,), generator=gen)
        loss = model(**_batch(rows, pick, tok.pad_token_id)).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@contextmanager
def _locked(lock: Path) -> Iterator[None]:
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # a second builder waits here, then finds the finished folder
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pretrained_key(arch: str, plan: PretrainPlan = DEFAULT_PLAN) -> str:
    try:
        corpus = version("chatterbot-corpus")
    except PackageNotFoundError:
        corpus = "none"
    tok = tokenizer_fingerprint(offline_tokenizer())[:8]
    return (f"pretrained-{arch}-tf{transformers.__version__}-tok{tok}-init{INIT_VERSION}-pt{PRETRAIN_VERSION}"
            f"-plan{plan.key()}-corpus{corpus}")


def build_pretrained(arch: str, cache_dir: Path | None = None, plan: PretrainPlan = DEFAULT_PLAN) -> Path:
    """Path of the cached pretrained base of `arch`, pre-training it on first use (minutes on 2 cores)."""
    cache_dir = cache_dir or default_cache_dir()
    path = cache_dir / pretrained_key(arch, plan)
    if (path / "config.json").exists():
        return path
    with _locked(cache_dir / f"{path.name}.lock"):
        if (path / "config.json").exists():
            return path
        start = build_tiny(arch, seed=0, cache_dir=cache_dir)
        tok = AutoTokenizer.from_pretrained(start)
        model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32)
        with torch.random.fork_rng(devices=[]):
            losses = pretrain(model, tok, plan)
        note = {"plan": asdict(plan), "pretrain_version": PRETRAIN_VERSION, "steps": len(losses),
                "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}
        save_atomic(model, tok, path, {"pretrain.json": json.dumps(note, indent=2) + "\n"})
    return path
