"""Held-out loss and perplexity per language (token-mean over the response tokens)."""

from __future__ import annotations

import math
from typing import Any

import torch

from harness.data.sft import Example, TokenizedLanguages, collate
from harness.train.losses import token_losses


@torch.no_grad()
def heldout_loss(model: Any, tokenizer: Any, examples: dict[str, tuple[Example, ...]], max_len: int,
                 batch_size: int = 16) -> dict[str, float]:
    """{'eval/loss/<lang>': ..., 'eval/ppl/<lang>': ...} over every language given."""
    was_training = model.training
    model.eval()
    dataset = TokenizedLanguages(tokenizer, examples, max_len)
    pad = collate(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    out: dict[str, float] = {}
    for lang, idx in dataset.index_by_language.items():
        total, count = 0.0, 0.0
        for i in range(0, len(idx), batch_size):
            batch = {k: v.to(device) for k, v in pad([dataset[j] for j in idx[i: i + batch_size]]).items()}
            sums, counts = token_losses(model, batch)
            total += float(sums.sum())
            count += float(counts.sum())
        loss = total / max(count, 1.0)
        out[f"eval/loss/{lang}"] = loss
        out[f"eval/ppl/{lang}"] = math.exp(min(loss, 50.0))
    model.train(was_training)
    return out
