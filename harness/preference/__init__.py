"""Self-rewarding multilingual preference alignment (CONGRAD and its baselines): generation, judges, pairs,
gradient compression, per-sample DPO gradients and the JVP scorer, the CONGRAD filter, LP-DPO, and the loop.

`preference_method(...)` (in `harness.preference.loop`) registers a method built from a pair filter.
"""

from harness.preference.compression import COMPRESSIONS, ParamLayout, jl_epsilon, make_compressor
from harness.preference.dpo import LPDPOTrainer, lp_dpo_loss
from harness.preference.filters import CongradFilter, NoFilter, RandomFilter
from harness.preference.judges import chrf, make_judge, parse_score
from harness.preference.pairs import Pair, build_pairs

__all__ = ["COMPRESSIONS", "CongradFilter", "LPDPOTrainer", "NoFilter", "Pair", "ParamLayout", "RandomFilter",
           "build_pairs", "chrf", "jl_epsilon", "lp_dpo_loss", "make_compressor", "make_judge", "parse_score"]
