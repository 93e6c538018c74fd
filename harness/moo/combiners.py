"""Gradient combiners for the single-process trainer: a weighting applied to the whole vector or per DDP bucket.

``harness.train.sft.PolymooTrainer`` hands a combiner the K per-language flat gradients (``K×P``, float32, rows in
``languages`` order, columns in ``trainable_parameters(model)`` order) and writes the returned direction into ``.grad``
before clipping and the optimizer step. Both scopes are the same code (DESIGN.md, "Idea 1"): a *block* is a set of
coordinates of the flat vector (the whole vector, or one DDP bucket), and for every block

1. ``G_b = Σ_ranges g[:, r] g[:, r]ᵀ`` is accumulated in float64 (:func:`harness.moo.gram`);
2. ``c_b = block_coefficients(G_b, ...)``: optional l2 normalisation, the weighting, optional output scaling — all
   expressed as coefficients on the *raw* gradients, so ``d_b = Σ_k c_bk g_k[b]``;
3. ``d[b] = combine(g[:, b], c_b)``.

Options (:class:`CombinerSpec`):

* ``solver``: a weighting of :mod:`harness.moo.weightings` (``mean``, ``mgda``, ``pcgrad``, ``cagrad``, ...) and its
  options (``reduction`` for PCGrad, ``c`` / ``rescale`` for CAGrad);
* ``normalize``: ``none`` | ``l2``. With ``l2`` the weighting sees the Gram of the unit-normalised gradients
  ``G_ij/(‖g_i‖‖g_j‖)`` of the block and its coefficients are divided by ``‖g_i‖`` (for MGDA this is Sener & Koltun's
  ``normalization_type="l2"``). A language whose gradient is exactly zero on the block cannot be normalised: it is left
  out of that block's weighting and gets coefficient 0;
* ``output_scale``: ``raw`` | ``mean_norm``. ``mean_norm`` rescales each block's direction to the norm of the mean
  gradient of that block, ``‖d_b‖ = ‖(1/K) Σ_k g_k[b]‖`` (nothing is rescaled when ``d_b = 0``).

Randomness: PCGrad's projection order comes from ``harness.seeding.generator(seed, "pcgrad", step, block index)``
(the whole vector is block 0), so it is identical on every rank and never touches the global RNG.

The bucket layout of :func:`bucket_combiner` is DDP's rebuilt one (:func:`harness.buckets.bucket_plan`) with the
gradient-ready order recorded from one probe forward/backward (:func:`ddp_bucket_plan`): for HF decoders that differs
from the reverse parameter order. The bucket→parameter-name map is logged as the MLflow artifact ``buckets.json``.

Host synchronisation: these combiners serve the single-process trainer and call ``.item()`` for diagnostics and for the
zero-gradient test of ``normalize="l2"``; the DDP hooks (``harness.distributed``) have their own sync-free path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor, nn

from harness.buckets import Bucket, bucket_plan, trainable_parameters
from harness.moo.diagnostics import Diagnostics
from harness.moo.options import DiagnosticsOptions
from harness.moo.options import WholeVectorOptions as WholeVectorOptions  # re-exported: defined without torch
from harness.moo.options import whole_vector_factory as whole_vector_factory
from harness.moo.weightings import Weighting, combine, gram, weighting
from harness.seeding import generator

if TYPE_CHECKING:
    from harness.run_context import RunContext
    from harness.train.sft import CombineResult

Normalize = Literal["none", "l2"]
OutputScale = Literal["raw", "mean_norm"]
SOLVER_OPTIONS = {"mean": (), "mgda": (), "pcgrad": ("reduction",), "cagrad": ("c", "rescale"),
                  "upgrad": ("norm_eps", "reg_eps"), "imtl_g": ()}


# ----------------------------------------------------------------------------------------------------------------------
# layout
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A set of coordinates of the flat gradient: sorted, merged ``[start, end)`` ranges."""

    index: int
    ranges: tuple[tuple[int, int], ...]
    names: tuple[str, ...] = ()

    @property
    def numel(self) -> int:
        return sum(e - s for s, e in self.ranges)


def flat_offsets(model: nn.Module) -> dict[str, tuple[int, int]]:
    """``name -> (start, end)`` of each trainable parameter in the flat gradient (``named_parameters`` order)."""
    out, offset = {}, 0
    for name, p in trainable_parameters(model):
        out[name] = (offset, offset + p.numel())
        offset += p.numel()
    return out


def _merge(ranges: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[list[int]] = []
    for s, e in sorted(r for r in ranges if r[1] > r[0]):
        if merged and merged[-1][1] == s:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    return tuple((s, e) for s, e in merged)


def blocks_for_plan(plan: Sequence[Bucket], offsets: dict[str, tuple[int, int]]) -> list[Block]:
    """One :class:`Block` per bucket (coordinate order inside a block does not matter to Grams or combinations)."""
    blocks = [Block(b.index, _merge([offsets[n] for n in b.names]), tuple(b.names)) for b in plan]
    covered = sum(b.numel for b in blocks)
    total = max((e for _, e in offsets.values()), default=0)
    if covered != total:
        raise ValueError(f"bucket plan covers {covered} of {total} gradient coordinates")
    return blocks


def whole_block(offsets: dict[str, tuple[int, int]]) -> Block:
    total = max((e for _, e in offsets.values()), default=0)
    return Block(0, ((0, total),) if total else (), tuple(offsets))


def ddp_bucket_plan(model: nn.Module, bucket_cap_mb: float | None) -> list[Bucket]:
    """DDP's rebuilt buckets for ``DDP(model, bucket_cap_mb=...)``, the ready order recorded by a probe backward.

    The probe runs one forward/backward of a causal LM on 2×8 fixed token ids (its gradients are discarded and the
    RNG state restored). Models that are not HF causal LMs (no ``get_input_embeddings``) use the reverse parameter
    order, which is DDP's for plain sequential stacks.
    """
    if not hasattr(model, "get_input_embeddings"):
        return bucket_plan(model, bucket_cap_mb)
    named = trainable_parameters(model)
    if not named:
        return []
    device = named[0][1].device
    vocab = model.get_input_embeddings().num_embeddings

    def probe() -> None:
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            ids = torch.randint(0, vocab, (2, 8), generator=torch.Generator().manual_seed(0)).to(device)
            model(input_ids=ids, labels=ids).loss.backward()

    from harness.buckets import grad_ready_order

    order = grad_ready_order(model, probe)
    # parameters the probe did not reach (unused by the forward) are ready last, in reverse registration order
    reached = set(order)
    order += [n for n, _ in reversed(named) if n not in reached]
    return bucket_plan(model, bucket_cap_mb, ready_order=order)


# ----------------------------------------------------------------------------------------------------------------------
# coefficients of one block
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CombinerSpec:
    """What a combiner does on every block: weighting + options, normalisation, output scaling."""

    solver: str = "mean"
    solver_options: dict[str, Any] = field(default_factory=dict)
    normalize: Normalize = "none"
    output_scale: OutputScale = "raw"

    def build(self) -> Weighting:
        if self.normalize not in ("none", "l2"):
            raise ValueError(f"normalize must be none|l2, got {self.normalize!r}")
        if self.output_scale not in ("raw", "mean_norm"):
            raise ValueError(f"output_scale must be raw|mean_norm, got {self.output_scale!r}")
        return weighting(self.solver, **self.solver_options)


def solver_spec(solver: str, options: Any, normalize: str, output_scale: str) -> CombinerSpec:
    """A :class:`CombinerSpec` taking the solver's own options (``reduction``, ``c``, ``rescale``) from ``options``."""
    if solver not in SOLVER_OPTIONS:
        raise ValueError(f"unknown solver {solver!r}; allowed: {sorted(SOLVER_OPTIONS)}")
    keys = [k for k in SOLVER_OPTIONS[solver] if hasattr(options, k)]
    return CombinerSpec(solver, {k: getattr(options, k) for k in keys}, normalize, output_scale)  # type: ignore[arg-type]


def block_coefficients(g: Tensor, fn: Weighting, normalize: str = "none", output_scale: str = "raw",
                       gen: torch.Generator | None = None) -> Tensor:
    """Coefficients on the raw gradients of one block, from its float64 Gram ``g`` (see the module docstring)."""
    g = g.to(torch.float64)
    k = g.shape[0]
    if normalize == "l2":
        norms = torch.sqrt(torch.diagonal(g).clamp_min(0.0))
        active = norms > 0
        c = torch.zeros(k, dtype=torch.float64, device=g.device)
        if bool(active.any()):
            idx = active.nonzero().flatten()
            n = norms[idx]
            sub = g[idx][:, idx] / (n[:, None] * n[None, :])
            c[idx] = fn(sub, generator=gen).to(torch.float64) / n
    else:
        c = fn(g, generator=gen).to(torch.float64)
    if output_scale == "mean_norm":
        mean_w = torch.full((k,), 1.0 / k, dtype=torch.float64, device=g.device)
        target = torch.sqrt((mean_w @ g @ mean_w).clamp_min(0.0))
        current = torch.sqrt((c @ g @ c).clamp_min(0.0))
        c = torch.where(current > 0, c * target / torch.where(current > 0, current, torch.ones_like(current)), c)
    return torch.nan_to_num(c, nan=0.0, posinf=0.0, neginf=0.0)


GRAM_CHUNK = 1 << 16
"""Columns per float64 partial Gram: a 6×65536 float64 chunk stays in cache (3× faster than one 1.3 M-column copy)."""


def block_gram(grads: Tensor, block: Block) -> Tensor:
    """float64 Gram of the block's columns (partial Grams over column chunks, summed in float64)."""
    k = grads.shape[0]
    out = torch.zeros(k, k, dtype=torch.float64, device=grads.device)
    for s, e in block.ranges:
        out += gram(grads[:, s:e], chunk=GRAM_CHUNK)
    return out


# ----------------------------------------------------------------------------------------------------------------------
# the combiner
# ----------------------------------------------------------------------------------------------------------------------


class GramCombiner:
    """``grads (K×P) -> CombineResult``: the spec applied on each of ``blocks`` (a partition of the flat vector).

    ``diag_blocks``: the buckets on which per-bucket diagnostics are computed when they differ from ``blocks`` (the
    whole-vector methods); ``None`` = ``blocks``.
    """

    def __init__(self, blocks: Sequence[Block], spec: CombinerSpec, seed: int = 0,
                 diagnostics: Diagnostics | None = None, diag_blocks: Sequence[Block] | None = None, *,
                 scope: Literal["global", "bucket"] = "bucket", bucket_cap_mb: float | None = None):
        self.blocks, self.spec, self.seed = list(blocks), spec, seed
        # what harness.distributed.dist_spec reads to run the same method under DDP
        self.scope, self.bucket_cap_mb = scope, bucket_cap_mb
        self.weighting_name, self.weighting_options = spec.solver, dict(spec.solver_options)
        self.normalize, self.output_scale = spec.normalize, spec.output_scale
        self.fn = spec.build()
        self.diagnostics = diagnostics
        self.diag_blocks = None if diag_blocks is None else list(diag_blocks)
        if self.diag_blocks is not None and len(self.blocks) != 1:
            raise ValueError("diag_blocks are for the whole-vector combiner (one block)")
        self.last_coefficients: list[Tensor] = []
        self.hook: str | None = None  # DDP hook under torchrun; None = the suite's distributed.hook

    def _generator(self, step: int, block: int) -> torch.Generator | None:
        return generator(self.seed, "pcgrad", step, block) if self.spec.solver == "pcgrad" else None

    def coefficients(self, grams: Sequence[Tensor], step: int) -> list[Tensor]:
        return [block_coefficients(g, self.fn, self.spec.normalize, self.spec.output_scale,
                                   self._generator(step, b.index)) for b, g in zip(self.blocks, grams, strict=True)]

    def __call__(self, grads: Tensor, languages: list[str], step: int) -> CombineResult:
        from harness.train.sft import CombineResult

        on_cpu = grads.device.type == "cpu"
        with small_ops(on_cpu):
            if self.diag_blocks is not None:  # whole vector: its Gram is the sum of the diagnostic buckets' Grams
                diag_grams = [block_gram(grads, b) for b in self.diag_blocks]
                grams = [torch.stack(diag_grams).sum(0)]
            else:
                grams = [block_gram(grads, b) for b in self.blocks]
                diag_grams = grams
            coeffs = self.coefficients(grams, step)
        direction = torch.empty_like(grads[0])
        for block, c in zip(self.blocks, coeffs, strict=True):
            for s, e in block.ranges:
                direction[s:e] = combine(grads[:, s:e], c)
        self.last_coefficients = coeffs
        metrics: dict[str, float] = {}
        if self.diagnostics is not None and self.diagnostics.due(step):
            diag_coeffs = coeffs if self.diag_blocks is None else [coeffs[0]] * len(diag_grams)
            global_gram = torch.stack(grams).sum(0)
            dir_norm = float(torch.linalg.vector_norm(direction, dtype=torch.float64))
            with small_ops(on_cpu):
                metrics = self.diagnostics.observe(step, languages, diag_grams, diag_coeffs, global_gram, dir_norm)
        return CombineResult(direction=direction, metrics=metrics)


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


def _log_plan(run: RunContext, plan: Sequence[Bucket], blocks: Sequence[Block], scope: str,
              bucket_cap_mb: float | None) -> None:
    run.tracker.log_dict({
        "scope": scope,
        "bucket_cap_mb": bucket_cap_mb,
        "ready_order": "recorded from a probe forward/backward (DDP's rebuilt buckets)",
        "buckets": [{"index": b.index, "numel": b.numel, "nbytes": b.nbytes, "names": list(b.names),
                     "flat_ranges": [list(r) for r in blk.ranges]} for b, blk in zip(plan, blocks, strict=True)],
    }, "buckets.json")


def _diagnostics(run: RunContext, blocks: Sequence[Block], options: DiagnosticsOptions) -> Diagnostics:
    t = run.suite.train
    return Diagnostics(run.tracker, list(run.suite.languages.seen), blocks, options, total_steps=t.steps,
                       log_every=t.log_every)


def whole_combiner(run: RunContext, spec: CombinerSpec, diagnostics: DiagnosticsOptions | None = None,
                   hook: str | None = None) -> GramCombiner:
    """The spec on the whole trainable vector (full PCGrad / MGDA / CAGrad). Per-bucket diagnostics use DDP's buckets
    at ``diagnostics.bucket_cap_mb``; their map is logged as ``buckets.json``. ``hook``: the DDP hook under torchrun
    (None: the suite's ``distributed.hook``)."""
    diagnostics = diagnostics or DiagnosticsOptions()
    offsets = flat_offsets(run.model)
    plan = ddp_bucket_plan(run.model, diagnostics.bucket_cap_mb)
    diag_blocks = blocks_for_plan(plan, offsets)
    _log_plan(run, plan, diag_blocks, "whole (buckets used for diagnostics only)", diagnostics.bucket_cap_mb)
    diag = _diagnostics(run, diag_blocks, diagnostics) if diagnostics.enabled else None
    combiner = GramCombiner([whole_block(offsets)], spec, run.seed, diag, diag_blocks, scope="global")
    combiner.hook = hook
    return combiner


def bucket_combiner(run: RunContext, spec: CombinerSpec, bucket_cap_mb: float,
                    diagnostics: DiagnosticsOptions | None = None, hook: str | None = None) -> GramCombiner:
    """The spec on each of DDP's buckets for ``bucket_cap_mb`` (Bucket-Level MOO); ``hook`` as in `whole_combiner`."""
    diagnostics = diagnostics or DiagnosticsOptions()
    offsets = flat_offsets(run.model)
    plan = ddp_bucket_plan(run.model, bucket_cap_mb)
    blocks = blocks_for_plan(plan, offsets)
    _log_plan(run, plan, blocks, "bucket", bucket_cap_mb)
    diag = _diagnostics(run, blocks, diagnostics) if diagnostics.enabled else None
    combiner = GramCombiner(blocks, spec, run.seed, diag, scope="bucket", bucket_cap_mb=bucket_cap_mb)
    combiner.hook = hook
    return combiner
