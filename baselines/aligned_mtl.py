"""Aligned-MTL — independent component alignment of the gradient system over the whole trainable vector.

Method card
-----------
Paper: Senushkin, Patakin, Kuznetsov, Konushin, "Independent Component Alignment for Multi-Task Learning", CVPR 2023,
arXiv 2305.19000 (Algorithm 1). Reference code: github.com/SamsungLabs/MTL; torchjd's ``AlignedMTLWeighting``.

Public: with G = V Λ Vᵀ on its numerical rank, the balance transformation B = sqrt(s) V Λ^{-1/2} Vᵀ makes the aligned
gradients (the rows of B J) orthogonal with equal norms (condition number 1); d = wᵀ B J = Σ c_k g_k with c = B w.
Here a task is a language and the gradients span the whole trainable vector.

Choices, each an option (see `polymoo methods --long`):
- `scale_mode`: `min` (the paper's Algorithm 1, torchjd's default), `median`, or `rmse` (the official code);
- preference vector w: fixed to uniform 1/K (the only one that treats languages alike); rank tolerance torchjd's;
- `normalize` / `output_scale`: harness extensions (off by default), shared with `bkmoo`;
- `diagnostics`: `harness.moo.diagnostics`.
Implementation: the weighting `aligned_mtl` of `harness.moo.weightings` on the K×K Gram (float64),
`harness.moo.combiners`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.method import gradient_method
from harness.moo.options import WholeVectorOptions, whole_vector_factory
from harness.validate import option


@dataclass(frozen=True, kw_only=True)
class AlignedMTLOptions(WholeVectorOptions):
    scale_mode: Literal["min", "median", "rmse"] = option(
        "min", "paper", "s = the smallest kept eigenvalue (paper, Algorithm 1), their median, or their mean (rmse: "
                        "the official code)")


gradient_method(
    name="aligned_mtl", summary="Aligned-MTL: gradient system aligned to condition number 1, whole vector "
                                "(Senushkin et al. 2023)",
    family="baseline", Options=AlignedMTLOptions,
    make_combiner=whole_vector_factory("aligned_mtl"),
)
