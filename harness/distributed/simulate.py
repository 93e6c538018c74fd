"""Single-process simulation of a distributed run with the same buckets (DESIGN.md, "Execution modes", 3).

For each step it computes every simulated rank's gradient on exactly the batch that rank gets, averages ranks that
share a language, flattens the K_eff language gradients per DDP bucket (`harness.buckets`) and runs the hooks' block
loop (`harness.moo.blocks`): per block of each bucket (bucket hooks; the blocks of `granularity` nested in the bucket)
or on the global Gram = sum of bucket Grams (full-gradient hooks), with the same seeded PCGrad generators, then the
same clipping / optimizer / schedule as `DistEngine`. Distributed runs must match it to float tolerance: this is the
main regression test of the hooks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from harness.buckets import Bucket, bucket_plan, flatten_by_plan, unflatten_by_plan
from harness.config import TrainConfig
from harness.distributed.assignment import assign
from harness.distributed.engine import (
    BatchFn,
    EngineConfig,
    LossFn,
    build_optimizer,
    build_scheduler,
    engine_weighting,
)
from harness.distributed.hooks import (
    BUCKET_HOOKS,
    GLOBAL_HOOKS,
    GLOBAL_KEY,
    HOOK_GRAM_CHUNK,
    check_granularity,
)
from harness.moo.blocks import Block, BlockRule, bucket_blocks, nested_index, solve_blocks
from harness.moo.weightings import combine, gram
from harness.numerics import all_finite


def ddp_plan(model: torch.nn.Module, cfg: EngineConfig, batch_fn: BatchFn, loss_fn: LossFn, world: int,
             n_languages: int) -> list[Bucket]:
    """DDP's rebuilt buckets for this model and cap (gradient-ready order recorded from one backward)."""
    a = assign(world, n_languages, 0)

    def closure() -> None:
        loss_fn(model, batch_fn(0, 0, 0, a)).backward()

    plan = bucket_plan(model, cfg.bucket_cap_mb, ready_order=closure)
    model.zero_grad(set_to_none=True)
    return plan


def bucket_layouts(model: torch.nn.Module, plan: Sequence[Bucket], granularity: str) -> list[list[Block]]:
    """The blocks of every bucket, as the bucket hooks build them (ranges relative to the flat bucket)."""
    index = nested_index(model, granularity)
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    return [bucket_blocks(b.index, b.names, [sizes[n] for n in b.names], index) for b in plan]


def _language_update(lang_grads: dict[str, torch.Tensor], plan: Sequence[Bucket], layouts: list[list[Block]],
                     shapes: dict[str, torch.Size], hook: str, rule: BlockRule, step: int,
                     losses: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The update the hook writes: (K_eff, *shape) language gradients by name -> combined gradients by name."""
    flat = flatten_by_plan(lang_grads, plan, batch_dims=1)  # per bucket (K_eff, P_b)
    if hook in BUCKET_HOOKS:
        dirs = [solve_blocks(rows, blocks, rule, step, HOOK_GRAM_CHUNK, losses, exact=True)
                for rows, blocks in zip(flat, layouts, strict=True)]
    elif hook in GLOBAL_HOOKS:
        coeffs = rule(sum(gram(rows, chunk=HOOK_GRAM_CHUNK, exact=True) for rows in flat), step, GLOBAL_KEY, losses)
        dirs = [combine(rows, coeffs) for rows in flat]
    else:
        raise ValueError(f"unknown hook {hook!r}")
    return unflatten_by_plan(dirs, plan, shapes)


def simulate(model: torch.nn.Module, cfg: EngineConfig, train: TrainConfig, world: int, n_languages: int,
             batch_fn: BatchFn, loss_fn: LossFn, steps: int, plan: Sequence[Bucket] | None = None) -> torch.nn.Module:
    if plan is None:
        plan = ddp_plan(model, cfg, batch_fn, loss_fn, world, n_languages)
    hook = "mean" if cfg.hook == "ddp" else cfg.hook
    check_granularity(hook, cfg.granularity)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    shapes = {n: p.shape for n, p in named}
    params = [p for _, p in named]
    layouts = bucket_layouts(model, plan, cfg.granularity)
    rule = BlockRule(engine_weighting(cfg, world, n_languages), cfg.normalize, cfg.output_scale, cfg.seed)
    optimizer = build_optimizer(model, train)
    scheduler = build_scheduler(optimizer, train)
    for step in range(steps):
        a = assign(world, n_languages, step)
        rank_grads, rank_losses = [], []
        for r in range(world):
            model.zero_grad(set_to_none=True)
            total = torch.zeros((), dtype=torch.float64)
            for micro in range(cfg.grad_accum):
                loss = loss_fn(model, batch_fn(step, r, micro, a)) / cfg.grad_accum
                total += loss.detach().to(torch.float64)
                loss.backward()
            rank_losses.append(total)
            rank_grads.append({n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
                               for n, p in named})
        model.zero_grad(set_to_none=True)
        if (step < cfg.warmup_steps or hook == "mean") and a.even:
            update = {n: torch.stack([g[n] for g in rank_grads]).mean(0) for n, _ in named}
        elif step < cfg.warmup_steps or hook == "mean":  # uneven groups: languages count, not ranks
            update = {n: sum(rank_grads[r][n] * a.language_weight(r) for r in range(world)) for n, _ in named}
        else:
            lang_grads = {n: torch.stack([torch.stack([rank_grads[r][n] for r in a.group(lang)]).mean(0)
                                          for lang in a.languages]) for n, _ in named}
            losses = torch.stack([torch.stack([rank_losses[r] for r in a.group(lang)]).mean()
                                  for lang in a.languages])
            update = _language_update(lang_grads, plan, layouts, shapes, hook, rule, step, losses)
        for n, p in named:
            p.grad = update[n].to(p.dtype).clone()
        if all_finite([p.grad for p in params]):
            if train.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm)
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return model
