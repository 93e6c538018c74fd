"""Full MGDA — the min-norm convex combination of the per-language gradients over the whole trainable vector.

Method card
-----------
Paper: Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018, arXiv 1810.04650
(MGDA: Désidéri 2012). Reference code: github.com/isl-org/MultiObjectiveOptimization (Frank-Wolfe min-norm solver).

Public: d = Σ c_k g_k with c = argmin over the simplex of ‖Σ c_k g_k‖² — the min-norm point of the convex hull of the
gradients, a common descent direction for every task unless the point is Pareto-stationary (d = 0).
Here a task is a language and the gradients span the whole trainable vector (no MGDA-UB shared-representation bound:
"full MGDA", the baseline whose memory Bucket-Level MOO reports as prohibitive at scale).

Choices, each an option (see `polymoo methods --long`):
- solver: exact (closed form for K=2 with exact corners, support enumeration for K ≤ 8, an exact active-set method
  above: docs/solvers.md) instead of the reference
  Frank-Wolfe loop, whose 0.999/0.001 clamps and fixed iteration count give 1.7–4.6 % suboptimal points (DESIGN.md);
- `normalize`: `none` (default) or `l2` — the reference code's `normalization_type` offers l2 / loss / loss+ / none;
  the loss-based ones need losses the combiner does not see, so only l2 is offered;
- `output_scale`: `raw` (the min-norm point itself, as in the paper) or `mean_norm` (harness extension);
- `diagnostics`: `harness.moo.diagnostics`.
Implementation: the weighting `mgda` of `harness.moo.weightings` on the K×K Gram (float64), `harness.moo.combiners`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.method import gradient_method
from harness.moo.options import WholeVectorOptions, whole_vector_factory
from harness.validate import option


@dataclass(frozen=True, kw_only=True)
class MGDAOptions(WholeVectorOptions):
    normalize: Literal["none", "l2"] = option("none", "reference-code", "gradient normalisation before the min-norm "
                                                                       "solve (reference code: l2|loss|loss+|none)")
    output_scale: Literal["raw", "mean_norm"] = option("raw", "paper", "raw: the min-norm point (paper); mean_norm: "
                                                                      "rescaled to ‖mean gradient‖ (harness)")


gradient_method(
    name="mgda", summary="Full MGDA: exact min-norm combination over the whole trainable vector (Sener & Koltun 2018)",
    family="baseline", Options=MGDAOptions,
    make_combiner=whole_vector_factory("mgda"),
)
