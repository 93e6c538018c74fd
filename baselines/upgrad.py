"""UPGrad — the unconflicting projection of gradients over the whole trainable vector (full-gradient baseline).

Method card
-----------
Paper: Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024, arXiv 2406.16232.
Reference code: torchjd (PyPI, MIT), ``UPGrad`` / ``UPGradWeighting`` with the mean preference.

Public: each ``e_i/K`` is projected onto the dual cone of the gradients (``min vᵀGv s.t. v ≥ e_i/K``) and the K
projections are summed: d = Σ c_k g_k never conflicts with any g_k (Jd ≥ 0) and equals the mean when nothing conflicts.
Here a task is a language and the gradients span the whole trainable vector.

Choices, each an option (see `polymoo methods --long`):
- the dual-cone QPs are solved exactly (`harness.moo._qp.solve_box_qp`) instead of torchjd's quadprog call;
- `norm_eps` / `reg_eps`: torchjd's defaults (1e-4 each): G is replaced by 0 when trace(G) < norm_eps (an absolute
  threshold, kept for fidelity) and ``G/trace(G) + reg_eps·I`` is what the QPs see; the golden values depend on them;
- `normalize` / `output_scale`: harness extensions (off by default), shared with `bkmoo`;
- `diagnostics`: `harness.moo.diagnostics`.
Implementation: the weighting `upgrad` of `harness.moo.weightings` on the K×K Gram (float64), `harness.moo.combiners`.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.method import gradient_method
from harness.moo.options import WholeVectorOptions, whole_vector_factory
from harness.validate import option


@dataclass(frozen=True, kw_only=True)
class UPGradOptions(WholeVectorOptions):
    norm_eps: float = option(1e-4, "reference-code", "G is treated as 0 when trace(G) < norm_eps (torchjd; absolute)")
    reg_eps: float = option(1e-4, "reference-code", "ridge added to G/trace(G) before the dual-cone QPs (torchjd)")

    def check(self) -> list[tuple[str, str]]:
        return [(k, f"expected a non-negative number, got {getattr(self, k)}")
                for k in ("norm_eps", "reg_eps") if getattr(self, k) < 0]


gradient_method(
    name="upgrad", summary="UPGrad: sum of projections on the gradients' dual cone, whole vector (Quinton & Rey 2024)",
    family="baseline", Options=UPGradOptions,
    make_combiner=whole_vector_factory("upgrad"),
)
