"""Gradient weightings on the Gram matrix (MGDA, PCGrad, CAGrad, UPGrad, IMTL-G, mean) and their helpers.

``d = combine(grads, weighting(name, **options)(gram(grads)))``; see :mod:`harness.moo.weightings` for the conventions.
"""

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
