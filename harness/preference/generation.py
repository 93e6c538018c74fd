"""Batched sampling with HF `generate`: N responses per prompt, chat-formatted, left-padded, seeded.

The sampling seed is applied inside `torch.random.fork_rng`, so generation is a pure function of
(model, prompts, options, seed) and does not disturb the global RNG the rest of the run depends on.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Generations:
    texts: list[list[str]]  # per prompt, n responses
    new_tokens: int  # generated tokens, up to and including EOS, over all responses
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / max(self.seconds, 1e-9)


def chat_prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


END_OF_TURN_TOKENS = ("<|eot_id|>", "<end_of_turn>", "<|im_end|>", "<|end|>", "</s>")
"""Chat templates' end-of-turn tokens (Llama 3, Gemma, Qwen, the tiny tokenizer, Mistral): a reply ends at the first
one the tokenizer knows, not only at `eos_token_id` (Gemma's eos is `<eos>`, its turns end with `<end_of_turn>`)."""


def stop_token_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """EOS, the model's generation-config EOS ids, and every end-of-turn token of :data:`END_OF_TURN_TOKENS` in the
    vocabulary (ascending, no duplicates)."""
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(config_eos if isinstance(config_eos, list) else [config_eos])
    vocab = tokenizer.get_vocab()
    ids |= {vocab[t] for t in END_OF_TURN_TOKENS if t in vocab}
    return sorted(i for i in ids if isinstance(i, int))


def _until_stop(seq: list[int], stops: set[int]) -> list[int]:
    for i, token in enumerate(seq):
        if token in stops:
            return seq[: i + 1]
    return seq


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompts: Sequence[str], *, n: int, do_sample: bool = True,
             temperature: float = 1.0, top_p: float = 1.0, max_new_tokens: int = 64, batch_size: int = 16,
             seed: int = 0, max_prompt_tokens: int = 256) -> Generations:
    """`n` responses to each prompt (chat template with the generation prompt; prompt kept to its last
    `max_prompt_tokens` tokens). Batches hold `batch_size` prompts; each yields `n` sequences."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    stops = stop_token_ids(tokenizer, model)
    texts: list[list[str]] = []
    new_tokens = 0
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            chunk = [chat_prompt_ids(tokenizer, p)[-max_prompt_tokens:] for p in prompts[start: start + batch_size]]
            width = max(len(c) for c in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, c in enumerate(chunk):  # left padding for decoder-only generation
                ids[i, width - len(c):] = torch.tensor(c)
                mask[i, width - len(c):] = 1
            kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, num_return_sequences=n, pad_token_id=pad_id,
                                          eos_token_id=stops, do_sample=do_sample)
            if do_sample:
                kwargs |= dict(temperature=temperature, top_p=top_p, top_k=0)
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
            gen = out[:, width:].cpu()
            gen_rows: list[list[int]] = []  # each reply up to its first stop token (the rest is padding or later turns)
            for row in range(gen.shape[0]):
                gen_rows.append(_until_stop(gen[row].tolist(), set(stops)))
                new_tokens += len(gen_rows[-1])
            decoded = tokenizer.batch_decode(gen_rows, skip_special_tokens=True)
            for i in range(len(chunk)):
                texts.append([d.strip() for d in decoded[i * n: (i + 1) * n]])
    model.train(was_training)
    return Generations(texts, new_tokens, time.perf_counter() - t0)
