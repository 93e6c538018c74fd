"""Preference pairs: best vs worst judged response of each prompt; ties and prompts with < 2 scored responses skipped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pair:
    language: str
    prompt: str
    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float
    reference: str = ""

    def as_row(self) -> dict[str, object]:
        return {"language": self.language, "prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected,
                "chosen_score": self.chosen_score, "rejected_score": self.rejected_score}


@dataclass
class PairStats:
    prompts: int = 0
    pairs: int = 0
    ties: int = 0  # best == worst score, or identical texts
    too_few_scored: int = 0  # fewer than 2 responses with a score
    extra: dict[str, float] = field(default_factory=dict)


def build_pairs(language: str, prompts: Sequence[str], responses: Sequence[Sequence[str]],
                scores: Sequence[Sequence[float | None]], references: Sequence[str] | None = None,
                min_gap: float = 0.0) -> tuple[list[Pair], PairStats]:
    """For each prompt: chosen = highest score, rejected = lowest (first occurrence on equal scores, so the result is
    deterministic). Skipped: fewer than two scored responses; best - worst <= min_gap (a tie when min_gap = 0);
    identical chosen and rejected texts."""
    stats = PairStats(prompts=len(prompts))
    pairs: list[Pair] = []
    for i, prompt in enumerate(prompts):
        scored = [(s, j) for j, s in enumerate(scores[i]) if s is not None]
        if len(scored) < 2:
            stats.too_few_scored += 1
            continue
        best = max(scored, key=lambda t: (t[0], -t[1]))
        worst = min(scored, key=lambda t: (t[0], t[1]))
        chosen, rejected = responses[i][best[1]], responses[i][worst[1]]
        if best[0] - worst[0] <= min_gap or chosen == rejected:
            stats.ties += 1
            continue
        pairs.append(Pair(language, prompt, chosen, rejected, float(best[0]), float(worst[0]),
                          references[i] if references else ""))
    stats.pairs = len(pairs)
    return pairs, stats
