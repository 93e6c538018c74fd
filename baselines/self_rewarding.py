"""Self-rewarding DPO — the CONGRAD loop without a pair filter (Yuan et al. 2024's recipe, multilingual).

Method card: identical to `congrad` (same prompts, sampling, judge, pairs, LP-DPO, iterations, evaluation) except that
every best-vs-worst pair is trained on. Every loop option is shared with CONGRAD and documented there and in
docs/congrad.md; all are reconstructions or harness choices (the self-rewarding recipe's additive 5-point rubric is
public; its use here as a multilingual baseline follows CONGRAD's description of its baselines).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.preference.filters import NoFilter
from harness.preference.loop import LoopOptions, preference_method


@dataclass(frozen=True, kw_only=True)
class SelfRewardingOptions(LoopOptions):
    pass


preference_method(name="self_rewarding", summary="Self-rewarding DPO without a pair filter (CONGRAD baseline)",
                  family="baseline", Options=SelfRewardingOptions, make_filter=lambda options, run: NoFilter())
