"""Language-per-rank assignment (DESIGN.md, "Execution modes", 2).

Every rank trains on ONE language per optimizer step (language-homogeneous batches):
- N >= K: contiguous groups of ranks per language; when K does not divide N the first N mod K languages get one rank
  more (N = 8, K = 6: groups of 2, 2, 1, 1, 1, 1). Every language gradient is the mean over its group, and joint
  SFT's `mean` hook weights languages, not ranks (`language_weight`), so a language never counts twice;
- N <  K: languages rotate over steps, rank r at step s -> language (s·N + r) mod K; each step then holds N distinct
  languages and the weighting is applied to those N language gradients.
The language gradient of a step is the mean of the gradients of the ranks that share the language.

The assignment is a pure function of (N, K, step), so every rank, the single-process simulation and a resumed run agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class AssignmentError(ValueError):
    pass


@dataclass(frozen=True)
class StepAssignment:
    step: int
    rank_language: tuple[int, ...]  # language id of every rank (length N)

    @property
    def languages(self) -> tuple[int, ...]:
        """Distinct languages of the step, ascending: the rows of the K_eff×P language-gradient matrix."""
        return tuple(sorted(set(self.rank_language)))

    def group(self, language: int) -> tuple[int, ...]:
        return tuple(r for r, lang in enumerate(self.rank_language) if lang == language)

    def member_index(self, rank: int) -> int:
        """Position of `rank` inside its language group (which slice of the language's examples it takes)."""
        return self.group(self.rank_language[rank]).index(rank)

    def mixing_matrix(self):
        """A (K_eff × N) with A[k, i] = 1/|group k| if rank i holds language k: language grads = A @ rank grads."""
        import torch

        langs = self.languages
        a = torch.zeros(len(langs), len(self.rank_language), dtype=torch.float64)
        for k, lang in enumerate(langs):
            members = self.group(lang)
            for r in members:
                a[k, r] = 1.0 / len(members)
        return a


    def language_weight(self, rank: int) -> float:
        """What rank ``rank``'s gradient counts for in the language-balanced mean, (1/K_eff) · (1/|its group|): with
        even groups 1/N, so the mean hook's all-reduce of ``buf · weight`` is plain DDP averaging."""
        return 1.0 / (len(self.languages) * len(self.group(self.rank_language[rank])))

    @property
    def even(self) -> bool:
        return len({len(self.group(lang)) for lang in self.languages}) == 1


def check_world(world_size: int, n_languages: int) -> None:
    if world_size < 1 or n_languages < 1:
        raise AssignmentError(f"need at least one rank and one language (got N={world_size}, K={n_languages})")


def group_sizes(world_size: int, n_languages: int) -> list[int]:
    """Ranks per language for N >= K: N // K each, one more for the first N mod K languages."""
    per, extra = divmod(world_size, n_languages)
    return [per + (lang < extra) for lang in range(n_languages)]


def assign(world_size: int, n_languages: int, step: int) -> StepAssignment:
    check_world(world_size, n_languages)
    if world_size >= n_languages:
        sizes = group_sizes(world_size, n_languages)
        return StepAssignment(step, tuple(lang for lang, size in enumerate(sizes) for _ in range(size)))
    return StepAssignment(step, tuple((step * world_size + r) % n_languages for r in range(world_size)))


def active_before(world_size: int, n_languages: int, language: int, step: int) -> int:
    """How many earlier steps (0..step-1) had `language` active: how far its example stream has advanced."""
    if world_size >= n_languages:
        return step
    period = n_languages // math.gcd(world_size, n_languages)

    def active(s: int) -> bool:
        return (language - s * world_size) % n_languages < world_size

    per_period = sum(active(s) for s in range(period))
    full, rest = divmod(step, period)
    return full * per_period + sum(active(s) for s in range(rest))


def describe(world_size: int, n_languages: int, languages: list[str], steps: int) -> dict:
    """JSON-able summary of the assignment (logged as an artifact)."""
    check_world(world_size, n_languages)
    mode = "groups" if world_size >= n_languages else "rotation"
    shown = min(steps, max(1, n_languages)) if mode == "rotation" else 1
    return {
        "world_size": world_size, "languages": languages, "mode": mode,
        "ranks_per_language": dict(zip(languages, group_sizes(world_size, n_languages), strict=True))
        if mode == "groups" else None,
        "steps": {s: [languages[lang] for lang in assign(world_size, n_languages, s).rank_language]
                  for s in range(shown)},
        "rule": ("contiguous groups: N // K ranks per language, one more for the first N mod K languages"
                 if mode == "groups" else "rank r at step s -> language (s*N + r) mod K"),
    }
