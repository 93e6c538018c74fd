"""Gradient weightings of the K×K Gram matrix (DESIGN.md, "Idea 1"), one module each, in the TorchJD manner.

``d = combine(grads, weighting(name, **options)(gram(grads)))`` for the stateless ones; every weighting, stateful or
not, also runs through ``stateful_weighting(name, **options)`` as ``(coefficients, state) = w(gram, losses, state)``
(see :mod:`harness.moo.weightings.base` for both conventions, the helpers and the registry).

Shared conventions: coefficients are float64 on the Gram's device; ``G`` is symmetrised and divided by its largest
diagonal entry first (every weighting here is invariant to that scale, which keeps 1e30-scale and 1e-30-scale
matrices finite); zero, rank-deficient and huge matrices give finite output, never NaN; every option is explicit so
configs can log it. Each module's docstring is its card (paper, what it computes, option defaults and their sources):

* stateless: :mod:`.mean`, :mod:`.mgda`, :mod:`.pcgrad`, :mod:`.cagrad`, :mod:`.upgrad`, :mod:`.imtl_g`,
  :mod:`.aligned_mtl`;
* stateful: :mod:`.gradvac` (EMA cosine targets per language pair), :mod:`.famo` (loss-based task logits).

Adding one: a module here that defines its factory and calls :func:`register_weighting` at import, plus its import
below.
"""

from __future__ import annotations

from harness.moo.weightings import (  # noqa: F401  (each registers itself on import)
    aligned_mtl,
    cagrad,
    famo,
    gradvac,
    imtl_g,
    mean,
    mgda,
    pcgrad,
    upgrad,
)
from harness.moo.weightings.base import (
    STATEFUL_WEIGHTINGS,
    WEIGHTINGS,
    StatefulWeighting,
    Weighting,
    WeightingState,
    as_stateful,
    available_weightings,
    combine,
    gram,
    load_state_dict,
    register_weighting,
    state_dict,
    stateful_weighting,
    weighting,
)
from harness.moo.weightings.famo import FAMO
from harness.moo.weightings.gradvac import GradVac
from harness.moo.weightings.mgda import mgda_min_norm, min_norm_residual

__all__ = [
    "FAMO",
    "STATEFUL_WEIGHTINGS",
    "WEIGHTINGS",
    "GradVac",
    "StatefulWeighting",
    "Weighting",
    "WeightingState",
    "as_stateful",
    "available_weightings",
    "combine",
    "gram",
    "load_state_dict",
    "mgda_min_norm",
    "min_norm_residual",
    "register_weighting",
    "state_dict",
    "stateful_weighting",
    "weighting",
]
