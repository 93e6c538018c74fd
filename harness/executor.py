"""The single place that chooses how a built-in method runs, from the run's settings.

- preference methods: the self-rewarding DPO loop (:mod:`harness.preference.loop`) with the method's pair filter;
- gradient methods: the single-process HF Trainer path (:func:`harness.train.sft.train_sft`) when the run has one
  process, DDP with a communication hook (:func:`harness.distributed.train_distributed`) under torchrun.

A method never picks its own engine: it hands over plain data (its combiner or its filter) and the executor does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from harness.method import RunContext, TrainOutcome

if TYPE_CHECKING:
    from harness.method import ExecutedMethod

Engine = Literal["single", "ddp"]


def choose_engine(run: RunContext) -> Engine:
    """The engine of a gradient method's run: DDP when torchrun started several processes, else one process."""
    return "ddp" if run.dist.world_size > 1 else "single"


def execute(method: ExecutedMethod, run: RunContext, options: Any) -> TrainOutcome:
    if method.kind == "preference":
        from harness.preference.loop import SelfRewardingLoop

        return SelfRewardingLoop(run, options, method.build(options, run)).execute()
    combiner = method.build(options, run)
    if choose_engine(run) == "ddp":
        from harness.distributed import train_distributed

        model, metrics = train_distributed(run, combiner)
    else:
        from harness.train.sft import train_sft

        model, metrics = train_sft(run, combiner=combiner)
    return TrainOutcome(model=model, metrics=metrics)
