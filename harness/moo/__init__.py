"""Gradient weightings on the Gram matrix (MGDA, PCGrad, CAGrad, UPGrad, IMTL-G, mean) and their helpers.

``d = combine(grads, weighting(name, **options)(gram(grads)))``; see :mod:`harness.moo.weightings` for the conventions.

The names below are loaded from :mod:`harness.moo.weightings` on first access (PEP 562), so importing a torch-free
submodule such as :mod:`harness.moo.options` (what registering a gradient method needs) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.moo.weightings import (
        WEIGHTINGS,
        Weighting,
        available_weightings,
        combine,
        gram,
        mgda_min_norm,
        min_norm_residual,
        weighting,
    )

__all__ = [
    "WEIGHTINGS",
    "Weighting",
    "available_weightings",
    "combine",
    "gram",
    "mgda_min_norm",
    "min_norm_residual",
    "weighting",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from harness.moo import weightings

        value = getattr(weightings, name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
