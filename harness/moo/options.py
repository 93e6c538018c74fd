"""The options of the gradient methods and the whole-vector combiner factory, importable without torch.

Registering a method (``polymoo methods``, the registry's discovery) only needs these dataclasses; the combiners
themselves (:mod:`harness.moo.combiners`, :mod:`harness.moo.diagnostics`) import torch and are imported when a method
builds its combiner, i.e. when it trains. Both modules re-export the names defined here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from harness.validate import option

if TYPE_CHECKING:
    from harness.method import RunContext
    from harness.moo.combiners import GramCombiner


BUCKET_HOOKS = ("allgather", "sharded")  # DDP hooks that weight each bucket (harness.distributed.hooks)
GLOBAL_HOOKS = ("full", "full_gather")  # DDP hooks of the full-gradient baselines


@dataclass(frozen=True)
class GradientPlan:
    """What a gradient method hands the executor, as plain data: its weighting, where it applies it (scope and
    granularity), DDP's bucket cap and an explicit hook. The executor resolves the hook from it, once."""

    weighting: str = "mean"
    weighting_options: dict[str, Any] = field(default_factory=dict)
    scope: Literal["mean", "bucket", "global"] = "mean"  # joint SFT | Bucket-Level MOO | full-gradient baselines
    bucket_cap_mb: float = 25.0
    hook: str | None = None  # the method's own `hook` option; None: the suite's distributed.hook
    normalize: str = "none"  # harness.moo.combiners conventions
    output_scale: str = "raw"
    granularity: str = "ddp_bucket"  # harness.moo.blocks


@dataclass(frozen=True, kw_only=True)
class DiagnosticsOptions:
    """The ``diagnostics:`` mapping of the gradient methods' options."""

    enabled: bool = option(True, "harness", "compute and log the moo/* diagnostics and artifacts")
    every: int = option(0, "harness", "diagnose every n optimizer steps; 0 = the suite's train.log_every")
    dump_every: int = option(10, "harness", "full per-bucket JSON dump and heatmap every n steps (and at the last "
                                            "step); 0 = only at the last step")
    per_bucket_pairs: bool = option(True, "harness", "log moo/bucket/<i>/cos/<a>-<b> for every pair (else only "
                                                     "cos_min per bucket; the dump has them all)")
    heatmap: bool = option(True, "harness", "log the bucket × language-pair conflict heatmap artifact")
    bucket_cap_mb: float | None = option(None, "harness", "whole-vector methods only: DDP bucket cap of the buckets "
                                                          "used for per-bucket diagnostics; null = DDP's default "
                                                          "(25 MiB, first bucket 1 MiB)")

    def check(self) -> list[tuple[str, str]]:
        out = []
        for key in ("every", "dump_every"):
            if getattr(self, key) < 0:
                out.append((key, f"expected a non-negative integer, got {getattr(self, key)}"))
        if self.bucket_cap_mb is not None and self.bucket_cap_mb <= 0:
            out.append(("bucket_cap_mb", f"expected a positive number or null, got {self.bucket_cap_mb}"))
        return out


@dataclass(frozen=True, kw_only=True)
class WholeVectorOptions:
    """Options every full-gradient baseline shares; a baseline's Options subclass it and add the solver's own
    (a subclass may redefine a field to document a different source)."""

    normalize: Literal["none", "l2"] = option("none", "harness", "l2: solve on unit-normalised gradients, then undo "
                                                                "the scale (harness extension)")
    output_scale: Literal["raw", "mean_norm"] = option("raw", "harness", "mean_norm: rescale the direction to the "
                                                                         "norm of the mean gradient")
    hook: Literal["full", "full_gather"] | None = option(None, "harness", "DDP hook under torchrun: full (global "
                                                                     "Gram from bucket Grams) or full_gather (naive); "
                                                                     "null = the suite's distributed.hook")
    diagnostics: DiagnosticsOptions = option(DiagnosticsOptions(), "harness", "moo/* metrics and artifacts")


def whole_vector_factory(solver: str, weighting: Any = None, *, stateful: bool = False) -> Any:
    """`make_combiner` of a full-gradient baseline: the weighting `solver` on the whole trainable vector.

    ``weighting``: a factory (options as keyword arguments) for a weighting the method module defines itself; it is
    registered under ``solver`` (``stateful=True`` for a :class:`~harness.moo.weightings.StatefulWeighting`) when the
    combiner is built, i.e. when torch is imported anyway, so the method stays one torch-free file. The solver's own
    options are the fields of ``options`` named like the factory's parameters.
    """

    def make(options: WholeVectorOptions, run: RunContext) -> GramCombiner:
        from harness.moo.combiners import solver_spec, whole_combiner

        if weighting is not None:
            from harness.moo.weightings import register_weighting

            register_weighting(solver, weighting, stateful=stateful)
        spec = solver_spec(solver, options, options.normalize, options.output_scale)
        return whole_combiner(run, spec, options.diagnostics, options.hook)

    return make
