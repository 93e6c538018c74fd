"""Self-rewarding DPO — the CONGRAD loop without a pair filter (Yuan et al. 2024's recipe, multilingual).

Method card: identical to `congrad` (same prompts, sampling, judge, pairs, LP-DPO, iterations, evaluation) except that
every best-vs-worst pair is trained on. Every loop option is shared with CONGRAD and documented there and in
docs/congrad.md; all are reconstructions or harness choices (the self-rewarding recipe's additive 5-point rubric is
public; its use here as a multilingual baseline follows CONGRAD's description of its baselines).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.method import preference_method
from harness.preference.method import LoopOptions

if TYPE_CHECKING:
    from harness.preference.filters import NoFilter


@dataclass(frozen=True, kw_only=True)
class SelfRewardingOptions(LoopOptions):
    pass


def make_filter(options: SelfRewardingOptions, run) -> NoFilter:
    from harness.preference.filters import NoFilter  # torch, TRL: imported when the method trains

    return NoFilter()


preference_method(name="self_rewarding", summary="Self-rewarding DPO without a pair filter (CONGRAD baseline)",
                  family="baseline", Options=SelfRewardingOptions, make_filter=make_filter)
