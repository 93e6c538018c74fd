"""Train a registered method for a few steps on a tiny twin, in process, with a recording tracker (no MLflow).

Used by the contract, degenerate, equivalence, golden and bench tests: the same `RunContext` the runner builds, minus
evaluation and MLflow, so the tests see the trained model and every metric and artifact the method logs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.tracking import NullTracker
from tests.conftest import BASE_SUITE

GOLDEN_LANGUAGES = {"seen": ["en", "fr", "de", "es"], "unseen": ["nl"]}
SMALL_SUITE: dict[str, Any] = {
    **copy.deepcopy(BASE_SUITE),
    "suite": {"name": "methods-test", "version": 1},
    "train": {**BASE_SUITE["train"], "steps": 2},
    "eval": {"heldout_loss": False, "tasks": []},
}


class RecordingTracker(NullTracker):
    """Keeps what a method logs: metrics by step, dict artifacts by path, figure paths."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[int, dict[str, float]] = {}
        self.dicts: dict[str, Any] = {}
        self.figures: list[str] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.setdefault(int(step or 0), {}).update(metrics)

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self.dicts[artifact_file] = copy.deepcopy(data)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        figure.savefig(Path("/dev/null"), format="png")  # render it: a broken figure fails the test
        self.figures.append(artifact_file)

    def series(self, key: str) -> list[float]:
        return [m[key] for _, m in sorted(self.metrics.items()) if key in m]


@dataclass
class Trained:
    model: Any
    initial: dict[str, torch.Tensor]
    metrics: dict[str, float]
    tracker: RecordingTracker
    suite: Any = field(repr=False)

    def params(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters()}

    def changed(self) -> bool:
        return any(not torch.equal(self.initial[n], p.detach()) for n, p in self.model.named_parameters())


def make_suite(overrides: dict[str, Any] | None = None, method: dict[str, Any] | None = None):
    from harness.suite import suite_from_data

    data = copy.deepcopy(SMALL_SUITE)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    if method is not None:
        data["methods"] = [method]
    return suite_from_data(data, "tests/methods/_tiny.py")


_DATA: dict[tuple[str, tuple[str, ...]], Any] = {}


def _data(cfg: Any, languages: tuple[str, ...]) -> Any:
    """The language data of ``cfg`` (loaded once per settings; keyed by its repr: a config may hold a dict)."""
    from harness.data.sft import load_language_data

    key = (repr(cfg), tuple(languages))
    if key not in _DATA:
        _DATA[key] = load_language_data(cfg, languages)
    return _DATA[key]


def train(name: str, options: dict[str, Any] | None = None, *, tmp_path: Path, overrides: dict[str, Any] | None = None,
          seed: int = 0, model_name: str | None = None) -> Trained:
    """Train method `name` with `options` on the small suite (plus `overrides`); returns model, metrics, tracker."""
    from harness.config import MethodSpec
    from harness.method import RunContext
    from harness.models.loading import load_model
    from harness.registry import get_method, parse_options
    from harness.seeding import seed_everything

    spec = {"name": name, "options": dict(options or {})}
    suite = make_suite(overrides, spec)
    model_name = model_name or suite.models[0]
    seed_everything(seed)
    model, tokenizer = load_model(model_name, suite.scale, suite.train.weights_dtype, suite.train.lora)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    tracker = RecordingTracker()
    run = RunContext(suite=suite, method=MethodSpec(**spec), model_name=model_name, seed=seed, model=model,
                     tokenizer=tokenizer, data=_data(suite.data, suite.languages.all), tracker=tracker,
                     run_dir=Path(tmp_path) / f"{name}-{seed}")
    method = get_method(name)
    outcome = method.train(run, parse_options(name, spec["options"]))
    return Trained(outcome.model, initial, outcome.metrics, tracker, suite)


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def gradient_methods() -> list[str]:
    from harness.registry import available_methods

    return [name for name, m in available_methods().items() if getattr(m, "kind", "") == "gradient"]
