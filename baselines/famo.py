"""FAMO — fast adaptive multitask optimization, language weights learned from the loss decrease (stateful).

Method card
-----------
Paper: Liu, Liu, Stone, Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023, arXiv 2306.03792.
Reference code: github.com/Cranial-XIX/FAMO (``famo.py``); reproduced by torchjd's ``FAMO``, cross-checked in tests.

Public: task logits w, z = softmax(w); the update is the gradient of Σ_i (z_i / C) log(L_i + 1e-8) with the detached
C = Σ_j z_j / (L_j + 1e-8), i.e. c_i ∝ z_i / L_i; after each step w takes one Adam step towards the tasks whose
log-loss fell least. It needs the K per-language losses, not the gradients' Gram.

Choices, each an option (see `polymoo methods --long`):
- `lr`: 0.025 (paper and official code); `weight_decay` (γ): 1e-3 (paper's Algorithm 2, LibMTL, torchjd);
- deviation: the logits are updated with the losses of the *next* step's batch instead of a second forward pass on the
  same batch (no extra forward);
- state: logits, Adam moments and previous losses, checkpointed beside the trainer's checkpoint
  (`polymoo_weighting_state.pt`) and restored on resume;
- whole vector only (every block would see the same losses); under DDP (`full` / `full_gather` hooks, N ≥ K ranks)
  the engine all-gathers the ranks' losses after the forward and before the backward (N floats per step), so every
  rank solves with the same K language losses;
- `normalize` / `output_scale`: harness extensions (off by default).
Implementation: the stateful weighting `famo` of `harness.moo.weightings`; the trainer hands the combiner the K
per-language mean losses of the step (`harness.train.sft`).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.method import gradient_method
from harness.moo.options import WholeVectorOptions, whole_vector_factory
from harness.validate import option


@dataclass(frozen=True, kw_only=True)
class FAMOOptions(WholeVectorOptions):
    lr: float = option(0.025, "paper", "Adam learning rate of the language logits (paper, official w_lr)")
    weight_decay: float = option(1e-3, "paper", "γ: Adam weight decay of the logits (paper Alg. 2; official code "
                                                "varies: 0.01 / 1e-5)")

    def check(self) -> list[tuple[str, str]]:
        return [(k, f"expected a non-negative number, got {getattr(self, k)}")
                for k in ("lr", "weight_decay") if getattr(self, k) < 0]


gradient_method(
    name="famo", summary="FAMO: language weights adapted to the loss decrease, whole vector (Liu et al. 2023)",
    family="baseline", Options=FAMOOptions,
    make_combiner=whole_vector_factory("famo"),
)
