"""Polymoo in your own training loop: the weightings, a single-process combiner, and the DDP communication hook.

The suite runner (``polymoo run``) owns its loop; a researcher with a loop of their own wants the pieces without the
runner, as TorchJD offers its aggregators and PyTorch its PowerSGD hook. This module is that surface, and only glue:
the maths lives in :mod:`harness.moo.weightings` (K×K Gram → K coefficients), :mod:`harness.moo.blocks` (which
coordinates are solved together) and :mod:`harness.distributed.hooks` (the DDP hooks), so the suite runs and an own
loop apply exactly the same coefficients. See ``docs/api.md``.

1. **Weightings** — ``weighting(name, **options)(gram(J))`` gives the coefficients, ``combine(J, c)`` the direction;
   ``stateful_weighting`` for GradVac / FAMO; ``available_weightings()``.
2. **Single process** — :class:`PerLanguageStep` (or the one-shot :func:`combine_step`): one backward per language
   loss, the weighting on each block of ``granularity``, the direction written into ``.grad``; then ``optimizer.step()``.
3. **DDP** — :func:`polymoo_hook_state` + ``ddp_model.register_comm_hook(state, comm_hook)`` on the user's own
   ``DistributedDataParallel`` model, each rank training one language; per step ``state.begin(step)`` before the
   forward and ``state.end()`` after the backward.

The FSDP2 engine (a custom reduce-scatter, DESIGN.md "Engines at scale") does not exist yet, so there is no FSDP2 entry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from harness.buckets import trainable_parameters, write_flat_grads
from harness.distributed.accounting import Comm
from harness.distributed.assignment import StepAssignment, assign
from harness.distributed.engine import EngineConfig, engine_weighting
from harness.distributed.hooks import BUCKET_HOOKS, GLOBAL_HOOKS, HOOKS, HookState, comm_hook
from harness.moo.blocks import (
    GRANULARITIES,
    Block,
    BlockRule,
    block_directions,
    block_grams,
    model_blocks,
    nested_index,
)
from harness.moo.weightings import (
    STATEFUL_WEIGHTINGS,
    StatefulWeighting,
    Weighting,
    available_weightings,
    combine,
    gram,
    stateful_weighting,
    weighting,
)

__all__ = [
    "BUCKET_HOOKS", "GLOBAL_HOOKS", "GRANULARITIES", "HOOKS", "Block", "HookState", "OwnLoopHookState",
    "PerLanguageStep", "StatefulWeighting", "StepAssignment", "StepResult", "Weighting", "assign",
    "available_weightings", "combine", "combine_step", "comm_hook", "gram", "model_blocks", "polymoo_hook_state",
    "register_polymoo_hook", "stateful_weighting", "weighting",
]

Losses = Mapping[str, Tensor] | Sequence[Tensor]
"""K scalar losses, one per language: a mapping (its keys name the languages in metrics) or a sequence."""


# ----------------------------------------------------------------------------------------------------------------------
# single process
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class StepResult:
    """What one combined step did: per block its K coefficients (float64, on the raw per-language gradients), the
    blocks themselves, and cheap metrics (per-language loss and gradient norm, direction norm) to log."""

    coefficients: list[Tensor]
    blocks: list[Block]
    languages: list[str]
    metrics: dict[str, float] = field(default_factory=dict)


def _make_weighting(name: str, options: Mapping[str, Any] | None) -> Weighting | StatefulWeighting:
    """Stateful names (GradVac, FAMO) in their own convention, the others as ``fn(gram)``: the block rule treats them
    differently (a stateful one keeps a state per block and sees the losses), as the suite's combiners do."""
    options = dict(options or {})
    if name in STATEFUL_WEIGHTINGS:
        return stateful_weighting(name, **options)
    return weighting(name, **options)


def _split(losses: Losses) -> tuple[list[str], list[Tensor]]:
    if isinstance(losses, Mapping):
        names, values = [str(k) for k in losses], list(losses.values())
    else:
        values = list(losses)
        names = [str(i) for i in range(len(values))]
    if not values:
        raise ValueError("need at least one per-language loss")
    return names, values


class PerLanguageStep:
    """The single-process combiner for an existing model: losses in, combined direction in ``.grad``.

    Why a class: the block layout is computed once (``ddp_bucket`` records DDP's bucket order with a probe backward),
    the step counter seeds PCGrad's projection order per ``(seed, step, block)`` as the suite runs do, and stateful
    weightings keep one state per block across steps (:meth:`state_dict` checkpoints it).

    ``granularity``: ``whole`` (one block: full MGDA / PCGrad / ...), ``ddp_bucket`` (DDP's buckets for
    ``bucket_cap_mb``: Bucket-Level MOO), ``module`` (each transformer block) or ``tensor`` (each parameter).
    ``normalize`` (``none`` | ``l2``) and ``output_scale`` (``raw`` | ``mean_norm``) as in :mod:`harness.moo.blocks`.
    """

    def __init__(self, model: nn.Module, weighting: str = "mgda", *, granularity: str = "whole",
                 bucket_cap_mb: float | None = None, weighting_options: Mapping[str, Any] | None = None,
                 normalize: str = "none", output_scale: str = "raw", seed: int = 0):
        if normalize not in ("none", "l2") or output_scale not in ("raw", "mean_norm"):
            raise ValueError(f"normalize must be none|l2 and output_scale raw|mean_norm, got {normalize!r}, "
                             f"{output_scale!r}")
        self.model = model
        self.params = trainable_parameters(model)
        self.blocks = model_blocks(model, granularity, bucket_cap_mb)
        self.granularity = granularity
        self.rule = BlockRule(_make_weighting(weighting, weighting_options), normalize, output_scale, seed)
        self.step = 0

    def gradients(self, losses: Sequence[Tensor]) -> Tensor:
        """K×P per-language gradients (one backward per loss; the graph is kept until the last, since the losses may
        share one forward). Parameters a loss does not reach get zeros. Rows in at least float32."""
        params = [p for _, p in self.params]
        dtype = torch.promote_types(params[0].dtype, torch.float32) if params else torch.float32
        rows = []
        for k, loss in enumerate(losses):
            grads = torch.autograd.grad(loss, params, retain_graph=k < len(losses) - 1, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).to(dtype)
                                   for g, p in zip(grads, params, strict=True)]))
        return torch.stack(rows)

    def __call__(self, losses: Losses) -> StepResult:
        """Combine this step's per-language losses; ``.grad`` is overwritten (not accumulated) with the direction."""
        languages, values = _split(losses)
        rows = self.gradients(values)
        loss_vec = torch.stack([v.detach().to(torch.float64) for v in values])
        grams = block_grams(rows, self.blocks)
        coeffs = self.rule.coefficients(grams, self.step, self.blocks, loss_vec)
        direction = block_directions(rows, self.blocks, coeffs)
        write_flat_grads([p for _, p in self.params], direction)
        self.step += 1
        total = torch.stack(grams).sum(0)
        metrics = {f"loss/{lang}": float(v) for lang, v in zip(languages, loss_vec, strict=True)}
        metrics |= {f"grad_norm/{lang}": float(total[k, k].clamp_min(0).sqrt()) for k, lang in enumerate(languages)}
        metrics["direction_norm"] = float(torch.linalg.vector_norm(direction, dtype=torch.float64))
        return StepResult(coeffs, self.blocks, languages, metrics)

    def state_dict(self) -> dict[str, Any]:
        """Step counter and the weighting's per-block states (empty for stateless weightings)."""
        return {"step": self.step, "weighting": self.rule.state_dict()}

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        self.step = int(saved["step"])
        self.rule.load_state_dict(saved["weighting"])


def combine_step(model: nn.Module, per_language_losses: Losses, weighting: str = "mgda", *, step: int = 0,
                 **options: Any) -> StepResult:
    """One-shot :class:`PerLanguageStep` (same keyword options). Convenient for a try-out; in a loop build the class
    once: the layout is not recomputed, PCGrad's order follows the step, and stateful weightings keep their state."""
    combiner = PerLanguageStep(model, weighting, **options)
    combiner.step = step
    return combiner(per_language_losses)


# ----------------------------------------------------------------------------------------------------------------------
# DDP communication hook
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class OwnLoopHookState(HookState):
    """:class:`~harness.distributed.hooks.HookState` plus what the suite's engine does around it, so an own loop needs
    two calls per optimizer step: ``begin(step)`` before the forward (the step's language assignment, and plain
    averaging during the warm-up: DDP rebuilds its buckets after iteration 0, as PyTorch's PowerSGD hook knows) and
    ``end()`` after the backward; ``share_loss(loss)`` between the forward and the backward hands a loss-based
    weighting (FAMO) the step's losses (a no-op otherwise) (the full-gradient hooks solve there; a no-op for the bucket hooks)."""

    languages_per_rank: tuple[int, ...] | None = None  # fixed rank -> language; None: harness.distributed.assign
    n_languages: int = 0
    warmup_steps: int = 1

    def assignment_at(self, step: int) -> StepAssignment:
        if self.languages_per_rank is not None:
            return StepAssignment(step, self.languages_per_rank)
        return assign(self.comm.world, self.n_languages, step)

    def begin(self, step: int) -> int:
        """Start optimizer step ``step``; returns the language this rank must train on for it."""
        a = self.assignment_at(step)
        self.comm.counter.reset()  # so `comm.counter` holds this step's bytes and hook time, as the engine logs them
        self.begin_step(step, a, step < self.warmup_steps)
        return a.rank_language[self.comm.rank]

    def share_loss(self, loss: Tensor) -> None:
        """After the forward, before the backward: a weighting that needs the per-language losses (FAMO) gets the
        step's losses from every rank (one all-gather of N floats). A no-op for every other weighting and during the
        warm-up, so a loop can always call it."""
        if self.needs_losses and not self.warmup:
            self.set_losses(self.comm.all_gather(loss.detach().to(torch.float64).reshape(1), name="all_gather.losses"))

    def end(self) -> None:
        self.finalize()


def _rank_languages(world: int, languages_per_rank: Sequence[int] | None,
                    n_languages: int | None) -> tuple[tuple[int, ...] | None, int]:
    """Exactly one of a fixed map or a language count (then the harness's rule: groups when N >= K, rotation else)."""
    if (languages_per_rank is None) == (n_languages is None):
        raise ValueError("give exactly one of languages_per_rank (rank -> language id) or n_languages")
    if languages_per_rank is None:
        assign(world, int(n_languages), 0)  # fails early, with the reason, when N and K do not fit
        return None, int(n_languages)
    fixed = tuple(int(x) for x in languages_per_rank)
    if len(fixed) != world:
        raise ValueError(f"languages_per_rank has {len(fixed)} entries for {world} ranks")
    return fixed, len(set(fixed))


def polymoo_hook_state(ddp_model: nn.Module, weighting: str = "mgda", *, hook: str = "sharded",
                       languages_per_rank: Sequence[int] | None = None, n_languages: int | None = None,
                       weighting_options: Mapping[str, Any] | None = None, granularity: str = "ddp_bucket",
                       normalize: str = "none", output_scale: str = "raw", seed: int = 0, warmup_steps: int = 1,
                       group: Any = None) -> OwnLoopHookState:
    """The state to register with ``ddp_model.register_comm_hook(state, comm_hook)``.

    Built as the suite's DDP engine builds it (same weighting checks, parameter names, nested block index), so an own
    loop gets the coefficients of ``polymoo run`` under torchrun. ``hook``: ``sharded`` / ``allgather`` (per bucket,
    or per ``module`` / ``tensor`` block inside it) or ``full`` / ``full_gather`` (the whole vector), ``mean``.
    Needs an initialised process group; ``group`` is DDP's (None: the default group).
    """
    if hook not in HOOKS:
        raise ValueError(f"unknown hook {hook!r}; known: {', '.join(HOOKS)}")
    if warmup_steps < 1:  # iteration 0 runs on DDP's initial buckets, which it then rebuilds
        raise ValueError(f"warmup_steps must be >= 1 (DDP rebuilds its buckets after iteration 0), got {warmup_steps}")
    module = getattr(ddp_model, "module", ddp_model)
    comm = Comm(group)
    fixed, k = _rank_languages(comm.world, languages_per_rank, n_languages)
    cfg = EngineConfig(hook=hook, weighting=weighting, weighting_options=dict(weighting_options or {}),
                       seed=seed, normalize=normalize, output_scale=output_scale, granularity=granularity,
                       warmup_steps=warmup_steps)
    return OwnLoopHookState(
        comm=comm, hook=hook, weighting=engine_weighting(cfg, comm.world, k), seed=seed, normalize=normalize,
        output_scale=output_scale, names={id(p): n for n, p in module.named_parameters()}, granularity=granularity,
        index=nested_index(module, granularity), languages_per_rank=fixed, n_languages=k, warmup_steps=warmup_steps)


def register_polymoo_hook(ddp_model: Any, weighting: str = "mgda", **options: Any) -> OwnLoopHookState:
    """:func:`polymoo_hook_state` and its registration in one call; returns the state (for ``begin`` / ``end``)."""
    state = polymoo_hook_state(ddp_model, weighting, **options)
    ddp_model.register_comm_hook(state, comm_hook)
    return state
