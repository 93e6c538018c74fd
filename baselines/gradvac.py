"""GradVac — Gradient Vaccine over the whole trainable vector (full-gradient baseline, stateful).

Method card
-----------
Paper: Wang, Tsvetkov, Firat, Cao, "Gradient Vaccine: Investigating and Improving Multi-task Optimization in Massively
Multilingual Models", ICLR 2021, arXiv 2010.05874 (Algorithm 1) — the multilingual-interference baseline of the field.
Reference code: none official; LibMTL and torchjd (``GradVacWeighting``) implement it; torchjd is cross-checked.

Public: for every language i, walk the other j in random order; when the cosine φ_ij of g_i' and g_j is below its EMA
target φ̂_ij, add the multiple of g_j that raises it to exactly φ̂_ij; update φ̂_ij ← (1−β) φ̂_ij + β φ_ij. The update
is Σ_i g_i'. With φ̂ = 0 (the first step) this is PCGrad.

Choices, each an option (see `polymoo methods --long`):
- `beta`: 0.01 (the value taken from the paper; LibMTL and torchjd default to 0.5);
- state: φ̂ (K×K) for the whole vector (one block), checkpointed beside the trainer's checkpoint
  (`polymoo_weighting_state.pt`) and in the DDP engine's state, restored on resume;
- order: `harness.seeding.generator(seed, "pcgrad", step, 0)`, as PCGrad; no eps (scale-free, zero divisions give 0);
- `normalize` / `output_scale`: harness extensions (off by default), shared with `bkmoo` (`solver: gradvac` there
  keeps one state per bucket);
- under DDP: the `full` / `full_gather` hooks with N ≥ K ranks (rotating languages would mix the per-pair state);
- `diagnostics`: `harness.moo.diagnostics`.
Implementation: the stateful weighting `gradvac` of `harness.moo.weightings` on the K×K Gram (float64),
`harness.moo.blocks.BlockRule` (per-block state), `harness.moo.combiners`.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.method import gradient_method
from harness.moo.options import WholeVectorOptions, whole_vector_factory
from harness.validate import option


@dataclass(frozen=True, kw_only=True)
class GradVacOptions(WholeVectorOptions):
    beta: float = option(0.01, "paper", "EMA rate of the per-pair cosine targets φ̂ (LibMTL / torchjd: 0.5)")

    def check(self) -> list[tuple[str, str]]:
        return [] if 0 <= self.beta <= 1 else [("beta", f"expected a number in [0, 1], got {self.beta}")]


gradient_method(
    name="gradvac", summary="GradVac: cosines raised to EMA targets per language pair, whole vector (Wang et al. 2021)",
    family="baseline", Options=GradVacOptions,
    make_combiner=whole_vector_factory("gradvac"),
)
