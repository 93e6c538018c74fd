"""PCGrad — gradient surgery over the whole trainable vector (full-gradient baseline).

Method card
-----------
Paper: Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for Multi-Task Learning", NeurIPS 2020,
arXiv 2001.06782. Reference code: github.com/tianheyu927/PCGrad (TensorFlow); a widely used PyTorch port is
github.com/WeiChengTseng/Pytorch-PCGrad.

Public (paper, Algorithm 1): for every task i, walk the other tasks j in random order; when g_i'·g_j < 0, subtract the
projection of g_i' onto the *original* g_j; the update is the **sum** of the projected gradients.
Here a "task" is a language: one gradient per seen language of the balanced batch, over the whole trainable vector
(LoRA included), computed by the shared trainer (`harness.train.sft`), then optimizer, clipping and schedule of joint SFT.

Choices, each an option (see `polymoo methods --long`):
- `reduction`: `sum` (paper, official code) or `mean` (the PyTorch port's default) — a different step size;
- projection order: from `harness.seeding.generator(seed, "pcgrad", step, 0)` — the paper says "random order" only;
- `normalize` / `output_scale`: harness extensions (off by default), shared with `bkmoo` so the two are comparable;
- `diagnostics`: what is logged (cosines, conflicts, residuals, weights, heatmap; `harness.moo.diagnostics`).
Implementation: the weighting `pcgrad` of `harness.moo.weightings` on the K×K Gram (float64), `harness.moo.combiners`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.method import gradient_method
from harness.moo.options import WholeVectorOptions, whole_vector_factory
from harness.validate import option


@dataclass(frozen=True, kw_only=True)
class PCGradOptions(WholeVectorOptions):
    reduction: Literal["sum", "mean"] = option("sum", "paper", "sum (paper, Algorithm 1) or mean (PyTorch port) of "
                                                              "the projected per-language gradients")


gradient_method(
    name="pcgrad", summary="PCGrad gradient surgery over the whole trainable vector (Yu et al. 2020)",
    family="baseline", Options=PCGradOptions,
    make_combiner=whole_vector_factory("pcgrad"),
)
