"""IMTL-G — impartial multi-task learning (gradient part) over the whole trainable vector (full-gradient baseline).

Method card
-----------
Paper: Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang, "Towards Impartial Multi-task Learning", ICLR 2021
(OpenReview IMPnRXEWpvr; no arXiv version known to this card). Reference code: none official; torchjd's ``IMTLG`` /
``IMTLGWeighting`` is followed.

Public: the direction d = Σ c_k g_k, Σ c_k = 1, whose projections on every *unit* gradient are equal (no task is
favoured): c ∝ pinv(G) sqrt(diag G), normalised to sum 1 (zeros when the sum vanishes).
Here a task is a language and the gradients span the whole trainable vector. The paper's loss-scale part (IMTL-L) is
not included: the harness's per-language losses are already token means.

Choices, each an option (see `polymoo methods --long`):
- the weighting has no options of its own; the solve is on G divided by its trace (scale-free 1e-12 threshold);
- `normalize` / `output_scale`: harness extensions (off by default), shared with `bkmoo`;
- `diagnostics`: `harness.moo.diagnostics`.
Implementation: the weighting `imtl_g` of `harness.moo.weightings` on the K×K Gram (float64), `harness.moo.combiners`.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.method import gradient_method
from harness.moo.options import WholeVectorOptions, whole_vector_factory


@dataclass(frozen=True, kw_only=True)
class IMTLGOptions(WholeVectorOptions):
    pass


gradient_method(
    name="imtl_g", summary="IMTL-G: equal projections on every unit language gradient, whole vector (Liu et al. 2021)",
    family="baseline", Options=IMTLGOptions,
    make_combiner=whole_vector_factory("imtl_g"),
)
