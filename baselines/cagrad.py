"""CAGrad — conflict-averse gradient descent over the whole trainable vector (full-gradient baseline).

Method card
-----------
Paper: Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021,
arXiv 2110.14048. Reference code: github.com/Cranial-XIX/CAGrad.

Public: g0 = mean gradient; w = argmin over the simplex of g_wᵀg0 + c‖g0‖‖g_w‖; d = g0 + (c‖g0‖/‖g_w‖) g_w, which
maximises the worst local improvement of any task inside a ball of radius c‖g0‖ around g0. c = 0 is the mean (joint
SFT); c → ∞ approaches MGDA.

Choices, each an option (see `polymoo methods --long`):
- `c`: 0.5 (the reference code's default; 0.4 is used in some of the paper's experiments);
- `rescale`: 1 = divide d by 1 + c² (reference code default), 0 = none, 2 = divide by 1 + c;
- inner problem: solved exactly (golden-section over an auxiliary τ with an exact simplex QP inside) instead of the
  reference code's SLSQP call;
- `normalize` / `output_scale`: harness extensions (off by default), shared with `bkmoo`;
- `diagnostics`: `harness.moo.diagnostics`.
Implementation: the weighting `cagrad` of `harness.moo.weightings` on the K×K Gram (float64), `harness.moo.combiners`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from harness.method import gradient_method
from harness.moo.options import WholeVectorOptions, whole_vector_factory
from harness.validate import option


@dataclass(frozen=True, kw_only=True)
class CAGradOptions(WholeVectorOptions):
    c: float = option(0.5, "reference-code", "radius of the conflict-averse ball, relative to ‖g0‖")
    rescale: Literal[0, 1, 2] = option(1, "reference-code", "0: none, 1: d/(1+c²) (official default), 2: d/(1+c)")

    def check(self) -> list[tuple[str, str]]:
        return [("c", f"expected a non-negative number, got {self.c}")] if self.c < 0 else []


gradient_method(
    name="cagrad", summary="CAGrad conflict-averse direction over the whole trainable vector (Liu et al. 2021)",
    family="baseline", Options=CAGradOptions,
    make_combiner=whole_vector_factory("cagrad"),
)
