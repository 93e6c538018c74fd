"""The suite benchmark's pure pieces: the run command it launches and the ratios it records."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.train.suite_bench import LANGUAGES, methods_of, run, run_arguments, summarise
from tests.conftest import REPO


def test_run_arguments_turn_evaluation_off_and_set_the_languages():
    args = run_arguments("suites/quickstart.yaml", "llama", "mgda", ["en", "fr"], Path("/tmp/x"), ["--set", "a=1"])
    assert args[1:5] == ["-m", "harness", "run", "suites/quickstart.yaml"]
    joined = " ".join(args)
    for part in ("--method mgda", "--model llama", "languages.seen=[en,fr]", "languages.unseen=[]",
                 "eval.tasks=[]", "eval.heldout_loss=false", "output_dir=/tmp/x", "--no-leaderboard", "--set a=1"):
        assert part in joined


def test_summarise_pairs_ratios_within_a_repeat():
    repeats = [{"joint_sft": {"mean_step_time_s": 0.10, "peak_mem_mb": 500.0},
                "mgda": {"mean_step_time_s": 0.12, "peak_mem_mb": 600.0}},
               {"joint_sft": {"mean_step_time_s": 0.20, "peak_mem_mb": 500.0},
                "mgda": {"mean_step_time_s": 0.26, "peak_mem_mb": 550.0}},
               {"joint_sft": {"mean_step_time_s": 0.10, "peak_mem_mb": 500.0},
                "mgda": {"mean_step_time_s": 0.11, "peak_mem_mb": 500.0}}]
    out = summarise(repeats)
    assert out["joint_sft"]["time_vs_joint"] == 1.0
    assert out["mgda"]["time_vs_joint_each"] == pytest.approx([1.2, 1.3, 1.1])
    assert out["mgda"]["time_vs_joint"] == pytest.approx(1.2)  # median of the paired ratios, not of the times
    assert out["mgda"]["time_vs_joint_range"] == pytest.approx([1.1, 1.3])
    assert out["mgda"]["mean_step_time_s"] == pytest.approx(0.12)
    assert out["mgda"]["peak_mem_vs_joint"] == pytest.approx(1.1)


def test_the_quickstart_methods_and_languages():
    methods = methods_of(str(REPO / "suites" / "quickstart.yaml"))
    assert methods[0] == "joint_sft" and {"mgda", "bkmoo_mgda"} <= set(methods)
    assert LANGUAGES[:6] == ("en", "fr", "de", "es", "it", "pt") and len(set(LANGUAGES)) == 16


def test_bad_requests_are_refused_before_any_run():
    with pytest.raises(ValueError, match="joint_sft"):
        run("suites/quickstart.yaml", "llama", [8], 1, ["mgda"], [])
    with pytest.raises(ValueError, match="K must be"):
        run("suites/quickstart.yaml", "llama", [17], 1, ["joint_sft", "mgda"], [])


def test_each_repeat_rotates_the_order_of_the_methods():
    from harness.train.suite_bench import run_order

    methods = ["joint_sft", "mgda", "bkmoo_mgda"]
    orders = [run_order(methods, r) for r in range(4)]
    assert orders[0] == methods and orders[3] == methods
    assert orders[1] == ["mgda", "bkmoo_mgda", "joint_sft"] and orders[2] == ["bkmoo_mgda", "joint_sft", "mgda"]
    assert all(sorted(o) == sorted(methods) for o in orders)
