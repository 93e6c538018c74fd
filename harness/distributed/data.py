"""Per-rank batches: rank r at step s gets `batch_size_per_language` examples of its language.

Each language has one example stream, the same as `harness.data.sft.BalancedBatchSampler`'s: its permutation is
reshuffled every pass from (seed, language, pass). A step consumes `grad_accum × group size × b` consecutive examples
of each active language; rank j of the language's group takes chunk (micro·m + j). Positions are a pure function of the
step, so a resumed run and the single-process simulation see the same examples — and with N = K, grad_accum = 1 every
rank gets exactly the examples the single-process path puts in its language's part of the balanced batch.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from harness.distributed.assignment import StepAssignment, active_before


class LanguageStreams:
    def __init__(self, index_by_language: dict[str, Sequence[int]], seed: int):
        empty = [lang for lang, idx in index_by_language.items() if not idx]
        if empty:
            raise ValueError(f"no training examples for languages {empty}")
        self.index_by_language = {lang: list(idx) for lang, idx in index_by_language.items()}
        self.seed = seed
        self._perms: dict[tuple[str, int], list[int]] = {}

    def _perm(self, lang: str, epoch: int) -> list[int]:
        key = (lang, epoch)
        if key not in self._perms:
            order = list(self.index_by_language[lang])
            random.Random(f"{self.seed}/{lang}/{epoch}").shuffle(order)
            self._perms[key] = order
        return self._perms[key]

    def take(self, lang: str, start: int, count: int) -> list[int]:
        n = len(self.index_by_language[lang])
        return [self._perm(lang, pos // n)[pos % n] for pos in range(start, start + count)]


def rank_indices(streams: LanguageStreams, languages: list[str], world: int, per_rank: int, grad_accum: int,
                 step: int, rank: int, micro: int, assignment: StepAssignment) -> list[int]:
    lang_id = assignment.rank_language[rank]
    group = len(assignment.group(lang_id))
    j = assignment.member_index(rank)
    base = active_before(world, len(languages), lang_id, step) * grad_accum * group * per_rank
    start = base + (micro * group + j) * per_rank
    return streams.take(languages[lang_id], start, per_rank)


def make_batch_fn(dataset: Any, languages: list[str], world: int, per_rank: int, grad_accum: int, seed: int,
                  collate: Callable, device: torch.device | str = "cpu"):
    """batch_fn(step, rank, micro, assignment) for `DistEngine` over a `TokenizedLanguages` dataset."""
    streams = LanguageStreams(dataset.index_by_language, seed)

    def batch_fn(step: int, rank: int, micro: int, assignment: StepAssignment) -> dict[str, torch.Tensor]:
        idx = rank_indices(streams, languages, world, per_rank, grad_accum, step, rank, micro, assignment)
        batch = collate([dataset[i] for i in idx])
        return {k: v.to(device) for k, v in batch.items()}

    return batch_fn


def synthetic_batch_fn(vocab_size: int, seq_len: int, per_rank: int, seed: int, n_languages: int,
                       device: torch.device | str = "cpu"):
    """Token batches drawn per (language, step, rank, micro) from a seeded generator, with a per-language token
    distribution (languages conflict a little): for tests and benchmarks of the mechanics, never of quality."""
    from harness.seeding import generator

    def batch_fn(step: int, rank: int, micro: int, assignment: StepAssignment) -> dict[str, torch.Tensor]:
        lang = assignment.rank_language[rank]
        j = assignment.member_index(rank)
        g = generator(seed, "synthetic", lang, step, j, micro)
        lo = (lang * vocab_size) // (2 * n_languages)
        ids = torch.randint(lo, lo + vocab_size // 2, (per_rank, seq_len), generator=g)
        return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
                "labels": ids.clone().to(device), "language": torch.full((per_rank,), lang).to(device)}

    return batch_fn
