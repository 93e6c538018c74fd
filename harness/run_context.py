"""What the harness hands every method: the same suite, model, data, seed, tracker and folders for all."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import MethodSpec, Suite
from harness.data.sft import LanguageData


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
