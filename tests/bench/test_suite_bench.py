"""Benchmark (``nox -s bench``; deselected by default): every quickstart method's mean step time and peak memory
against joint SFT, measured by runs of ``suites/quickstart.yaml`` on the tiny llama twin (`harness.train.suite_bench`)
at K = 4, 8 and 16 seen languages, 3 interleaved repeats. Records ``results/bench/quickstart_step_times.json`` and a
table in ``results/bench/quickstart_step_times.md``. The issue's bar (issue 13): full MGDA and Bucket-Level MOO (MGDA)
at most 1.3× joint SFT at K = 8."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.bench.test_moo_bench import OUT
from tests.conftest import REPO

pytestmark = pytest.mark.bench

KS = ("4", "8", "16")
REPEATS = 3


def table(record: dict) -> str:
    lines = ["| K | method | mean step time (s) | × joint SFT (median) | × joint SFT (range) | peak memory (MB) "
             "| × joint SFT |", "|---|---|---|---|---|---|---|"]
    for k, result in record["results"].items():
        for method, r in result["methods"].items():
            low, high = r["time_vs_joint_range"]
            lines.append(f"| {k.removeprefix('K=')} | {method} | {r['mean_step_time_s']:.3f} | {r['time_vs_joint']:.2f} "
                         f"| {low:.2f}–{high:.2f} | {r['peak_mem_mb']:.0f} | {r['peak_mem_vs_joint']:.2f} |")
    return "\n".join(lines)


def markdown(record: dict) -> str:
    env = record["environment"]
    return ("# Quickstart methods against joint SFT, by runs of the suite (`nox -s bench`)\n\n"
            f"`python -m harness.train.suite_bench --k {' '.join(KS)} --repeats {REPEATS}`: each method of "
            f"`{record['suite']}` on {record['model']} (tiny twin), the first K languages of "
            "`harness.train.suite_bench.LANGUAGES` seen, the suite's 4 examples per language per step and 30 steps, "
            "evaluation off; a run's mean step time excludes its first step. × joint SFT: the ratio within each "
            "repeat (the methods of a repeat run one after another), median and range over repeats. Peak memory: "
            "the process's resident peak (weights, data, MLflow included), median.\n"
            f"Recorded {env['recorded_at']}, {env['cpu_count']} cores, torch threads {env['torch_threads']}, load "
            f"average {env['load_average_1_5_15_at_start'][0]:.2f} at the start and "
            f"{env['load_average_1_5_15_at_end'][0]:.2f} at the end; torch {env['versions'].get('torch')}.\n\n"
            + table(record) + "\n")


def test_quickstart_methods_against_joint_sft():
    out = OUT / "quickstart_step_times.json"
    subprocess.run([sys.executable, "-m", "harness.train.suite_bench", "--k", *KS, "--repeats", str(REPEATS),
                    "--out", str(out)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True,
                   timeout=7200)
    record = json.loads(out.read_text())
    assert set(record["results"]) == {f"K={k}" for k in KS}
    (OUT / "quickstart_step_times.md").write_text(markdown(record))
