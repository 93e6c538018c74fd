"""`gradient_method(...)`: a registered method that runs the shared SFT path with a gradient combiner.

PCGrad, full MGDA, CAGrad and Bucket-Level MOO differ only in the combiner built from their options;
data order, optimizer, clipping, schedule and evaluation are the shared ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.registry import Family, TrainOutcome, register_method

if TYPE_CHECKING:  # the trainer (transformers.Trainer) is imported when a method trains, not when it registers
    from harness.run_context import RunContext
    from harness.train.sft import GradientCombiner

CombinerFactory = Callable[[Any, "RunContext"], "GradientCombiner | None"]


@dataclass(frozen=True)
class GradientMethod:
    name: str
    summary: str
    family: Family
    Options: type
    make_combiner: CombinerFactory
    version: int = 1
    kind: str = "gradient"

    def train(self, run: RunContext, options: Any) -> TrainOutcome:
        combiner = self.make_combiner(options, run)
        if run.dist.world_size > 1:  # distributed path: DDP + a communication hook (harness.distributed, issue 4)
            from harness.distributed import train_distributed

            model, metrics = train_distributed(run, combiner)
            return TrainOutcome(model=model, metrics=metrics)
        from harness.train.sft import train_sft

        model, metrics = train_sft(run, combiner=combiner)
        return TrainOutcome(model=model, metrics=metrics)


def gradient_method(*, name: str, summary: str, family: Family, Options: type, make_combiner: CombinerFactory,
                    version: int = 1) -> GradientMethod:
    return register_method(GradientMethod(name, summary, family, Options, make_combiner, version))
