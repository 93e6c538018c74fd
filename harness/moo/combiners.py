"""Gradient combiners for the single-process trainer: a weighting applied to blocks of the flat gradient.

``harness.train.sft.PolymooTrainer`` hands a combiner the K per-language flat gradients (``K×P``, float32, rows in
``languages`` order, columns in ``trainable_parameters(model)`` order) and writes the returned direction into ``.grad``
before clipping and the optimizer step. Every scope is the same code (DESIGN.md, "Idea 1"), the block loop of
:mod:`harness.moo.blocks`: per block a float64 Gram, coefficients on the raw gradients (:class:`~harness.moo.blocks.
BlockRule`), ``d[b] = Σ_k c_bk g_k[b]``. Which coordinates form a block is the *granularity*: ``whole`` (the
full-gradient methods), ``ddp_bucket`` (Bucket-Level MOO's default), ``module`` or ``tensor`` (see
:mod:`harness.moo.blocks`).

Options (:class:`CombinerSpec`):

* ``solver``: a weighting of :mod:`harness.moo.weightings` (``mean``, ``mgda``, ``pcgrad``, ``cagrad``, ...) and its
  options (``reduction`` for PCGrad, ``c`` / ``rescale`` for CAGrad);
* ``normalize``: ``none`` | ``l2``. With ``l2`` the weighting sees the Gram of the unit-normalised gradients
  ``G_ij/(‖g_i‖‖g_j‖)`` of the block and its coefficients are divided by ``‖g_i‖`` (for MGDA this is Sener & Koltun's
  ``normalization_type="l2"``). A language whose gradient is exactly zero on the block cannot be normalised: it is left
  out of that block's weighting and gets coefficient 0;
* ``output_scale``: ``raw`` | ``mean_norm``. ``mean_norm`` rescales each block's direction to the norm of the mean
  gradient of that block, ``‖d_b‖ = ‖(1/K) Σ_k g_k[b]‖`` (nothing is rescaled when ``d_b = 0``).

Stateful weightings (``gradvac``, ``famo``): the rule keeps one state per block; the trainer passes the K per-language
mean losses of the step as ``losses=`` (combiners without that parameter are called without it) and saves
``state_dict()`` beside each checkpoint (``harness.train.sft.WeightingStateCallback``), restored on resume.

Randomness: PCGrad's (and GradVac's) visiting order comes from ``harness.seeding.generator(seed, "pcgrad", step, block index)``
(the whole vector is block 0), so it is identical on every rank and never touches the global RNG.

The ``ddp_bucket`` layout is DDP's rebuilt one (:func:`harness.buckets.bucket_plan`) with the gradient-ready order
recorded from one probe forward/backward (:func:`harness.buckets.ddp_bucket_plan`): for HF decoders that differs from
the reverse parameter order. The layout (bucket or block → parameter names, flat ranges) is logged as the MLflow
artifact ``buckets.json``.

Host synchronisation: these combiners serve the single-process trainer and call ``.item()`` for diagnostics and for the
zero-gradient test of ``normalize="l2"``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from harness.buckets import Bucket
from harness.buckets import ddp_bucket_plan as ddp_bucket_plan  # re-exported: it used to live here
from harness.moo.blocks import Block as Block  # re-exported for the combiners' callers
from harness.moo.blocks import (
    BlockRule,
    Normalize,
    OutputScale,
    block_directions,
    block_grams,
    blocks_for_plan,
    flat_offsets,
    model_blocks,
    whole_block,
)
from harness.moo.blocks import block_coefficients as block_coefficients
from harness.moo.diagnostics import Diagnostics
from harness.moo.options import DiagnosticsOptions, GradientPlan
from harness.moo.options import WholeVectorOptions as WholeVectorOptions  # re-exported: defined without torch
from harness.moo.options import whole_vector_factory as whole_vector_factory
from harness.moo.weightings import (
    STATEFUL_WEIGHTINGS,
    WEIGHTINGS,
    StatefulWeighting,
    Weighting,
    available_weightings,
    gram,
    stateful_weighting,
    weighting,
)

if TYPE_CHECKING:
    from harness.method import RunContext

SOLVER_OPTIONS = {"mean": (), "mgda": (), "pcgrad": ("reduction",), "cagrad": ("c", "rescale"),
                  "upgrad": ("norm_eps", "reg_eps"), "imtl_g": (), "aligned_mtl": ("scale_mode",),
                  "gradvac": ("beta",), "famo": ("lr", "weight_decay")}
SEEDED_SOLVERS = ("pcgrad", "gradvac")
"""The weightings that draw from the ``(seed, "pcgrad", step, block)`` generator (their visiting orders)."""


@dataclass
class CombineResult:
    """What a combiner returns to the trainer: the direction written into ``.grad`` and the metrics to log."""

    direction: Tensor  # flat, same layout as the per-language gradients
    metrics: dict[str, float] = field(default_factory=dict)


class GradientCombiner(Protocol):
    """Per-language flat gradients (K×P, rows in `languages` order) -> one update direction (the trainer's contract)."""

    def __call__(self, grads: Tensor, languages: list[str], step: int,
                 losses: Tensor | None = None) -> CombineResult: ...


@dataclass(frozen=True)
class CombinerSpec:
    """What a combiner does on every block: weighting + options, normalisation, output scaling."""

    solver: str = "mean"
    solver_options: dict[str, Any] = field(default_factory=dict)
    normalize: Normalize = "none"
    output_scale: OutputScale = "raw"

    def build(self) -> Weighting | StatefulWeighting:
        if self.normalize not in ("none", "l2"):
            raise ValueError(f"normalize must be none|l2, got {self.normalize!r}")
        if self.output_scale not in ("raw", "mean_norm"):
            raise ValueError(f"output_scale must be raw|mean_norm, got {self.output_scale!r}")
        if self.solver in STATEFUL_WEIGHTINGS:
            return stateful_weighting(self.solver, **self.solver_options)
        return weighting(self.solver, **self.solver_options)

    def rule(self, seed: int) -> BlockRule:
        # only PCGrad / GradVac draw from the (seed, step, block) generator: skip building it for the others
        return BlockRule(self.build(), self.normalize, self.output_scale, seed, seeded=self.solver in SEEDED_SOLVERS)


def solver_spec(solver: str, options: Any, normalize: str, output_scale: str) -> CombinerSpec:
    """A :class:`CombinerSpec` taking the solver's own options (``reduction``, ``c``, ``rescale``, ...) from
    ``options``: the keys of :data:`SOLVER_OPTIONS`, or for a weighting registered elsewhere (a method module's own)
    the parameters of its factory."""
    if solver in SOLVER_OPTIONS:
        names: Sequence[str] = SOLVER_OPTIONS[solver]
    elif solver in WEIGHTINGS or solver in STATEFUL_WEIGHTINGS:
        names = list(inspect.signature({**WEIGHTINGS, **STATEFUL_WEIGHTINGS}[solver]).parameters)
    else:
        raise ValueError(f"unknown solver {solver!r}; allowed: {available_weightings(include_stateful=True)}")
    keys = [k for k in names if hasattr(options, k)]
    return CombinerSpec(solver, {k: getattr(options, k) for k in keys}, normalize, output_scale)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------------------
# the combiner
# ----------------------------------------------------------------------------------------------------------------------


class GramCombiner:
    """``grads (K×P) -> CombineResult``: the spec applied on each of ``blocks`` (a partition of the flat vector).

    ``diag_blocks``: the buckets on which per-bucket diagnostics are computed when they differ from ``blocks`` (the
    whole-vector methods); ``None`` = ``blocks``. ``plan`` (a :class:`GradientPlan`: weighting, scope, granularity,
    bucket cap, hook) is what the executor reads to run the same method under DDP (``hook`` None: the suite's
    ``distributed.hook``).
    """

    def __init__(self, blocks: Sequence[Block], spec: CombinerSpec, seed: int = 0,
                 diagnostics: Diagnostics | None = None, diag_blocks: Sequence[Block] | None = None, *,
                 scope: str = "bucket", bucket_cap_mb: float | None = None, granularity: str | None = None,
                 hook: str | None = None):
        self.blocks, self.spec, self.rule = list(blocks), spec, spec.rule(seed)
        self.diagnostics = diagnostics
        self.diag_blocks = None if diag_blocks is None else list(diag_blocks)
        if self.diag_blocks is not None and len(self.blocks) != 1:
            raise ValueError("diag_blocks are for the whole-vector combiner (one block)")
        self.scope, self.bucket_cap_mb, self.hook = scope, bucket_cap_mb, hook
        self.granularity = granularity or ("whole" if scope == "global" else "ddp_bucket")
        self.weighting_name, self.weighting_options = spec.solver, dict(spec.solver_options)
        self.normalize, self.output_scale = spec.normalize, spec.output_scale
        self.plan = GradientPlan(weighting=spec.solver, weighting_options=dict(spec.solver_options), scope=scope,
                                 bucket_cap_mb=25.0 if bucket_cap_mb is None else float(bucket_cap_mb), hook=hook,
                                 normalize=spec.normalize, output_scale=spec.output_scale, granularity=self.granularity)

    def __call__(self, grads: Tensor, languages: list[str], step: int,
                 losses: Tensor | None = None) -> CombineResult:
        """``losses``: the K per-language mean losses of the step (rows of ``grads``), for loss-based weightings."""
        on_cpu = grads.device.type == "cpu"
        with small_ops(on_cpu):
            if self.diag_blocks is not None:  # whole vector: its Gram is the sum of the diagnostic buckets' Grams
                diag_grams = block_grams(grads, self.diag_blocks)
                grams = [torch.stack(diag_grams).sum(0)]
            else:
                grams = diag_grams = block_grams(grads, self.blocks)
            coeffs = self.rule.coefficients(grams, step, self.blocks, losses)
        direction = block_directions(grads, self.blocks, coeffs)
        metrics: dict[str, float] = {}
        if self.diagnostics is not None and self.diagnostics.due(step):
            diag_coeffs = coeffs if self.diag_blocks is None else [coeffs[0]] * len(diag_grams)
            global_gram = torch.stack(grams).sum(0)
            dir_norm = float(gram(direction[None])[0, 0].sqrt())  # float32 partials summed in float64: 2x faster
            with small_ops(on_cpu):
                metrics = self.diagnostics.observe(step, languages, diag_grams, diag_coeffs, global_gram, dir_norm)
        return CombineResult(direction=direction, metrics=metrics)

    @property
    def needs_losses(self) -> bool:
        return self.rule.stateful and bool(getattr(self.rule.fn, "needs_losses", False))

    def close(self) -> None:
        """End of training: the diagnostics draw their figures (kept out of the timed steps)."""
        if self.diagnostics is not None:
            self.diagnostics.close()

    def state_dict(self) -> dict[str, Any]:
        """The weighting's per-block states (empty for a stateless weighting): checkpointed beside the trainer's."""
        return {"weighting": self.spec.solver, **self.rule.state_dict()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        if saved.get("weighting", self.spec.solver) != self.spec.solver:
            raise ValueError(f"checkpointed weighting state is for {saved['weighting']!r}, not {self.spec.solver!r}")
        self.rule.load_state_dict(saved)


@contextmanager
def small_ops(enabled: bool = True) -> Iterator[None]:
    """One intra-op CPU thread for the skinny Grams and the K×K solves. On a busy CPU the OpenMP regions around tiny
    tensors cost 10–100× the work: on a loaded 2-core machine CAGrad (K=6) took 1.9 s with 2 threads and 0.07 s with
    one, the 6×1.3 M float64 Gram 194 ms and 42 ms. The previous thread count is restored."""
    n = torch.get_num_threads()
    if n == 1 or not enabled:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


# ----------------------------------------------------------------------------------------------------------------------
# factories used by the registered methods
# ----------------------------------------------------------------------------------------------------------------------


def _log_layout(run: RunContext, scope: str, granularity: str, bucket_cap_mb: float | None, blocks: Sequence[Block],
                plan: Sequence[Bucket] | None = None) -> None:
    """``buckets.json``: DDP's buckets (with their flat ranges) when the layout comes from a bucket plan, else the
    blocks of the ``module`` / ``tensor`` layout."""
    layout: dict[str, Any] = {"scope": scope, "granularity": granularity, "bucket_cap_mb": bucket_cap_mb}
    if plan is None:
        layout["blocks"] = [{"index": b.index, "numel": b.numel, "names": list(b.names),
                             "flat_ranges": [list(r) for r in b.ranges]} for b in blocks]
    else:
        layout["ready_order"] = "recorded from a probe forward/backward (DDP's rebuilt buckets)"
        layout["buckets"] = [{"index": b.index, "numel": b.numel, "nbytes": b.nbytes, "names": list(b.names),
                              "flat_ranges": [list(r) for r in blk.ranges]} for b, blk in zip(plan, blocks, strict=True)]
    run.tracker.log_dict(layout, "buckets.json")


def _diagnostics(run: RunContext, blocks: Sequence[Block], options: DiagnosticsOptions) -> Diagnostics | None:
    if not options.enabled:
        return None
    t = run.suite.train
    return Diagnostics(run.tracker, list(run.suite.languages.seen), blocks, options, total_steps=t.steps,
                       log_every=t.log_every)


def _whole(run: RunContext, spec: CombinerSpec, diag_cap: float | None, diagnostics: DiagnosticsOptions,
           hook: str | None, bucket_cap_mb: float | None = None) -> GramCombiner:
    """One block; per-bucket diagnostics on DDP's buckets at ``diag_cap`` (the whole Gram is their Grams' sum)."""
    offsets = flat_offsets(run.model)
    plan = ddp_bucket_plan(run.model, diag_cap)
    diag_blocks = blocks_for_plan(plan, offsets)
    _log_layout(run, "whole (buckets used for diagnostics only)", "whole", diag_cap, diag_blocks, plan)
    return GramCombiner([whole_block(offsets)], spec, run.seed, _diagnostics(run, diag_blocks, diagnostics),
                        diag_blocks, scope="global", bucket_cap_mb=bucket_cap_mb, granularity="whole", hook=hook)


def whole_combiner(run: RunContext, spec: CombinerSpec, diagnostics: DiagnosticsOptions | None = None,
                   hook: str | None = None) -> GramCombiner:
    """The spec on the whole trainable vector (full PCGrad / MGDA / CAGrad). Per-bucket diagnostics use DDP's buckets
    at ``diagnostics.bucket_cap_mb``; their map is logged as ``buckets.json``. ``hook``: the DDP hook under torchrun
    (None: the suite's ``distributed.hook``)."""
    diagnostics = diagnostics or DiagnosticsOptions()
    return _whole(run, spec, diagnostics.bucket_cap_mb, diagnostics, hook)


def bucket_combiner(run: RunContext, spec: CombinerSpec, bucket_cap_mb: float,
                    diagnostics: DiagnosticsOptions | None = None, hook: str | None = None,
                    granularity: str = "ddp_bucket") -> GramCombiner:
    """The spec on each block of ``granularity`` (Bucket-Level MOO: DDP's buckets for ``bucket_cap_mb``).

    ``whole`` is the full-gradient combiner (diagnostics on the buckets of ``bucket_cap_mb``); with ``module`` /
    ``tensor`` the cap only matters under DDP, where the blocks nest in its buckets. ``hook`` as in `whole_combiner`.
    """
    diagnostics = diagnostics or DiagnosticsOptions()
    if granularity == "whole":
        return _whole(run, spec, bucket_cap_mb, diagnostics, hook, bucket_cap_mb)
    if granularity == "ddp_bucket":
        plan = ddp_bucket_plan(run.model, bucket_cap_mb)
        blocks = blocks_for_plan(plan, flat_offsets(run.model))
        _log_layout(run, "bucket", granularity, bucket_cap_mb, blocks, plan)
    else:
        blocks = model_blocks(run.model, granularity)
        _log_layout(run, "bucket", granularity, bucket_cap_mb, blocks)
    return GramCombiner(blocks, spec, run.seed, _diagnostics(run, blocks, diagnostics), scope="bucket",
                        bucket_cap_mb=bucket_cap_mb, granularity=granularity, hook=hook)
