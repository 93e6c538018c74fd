"""The single place that chooses how a built-in method runs, from the run's settings.

- preference methods: the self-rewarding DPO loop (:mod:`harness.preference.loop`) with the method's pair filter,
  after a joint SFT stage when the options ask for one (`sft_first`);
- gradient methods: the single-process HF Trainer path (:func:`harness.train.sft.train_sft`) when the run has one
  process, DDP with a communication hook (:func:`harness.distributed.train_distributed`) under torchrun.

A method never picks its own engine: it hands over plain data (its combiner or its filter) and the executor does.
"""

from __future__ import annotations

from dataclasses import replace
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

        sft_metrics: dict[str, float] = {}
        if options.sft_first:
            run, sft_metrics = sft_stage(run)
        outcome = SelfRewardingLoop(run, options, method.build(options, run)).execute()
        return TrainOutcome(model=outcome.model, metrics={**sft_metrics, **outcome.metrics})
    model, metrics = train_gradient(run, method.build(options, run))
    return TrainOutcome(model=model, metrics=metrics)


def train_gradient(run: RunContext, combiner: Any) -> tuple[Any, dict[str, float]]:
    """Train run.model with a gradient method's combiner (None: joint SFT) on the engine the run's settings choose."""
    if choose_engine(run) == "ddp":
        from harness.distributed import train_distributed

        plan = gradient_plan(combiner)
        return train_distributed(run, plan, resolve_hook(plan, run.suite.distributed.hook))
    from harness.train.sft import train_sft

    return train_sft(run, combiner=combiner)


def sft_stage(run: RunContext) -> tuple[RunContext, dict[str, float]]:
    """A preference method's `sft_first` stage: joint SFT with the suite's train settings, exactly a joint SFT run of
    the same seed, then the loop starts from its model. The loop keeps no checkpoints, so a resumed run starts over
    from the base: the interrupted attempt's points and checkpoints are dropped first."""
    if run.resume:
        run.tracker.restart_from_step(0)
        run.drop_checkpoints()
        run = replace(run, resume=False)
    model, metrics = train_gradient(run, None)
    return replace(run, model=model), metrics
