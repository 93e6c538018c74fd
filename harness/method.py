"""What a method is, and what it receives and returns: the `Method` protocol, `RunContext`, `TrainOutcome`.

Every method, gradient or preference, built in or third party, is a `Method`: a name, a one-line summary, a family,
a kind, a version, a frozen `Options` dataclass, and ``train(run, options) -> TrainOutcome``. The harness builds the
model, data, seed and tracker (`RunContext`) and evaluates and records after `train` returns, so no method can
evaluate differently.

Built-in methods differ only where they must: a gradient method hands the executor a combiner built from its
options, a preference method a pair filter. Both are one dataclass, `ExecutedMethod`, made by `gradient_method(...)`
or `preference_method(...)`; :mod:`harness.executor` chooses the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # types only: this module stays importable without torch, for cheap discovery
    from harness.config import MethodSpec, Suite
    from harness.data.sft import LanguageData

Family = Literal["baseline", "proposed"]
Kind = Literal["gradient", "preference"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class RunContext:
    """What the harness hands every method: the same suite, model, data, seed, tracker and folders for all."""

    suite: Suite
    method: MethodSpec
    model_name: str
    seed: int
    model: Any
    tokenizer: Any
    data: LanguageData
    run_dir: Path
    tracker: Any  # harness.tracking.Tracker
    dist: DistInfo = field(default_factory=DistInfo)
    resume: bool = False

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def drop_checkpoints(self) -> None:
        """Once a run is finished and evaluated: its optimizer checkpoints only serve resumption."""
        import shutil

        shutil.rmtree(self.checkpoint_dir, ignore_errors=True)


@dataclass
class TrainOutcome:
    """What a method hands back to the harness: the trained model plus method-specific summary metrics."""

    model: Any
    metrics: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Method(Protocol):
    name: str
    summary: str
    family: Family
    kind: str
    version: int
    Options: type

    def train(self, run: RunContext, options: Any) -> TrainOutcome: ...


Builder = Callable[[Any, RunContext], Any]


@dataclass(frozen=True)
class ExecutedMethod:
    """A built-in kind of method: `build(options, run)` makes its combiner (gradient) or pair filter (preference),
    and the executor runs it on the engine the run's settings choose."""

    name: str
    summary: str
    family: Family
    kind: Kind
    Options: type
    build: Builder
    version: int = 1

    def train(self, run: RunContext, options: Any) -> TrainOutcome:
        from harness.executor import execute  # the engines import torch and the trainer: only when training

        return execute(self, run, options)


def gradient_method(*, name: str, summary: str, family: Family, Options: type, make_combiner: Builder,
                    version: int = 1) -> ExecutedMethod:
    """Register a method whose per-language gradients are combined by `make_combiner(options, run)`."""
    from harness.registry import register_method

    return register_method(ExecutedMethod(name, summary, family, "gradient", Options, make_combiner, version))


def preference_method(*, name: str, summary: str, family: Family, Options: type, make_filter: Builder,
                      version: int = 1) -> ExecutedMethod:
    """Register a self-rewarding DPO method whose iterations keep the pairs `make_filter(options, run)` selects."""
    from harness.registry import register_method

    return register_method(ExecutedMethod(name, summary, family, "preference", Options, make_filter, version))
