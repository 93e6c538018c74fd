"""Self-rewarding multilingual preference alignment (CONGRAD and its baselines): generation, judges, pairs,
gradient compression, per-sample DPO gradients and the JVP scorer, the CONGRAD filter, LP-DPO, and the loop.

`harness.method.preference_method(...)` registers a method
built from a pair filter.

The names below are loaded from their submodules on first access (PEP 562): importing a light submodule (`pairs`,
`judges`, `method`) must not import TRL through `dpo`, so that registering a method stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.preference.compression import COMPRESSIONS, ParamLayout, jl_epsilon, make_compressor
    from harness.preference.dpo import LPDPOTrainer, lp_dpo_loss
    from harness.preference.filters import CongradFilter, NoFilter, RandomFilter
    from harness.preference.judges import chrf, make_judge, parse_score
    from harness.preference.pairs import Pair, build_pairs

_EXPORTS = {
    "COMPRESSIONS": "compression", "ParamLayout": "compression", "jl_epsilon": "compression",
    "make_compressor": "compression",
    "LPDPOTrainer": "dpo", "lp_dpo_loss": "dpo",
    "CongradFilter": "filters", "NoFilter": "filters", "RandomFilter": "filters",
    "chrf": "judges", "make_judge": "judges", "parse_score": "judges",
    "Pair": "pairs", "build_pairs": "pairs",
}

__all__ = ["COMPRESSIONS", "CongradFilter", "LPDPOTrainer", "NoFilter", "Pair", "ParamLayout", "RandomFilter",
           "build_pairs", "chrf", "jl_epsilon", "lp_dpo_loss", "make_compressor", "make_judge", "parse_score"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
