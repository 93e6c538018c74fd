"""Pair filters: which preference pairs an iteration trains on.

- `NoFilter` (self-rewarding DPO): keep all;
- `RandomFilter`: keep a seeded random ``ceil(ρ·n)`` of each language's pairs (the control for CONGRAD's keep ratio);
- `CongradFilter`: per-sample LP-DPO gradients on the trainable parameters, compressed (see `compression`), a
  per-language EMA of the compressed gradients, PCGrad among the K EMAs → consensus direction d; every pair is scored
  by its alignment with d, and the top ρ of each language are kept (or all pairs with score ≥ threshold).

Two scorers give the same g_i·d:
- ``explicit``: one backward per pair (per-sample gradients), compressed, then cos(c_i, d) or c_i·d in the compressed
  space (the memory is N·D floats instead of N·P);
- ``jvp``: no per-sample gradient at all. EMAs are fed with per-language *mini-batch mean* gradients (one backward per
  mini-batch), d (compressed) is lifted to parameter space as Rᵀd, and g_i·Rᵀd = (R g_i)·d for every pair of a batch comes
  out of one forward-mode JVP of the per-pair loss vector along Rᵀd. It can only score by the dot product (a cosine needs
  ‖g_i‖, i.e. the per-sample gradients the JVP avoids).
At the start of an iteration the policy is the reference, so the per-sample gradient is the first DPO step's gradient.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from harness.moo import combine, gram, weighting
from harness.preference.compression import Compressor, ParamLayout, make_compressor
from harness.preference.pairs import Pair
from harness.seeding import generator


@dataclass
class FilterContext:
    model: Any
    tokenizer: Any
    iteration: int
    seed: int
    languages: tuple[str, ...]  # seen languages, in suite order
    beta: float
    alpha: float
    max_length: int | None


@dataclass
class FilterResult:
    keep: list[bool]
    scores: list[float] | None = None  # alignment score per pair (None for filters without scores)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)


class PairFilter(Protocol):
    name: str

    def __call__(self, pairs: Sequence[Pair], ctx: FilterContext) -> FilterResult: ...


def keep_count(n: int, ratio: float) -> int:
    """How many of n pairs a keep ratio keeps: ceil(ρ·n), at least 1 when n ≥ 1 and ρ > 0."""
    if n == 0 or ratio <= 0:
        return 0
    return min(n, max(1, math.ceil(ratio * n - 1e-9)))


def by_language(pairs: Sequence[Pair]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        out.setdefault(p.language, []).append(i)
    return out


class NoFilter:
    name = "none"

    def __call__(self, pairs: Sequence[Pair], ctx: FilterContext) -> FilterResult:
        return FilterResult(keep=[True] * len(pairs))


class RandomFilter:
    name = "random"

    def __init__(self, keep_ratio: float):
        self.keep_ratio = keep_ratio

    def __call__(self, pairs: Sequence[Pair], ctx: FilterContext) -> FilterResult:
        keep = [False] * len(pairs)
        for lang, idx in by_language(pairs).items():
            g = generator(ctx.seed, "random-filter", ctx.iteration, lang)
            chosen = torch.randperm(len(idx), generator=g)[: keep_count(len(idx), self.keep_ratio)]
            for j in chosen.tolist():
                keep[idx[j]] = True
        return FilterResult(keep=keep)


# ---------------------------------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------------------------------


def trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _flat(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float() for g, p in zip(grads, params, strict=False)])


@torch.no_grad()
def reference_logps(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    from harness.preference.dpo import sequence_logps  # TRL: imported when gradients are computed

    return sequence_logps(model, batch)[0]


def per_sample_gradients(model: Any, tokenizer: Any, pairs: Sequence[Pair], beta: float, alpha: float,
                         max_length: int | None, ref_logps: torch.Tensor | None = None) -> torch.Tensor:
    """Flat LP-DPO gradient of every pair (N × P, trainable parameters in `named_parameters` order), one backward each.
    `ref_logps` (2N: chosen rows then rejected rows) defaults to the current model's (policy = reference)."""
    from harness.preference.dpo import collate_pairs, pair_losses

    params = [p for _, p in trainable(model)]
    rows = []
    for i, pair in enumerate(pairs):
        batch = collate_pairs(tokenizer, [pair], max_length)
        batch = {k: v.to(params[0].device) for k, v in batch.items()}
        ref = reference_logps(model, batch) if ref_logps is None else ref_logps[[i, len(pairs) + i]]
        loss = pair_losses(model, batch, ref, beta, alpha).sum()
        rows.append(_flat(torch.autograd.grad(loss, params, allow_unused=True), params))
    return torch.stack(rows) if rows else torch.zeros(0, sum(p.numel() for p in params))


def mean_gradient(model: Any, tokenizer: Any, pairs: Sequence[Pair], beta: float, alpha: float,
                  max_length: int | None) -> torch.Tensor:
    """Flat gradient of the mean LP-DPO loss of a mini-batch (one forward/backward)."""
    from harness.preference.dpo import collate_pairs, pair_losses

    params = [p for _, p in trainable(model)]
    batch = {k: v.to(params[0].device) for k, v in collate_pairs(tokenizer, pairs, max_length).items()}
    ref = reference_logps(model, batch)
    loss = pair_losses(model, batch, ref, beta, alpha).mean()
    return _flat(torch.autograd.grad(loss, params, allow_unused=True), params)


class _EagerAttention:
    """Forward-mode AD has no rule for the fused SDPA kernels: switch to eager attention while inside."""

    def __init__(self, model: Any):
        self.model = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.before = getattr(self.model.config, "_attn_implementation", None)

    def __enter__(self):
        if self.before not in (None, "eager") and hasattr(self.model, "set_attn_implementation"):
            self.model.set_attn_implementation("eager")

    def __exit__(self, *exc):
        if self.before not in (None, "eager") and hasattr(self.model, "set_attn_implementation"):
            self.model.set_attn_implementation(self.before)


def jvp_scores(model: Any, tokenizer: Any, pairs: Sequence[Pair], direction: torch.Tensor, beta: float, alpha: float,
               max_length: int | None, batch_size: int = 16) -> torch.Tensor:
    """g_i·direction for every pair, by one forward-mode JVP of the per-pair loss vector per batch (no per-sample
    gradients). `direction` is flat over the trainable parameters."""
    from torch.func import functional_call, jvp

    from harness.preference.dpo import collate_pairs, pair_losses

    named = trainable(model)
    primals, tangents, offset = {}, {}, 0
    for name, p in named:
        primals[name] = p.detach()
        tangents[name] = direction[offset: offset + p.numel()].view_as(p).to(p.dtype)
        offset += p.numel()
    out = []
    with _EagerAttention(model):
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start: start + batch_size]
            batch = {k: v.to(direction.device) for k, v in collate_pairs(tokenizer, chunk, max_length).items()}
            ref = reference_logps(model, batch)

            def losses(params: dict[str, torch.Tensor], batch=batch, ref=ref) -> torch.Tensor:
                class _Call(torch.nn.Module):
                    def forward(self, **kw):
                        return functional_call(model, params, (), kw, strict=False)

                return pair_losses(_Call(), batch, ref, beta, alpha)

            _, tangent_out = jvp(losses, (primals,), (tangents,))
            out.append(tangent_out.detach().float())
    return torch.cat(out) if out else torch.zeros(0)


# ---------------------------------------------------------------------------------------------------------------------
# EMA + consensus
# ---------------------------------------------------------------------------------------------------------------------


class LanguageEMA:
    """Per-language exponential moving average of compressed gradient means; the first update initialises (no bias)."""

    def __init__(self, decay: float):
        self.decay = decay
        self.state: dict[str, torch.Tensor] = {}
        self.updates: dict[str, int] = {}

    def update(self, language: str, value: torch.Tensor) -> None:
        value = value.detach().float()
        if language not in self.state:
            self.state[language] = value.clone()
        else:
            self.state[language] = self.decay * self.state[language] + (1 - self.decay) * value
        self.updates[language] = self.updates.get(language, 0) + 1


def consensus_direction(emas: dict[str, torch.Tensor], languages: Sequence[str], reduction: str, seed: int,
                        iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
    """PCGrad among the K EMA vectors (languages in suite order) -> d = Σ c_k ema_k; diagnostics."""
    present = [lang for lang in languages if lang in emas]
    stacked = torch.stack([emas[lang] for lang in present])
    g = gram(stacked)
    coeffs = weighting("pcgrad", reduction=reduction)(g, generator=generator(seed, "congrad/pcgrad", iteration))
    d = combine(stacked, coeffs)
    norms = torch.sqrt(torch.diagonal(g).clamp_min(0))
    cos = g / (norms[:, None] * norms[None, :]).clamp_min(1e-30)
    k = len(present)
    conflicts = sum(1 for i in range(k) for j in range(i + 1, k) if g[i, j] < 0)
    metrics = {"congrad/conflicting_pairs": float(conflicts), "congrad/languages_in_consensus": float(k)}
    for i, lang in enumerate(present):
        metrics[f"congrad/pcgrad_coeff/{lang}"] = float(coeffs[i])
        if k > 1:
            metrics[f"congrad/ema_cos_mean/{lang}"] = float((cos[i].sum() - cos[i, i]) / (k - 1))
    return d, metrics


class CongradFilter:
    name = "congrad"

    def __init__(self, *, keep_ratio: float, threshold: float | None, compression: str, rank: int, nnz: int,
                 chunk: int, ema_decay: float, ema_batch_size: int, ema_across_iterations: bool,
                 pcgrad_reduction: str, scorer: str, score: str, jvp_batch_size: int = 16):
        if scorer == "jvp" and score == "cosine":
            raise ValueError("the jvp scorer computes g_i·d only; use score='dot' (a cosine needs per-sample gradients)")
        self.keep_ratio, self.threshold = keep_ratio, threshold
        self.compression, self.rank, self.nnz, self.chunk = compression, rank, nnz, chunk
        self.ema_decay, self.ema_batch_size, self.ema_across_iterations = ema_decay, ema_batch_size, ema_across_iterations
        self.pcgrad_reduction, self.scorer, self.score = pcgrad_reduction, scorer, score
        self.jvp_batch_size = jvp_batch_size
        self.ema: LanguageEMA | None = None
        self.compressor: Compressor | None = None

    def _setup(self, ctx: FilterContext) -> Compressor:
        layout = ParamLayout.of(ctx.model)
        if self.compressor is None or self.compressor.layout != layout:
            self.compressor = make_compressor(self.compression, layout, self.rank, ctx.seed, self.chunk, self.nnz)
            self.ema = None
        if self.ema is None or not self.ema_across_iterations:
            self.ema = LanguageEMA(self.ema_decay)
        return self.compressor

    def _update_emas(self, pairs: Sequence[Pair], groups: dict[str, list[int]], ctx: FilterContext,
                     comp: Compressor) -> torch.Tensor | None:
        """Feed each language's compressed gradients into its EMA; the explicit scorer also keeps every pair's row."""
        assert self.ema is not None
        model = ctx.model
        if self.scorer == "explicit":
            rows = torch.zeros(len(pairs), comp.dim)
            for lang in ctx.languages:
                idx = groups.get(lang, [])
                for s in range(0, len(idx), self.ema_batch_size):
                    sub = idx[s: s + self.ema_batch_size]
                    full = per_sample_gradients(model, ctx.tokenizer, [pairs[i] for i in sub], ctx.beta, ctx.alpha,
                                                ctx.max_length)
                    c = comp.compress(full)
                    del full
                    rows[sub] = c.cpu()
                    self.ema.update(lang, c.mean(0).cpu())
            return rows
        for lang in ctx.languages:
            idx = groups.get(lang, [])
            for s in range(0, len(idx), self.ema_batch_size):
                sub = [pairs[i] for i in idx[s: s + self.ema_batch_size]]
                g = mean_gradient(model, ctx.tokenizer, sub, ctx.beta, ctx.alpha, ctx.max_length)
                self.ema.update(lang, comp.compress(g[None])[0].cpu())
        return None

    def _keep(self, groups: dict[str, list[int]], scores: list[float], n: int) -> list[bool]:
        """Per language: the pairs at or above the threshold, or the top keep_ratio (ties broken by index)."""
        keep = [False] * n
        for idx in groups.values():
            if self.threshold is not None:
                for i in idx:
                    keep[i] = scores[i] >= self.threshold
            else:
                order = sorted(idx, key=lambda i: (-scores[i], i))
                for i in order[: keep_count(len(idx), self.keep_ratio)]:
                    keep[i] = True
        return keep

    def __call__(self, pairs: Sequence[Pair], ctx: FilterContext) -> FilterResult:
        comp = self._setup(ctx)
        assert self.ema is not None
        model = ctx.model
        was_training = model.training
        model.eval()
        groups = by_language(pairs)
        t0 = time.perf_counter()
        compressed = self._update_emas(pairs, groups, ctx, comp)
        grad_seconds = time.perf_counter() - t0
        metrics: dict[str, float] = {}
        if not self.ema.state:
            model.train(was_training)
            return FilterResult(keep=[False] * len(pairs), scores=[], metrics={"congrad/no_consensus": 1.0})
        d, cmetrics = consensus_direction(self.ema.state, ctx.languages, self.pcgrad_reduction, ctx.seed, ctx.iteration)
        metrics |= cmetrics
        t1 = time.perf_counter()
        if self.scorer == "explicit":
            assert compressed is not None
            dots = compressed @ d
            if self.score == "cosine":
                scores = dots / (compressed.norm(dim=1) * d.norm()).clamp_min(1e-30)
            else:
                scores = dots
        else:
            device = next(model.parameters()).device
            lifted = comp.lift(d.to(device))
            scores = jvp_scores(model, ctx.tokenizer, list(pairs), lifted, ctx.beta, ctx.alpha, ctx.max_length,
                                self.jvp_batch_size).cpu()
        score_seconds = time.perf_counter() - t1
        model.train(was_training)
        # d and g_i are both loss gradients (ascent directions): alignment is +g_i·d, for either scorer.
        score_list = [float(s) for s in scores]
        keep = self._keep(groups, score_list, len(pairs))
        mem = comp.memory(len(pairs), len(ctx.languages))
        if self.scorer == "jvp":
            mem["compressed_bytes"] = float(len(ctx.languages) * comp.dim * 4 + comp.P * 4)  # EMAs + lifted d
            mem["saving_ratio"] = mem["full_bytes"] / max(mem["compressed_bytes"], 1)
        metrics |= {"congrad/mem/full_per_sample_grad_mb": mem["full_bytes"] / 2**20,
                    "congrad/mem/compressed_mb": mem["compressed_bytes"] / 2**20,
                    "congrad/mem/saving_ratio": mem["saving_ratio"],
                    "congrad/compressed_dim": mem["dim"], "congrad/trainable_params": mem["params"],
                    "perf/congrad_grad_s": grad_seconds, "perf/congrad_score_s": score_seconds,
                    "perf/congrad_pairs_per_s": len(pairs) / max(grad_seconds + score_seconds, 1e-9)}
        return FilterResult(keep=keep, scores=score_list, metrics=metrics,
                            artifacts={"consensus_norm": float(d.norm())})


def warn_missing(languages: Sequence[str], counts: dict[str, int], what: str) -> list[str]:
    """Languages with zero `what`; warns (they are reported, never silently dropped)."""
    missing = [lang for lang in languages if counts.get(lang, 0) == 0]
    if missing:
        warnings.warn(f"no {what} for languages {missing}", RuntimeWarning, stacklevel=2)
    return missing
