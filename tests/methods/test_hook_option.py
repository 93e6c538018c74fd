"""A method's `hook` option reaches the distributed path (so one suite can compare hooks side by side)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import MethodSpec
from harness.executor import gradient_plan, resolve_hook
from harness.method import RunContext
from harness.models.loading import load_model
from harness.registry import get_method, parse_options
from tests.methods._tiny import RecordingTracker, _data, make_suite


@pytest.mark.parametrize(("name", "options", "expected"), [
    ("bkmoo", {"hook": "allgather"}, "allgather"),
    ("bkmoo", {}, "sharded"),
    ("mgda", {"hook": "full_gather"}, "full_gather"),
    ("pcgrad", {}, "full"),
    ("cagrad", {"hook": "full"}, "full"),
])
def test_method_hook_option_selects_the_hook(name, options, expected, tmp_path):
    spec = {"name": name, "options": options}
    suite = make_suite(None, spec)
    model, tokenizer = load_model("llama", "tiny")
    run = RunContext(suite=suite, method=MethodSpec(**spec), model_name="llama", seed=0, model=model,
                     tokenizer=tokenizer, data=_data(suite.data, suite.languages.all), tracker=RecordingTracker(),
                     run_dir=Path(tmp_path))
    combiner = get_method(name).build(parse_options(name, options), run)
    assert resolve_hook(gradient_plan(combiner), "sharded") == expected
