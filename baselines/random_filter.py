"""Random filter — the CONGRAD loop keeping a random subset of pairs with CONGRAD's keep ratio.

Method card: identical to `congrad` except the filter: in each iteration and language, ceil(ρ·n) of the n pairs
(at least one) are kept uniformly at random, drawn from a generator seeded by (seed, iteration, language). It isolates
the effect of *which* pairs CONGRAD keeps from the effect of training on fewer pairs. Reconstruction: the baseline is
named in CONGRAD's description; its sampling details are ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.method import preference_method
from harness.preference.method import LoopOptions
from harness.validate import option

if TYPE_CHECKING:
    from harness.preference.filters import RandomFilter


@dataclass(frozen=True, kw_only=True)
class RandomFilterOptions(LoopOptions):
    keep_ratio: float = option(0.5, "reconstruction", "fraction of each language's pairs kept at random "
                                                      "(same default as congrad.keep_ratio)")

    def check(self) -> list[tuple[str, str]]:
        out = super().check()
        if not 0 < self.keep_ratio <= 1:
            out.append(("keep_ratio", f"expected a number in (0, 1], got {self.keep_ratio}"))
        return out


def make_filter(options: RandomFilterOptions, run) -> RandomFilter:
    from harness.preference.filters import RandomFilter  # torch, TRL: imported when the method trains

    return RandomFilter(options.keep_ratio)


preference_method(name="random_filter", summary="Self-rewarding DPO keeping a random subset (CONGRAD's keep ratio)",
                  family="baseline", Options=RandomFilterOptions, make_filter=make_filter)
