"""The single place that chooses how a built-in method runs, from the run's settings.

- preference methods: the self-rewarding DPO loop (:mod:`harness.preference.loop`) with the method's pair filter;
- gradient methods: the single-process HF Trainer path (:func:`harness.train.sft.train_sft`) when the run has one
  process, DDP with a communication hook (:func:`harness.distributed.train_distributed`) under torchrun.

A method never picks its own engine: it hands over plain data (its combiner or its filter) and the executor does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from harness.method import RunContext, TrainOutcome
from harness.moo.options import BUCKET_HOOKS, GLOBAL_HOOKS, GradientPlan

if TYPE_CHECKING:
    from harness.method import ExecutedMethod

Engine = Literal["single", "ddp"]


def choose_engine(run: RunContext) -> Engine:
    """The engine of a gradient method's run: DDP when torchrun started several processes, else one process."""
    return "ddp" if run.dist.world_size > 1 else "single"


def gradient_plan(combiner: Any) -> GradientPlan:
    """The plain-data plan of a gradient method's combiner: None (joint SFT) -> the mean plan."""
    if combiner is None:
        return GradientPlan()
    plan = getattr(combiner, "plan", None)
    if not isinstance(plan, GradientPlan):
        raise TypeError(f"combiner {combiner!r} cannot run distributed: give it a `plan` "
                        "(harness.moo.options.GradientPlan: weighting, scope, granularity, bucket cap, hook)")
    return plan


def resolve_hook(plan: GradientPlan, suite_hook: str) -> str:
    """The DDP hook of a run, decided here only: `mean` for joint SFT; the method's own `hook` option when it set one;
    else the suite's `distributed.hook` when it implements the method's scope; else that scope's default."""
    if plan.scope == "mean":
        return "mean"
    allowed = {"bucket": BUCKET_HOOKS, "global": GLOBAL_HOOKS}.get(plan.scope)
    if allowed is None:
        raise ValueError(f"unknown scope {plan.scope!r}; expected 'mean', 'bucket' or 'global'")
    if plan.hook is not None:
        if plan.hook not in allowed and plan.hook != "mean":
            raise ValueError(f"hook {plan.hook!r} does not implement scope {plan.scope!r}; use one of {allowed}")
        return plan.hook
    return suite_hook if suite_hook in allowed else {"bucket": "sharded", "global": "full"}[plan.scope]


def execute(method: ExecutedMethod, run: RunContext, options: Any) -> TrainOutcome:
    if method.kind == "preference":
        from harness.preference.loop import SelfRewardingLoop

        return SelfRewardingLoop(run, options, method.build(options, run)).execute()
    combiner = method.build(options, run)
    if choose_engine(run) == "ddp":
        from harness.distributed import train_distributed

        plan = gradient_plan(combiner)
        model, metrics = train_distributed(run, plan, resolve_hook(plan, run.suite.distributed.hook))
    else:
        from harness.train.sft import train_sft

        model, metrics = train_sft(run, combiner=combiner)
    return TrainOutcome(model=model, metrics=metrics)
