"""CONGRAD — self-rewarding multilingual DPO whose preference pairs are filtered by agreement with a de-conflicted
multilingual gradient direction (arXiv 2503.23777, EACL 2026).

Method card
-----------
Paper-public (abstract and summaries; the full text was not available):
- a self-rewarding loop: the model answers multilingual prompts, judges its own answers as an LLM judge, builds
  preference pairs, trains with DPO and iterates;
- per-language moving averages of gradients, de-conflicted with PCGrad into one aggregated direction; samples whose
  gradients align with it are kept;
- a sublinear (low-rank) gradient compression to cut the memory of accumulating gradients;
- a length-penalised DPO ("LP-DPO");
- Llama-3-8B and Gemma-2-2B over 10 languages, seen and unseen (catalog keys `llama3-8b`, `gemma2-2b`).

Reconstructed (each an option below, `source: reconstruction`; defaults are ours, not the paper's):
- N sampled responses per prompt, temperature / top-p; the self judge's additive 5-point rubric (self-rewarding recipe)
  and its score parsing; pairs = best vs worst, ties skipped; the `reference` chrF judge for offline tiny runs;
- the per-sample gradient is the LP-DPO gradient of the pair on the trainable parameters at the start of the
  iteration (policy = reference);
- compression: seeded sparse / Gaussian random projection, counter-based and generated block by block on the
  gradient's device (never stored), or per-matrix
  two-sided low-rank sketch, rank `rank`;
- EMA (decay `ema_decay`) of each language's compressed mini-batch mean gradients, kept across iterations;
- PCGrad among the K EMAs (sum reduction, order seeded by (seed, iteration)) -> consensus d;
- score = cos(g_i, d) (or g_i·d; the JVP scorer computes g_i·d by forward-mode AD without per-sample gradients);
- keep the top ρ = `keep_ratio` of each language (ceil, at least one), or every pair with score ≥ `threshold`;
- LP-DPO: −log σ(β(Δ_c − Δ_r) − α(|y_c| − |y_r|)), |y| in completion tokens.
Harness choices (`source: harness`): prompt slices, batch sizes, evaluation between iterations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.method import preference_method
from harness.preference.method import LoopOptions
from harness.validate import option

if TYPE_CHECKING:
    from harness.preference.filters import CongradFilter


@dataclass(frozen=True, kw_only=True)
class CongradOptions(LoopOptions):
    keep_ratio: float = option(0.5, "reconstruction", "fraction rho of each language's pairs kept (top by score)")
    threshold: float | None = option(None, "reconstruction",
                                     "keep every pair with score >= threshold instead of the top rho (null: use rho)")
    compression: str = option("sparse", "reconstruction",
                              "per-sample gradient compression: sparse | gaussian (seeded random projections, "
                              "counter-based, generated on the device) | lowrank (per-matrix two-sided sketch) | none")
    rank: int = option(256, "reconstruction",
                       "compressed dimension (sparse, gaussian) or per-matrix sketch rank r (lowrank: r x r per matrix)")
    sparse_nnz: int = option(4, "reconstruction", "non-zeros per column of the sparse projection")
    projection_chunk: int = option(0, "harness", "columns of the projection regenerated at a time "
                                                  "(0: auto, a block of about 16 MiB)")
    ema_decay: float = option(0.9, "reconstruction", "decay of the per-language EMA of compressed gradients")
    ema_batch_size: int = option(4, "reconstruction", "pairs per EMA update (mini-batch mean of the compressed gradients)")
    ema_across_iterations: bool = option(True, "reconstruction", "keep the EMAs from one iteration to the next")
    pcgrad_reduction: str = option("sum", "reconstruction", "PCGrad reduction of the projected EMAs: sum | mean")
    scorer: str = option("explicit", "reconstruction",
                         "explicit: per-sample gradients, compressed; jvp: g_i·d by one forward-mode JVP per batch")
    score: str = option("cosine", "reconstruction", "cosine: cos(g_i, d) (explicit scorer only) | dot: g_i·d")
    jvp_batch_size: int = option(16, "harness", "pairs per JVP")

    def check(self) -> list[tuple[str, str]]:
        from harness.preference.compression import COMPRESSIONS  # torch: imported when options are checked

        out = super().check()
        if not 0 < self.keep_ratio <= 1:
            out.append(("keep_ratio", f"expected a number in (0, 1], got {self.keep_ratio}"))
        if self.compression not in COMPRESSIONS:
            out.append(("compression", f"expected one of {list(COMPRESSIONS)}, got {self.compression!r}"))
        if self.projection_chunk < 0:
            out.append(("projection_chunk", f"expected >= 0 (0: auto), got {self.projection_chunk}"))
        for key in ("rank", "sparse_nnz", "ema_batch_size", "jvp_batch_size"):
            if getattr(self, key) <= 0:
                out.append((key, f"expected a positive integer, got {getattr(self, key)}"))
        if not 0 <= self.ema_decay < 1:
            out.append(("ema_decay", f"expected a number in [0, 1), got {self.ema_decay}"))
        if self.pcgrad_reduction not in ("sum", "mean"):
            out.append(("pcgrad_reduction", f"expected sum or mean, got {self.pcgrad_reduction!r}"))
        if self.scorer not in ("explicit", "jvp"):
            out.append(("scorer", f"expected explicit or jvp, got {self.scorer!r}"))
        if self.score not in ("cosine", "dot"):
            out.append(("score", f"expected cosine or dot, got {self.score!r}"))
        if self.scorer == "jvp" and self.score == "cosine":
            out.append(("score", "the jvp scorer computes g_i·d only; set score: dot"))
        return out


def make_filter(options: CongradOptions, run) -> CongradFilter:
    from harness.preference.filters import CongradFilter  # torch, TRL: imported when the method trains

    return CongradFilter(keep_ratio=options.keep_ratio, threshold=options.threshold, compression=options.compression,
                         rank=options.rank, nnz=options.sparse_nnz, chunk=options.projection_chunk,
                         ema_decay=options.ema_decay, ema_batch_size=options.ema_batch_size,
                         ema_across_iterations=options.ema_across_iterations,
                         pcgrad_reduction=options.pcgrad_reduction, scorer=options.scorer, score=options.score,
                         jvp_batch_size=options.jvp_batch_size)


preference_method(name="congrad", summary="CONGRAD: self-rewarding DPO, pairs filtered by PCGrad consensus (LP-DPO)",
                  family="proposed", Options=CongradOptions, make_filter=make_filter)
