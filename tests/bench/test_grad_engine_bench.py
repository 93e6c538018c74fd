"""Benchmark (``nox -s bench``; deselected by default): one gradient step by route on the tiny llama twin at K = 4, 8
and 16 languages, at 1 and 2 torch threads, time and peak memory against joint SFT measured in the same process
(`harness.train.bench`), every route once per repeat in turn (3 repeats), so ratios compare neighbours in time.
Records: ``results/bench/grad_engine.json`` and a table in ``results/bench/grad_engine.md``, with the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.bench.test_moo_bench import OUT, _env
from tests.conftest import REPO

pytestmark = pytest.mark.bench


THREADS = (1, 2)
REPEATS = 3


def _table(results: dict) -> str:
    lines = ["| threads | K | route | step time (s) | × joint (median) | × joint (range) | peak memory above start (MB) "
             "| × joint |", "|---|---|---|---|---|---|---|---|"]
    for threads, by_k in results.items():
        for k, rows in by_k.items():
            for route, r in rows.items():
                low, high = r.get("time_vs_joint_range", [1, 1])
                lines.append(f"| {threads.removeprefix('threads=')} | {k.removeprefix('K=')} | {route} "
                             f"| {r['step_time_s']:.3f} | {r.get('time_vs_joint', 1):.2f} | {low:.2f}–{high:.2f} "
                             f"| {r['peak_mem_above_start_mb']:.1f} | {r.get('mem_vs_joint', 1):.2f} |")
    return "\n".join(lines)


def test_grad_engine_routes():
    out = OUT / "grad_engine.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MALLOC_MMAP_THRESHOLD_": "65536",
           "OMP_NUM_THREADS": str(max(THREADS))}
    load_before = os.getloadavg()[0]
    subprocess.run([sys.executable, "-m", "harness.train.bench", "--k", "4", "8", "16", "--threads",
                    *map(str, THREADS), "--repeats", str(REPEATS), "--out", str(out)],
                   cwd=REPO, env=env, check=True, timeout=5400)
    record = json.loads(out.read_text())
    record["env"] = _env() | {"torch_threads": list(THREADS), "load_avg_1m_before": load_before}
    out.write_text(json.dumps(record, indent=2) + "\n")
    assert set(record["results"]) == {f"threads={t}" for t in THREADS}
    assert all(set(by_k) == {"K=4", "K=8", "K=16"} for by_k in record["results"].values())
    (OUT / "grad_engine.md").write_text(_markdown(record))


def _markdown(record: dict) -> str:
    env = record["env"]
    return ("# One gradient step by route, tiny llama twin, 4 rows × 64 tokens per language (`nox -s bench`)\n\n"
            f"Median of 5 steps after a warm-up, {REPEATS} repeats interleaved (every route and thread count in turn "
            "within a repeat); × joint: the ratio to joint SFT within each repeat, median and range over repeats. "
            "Memory: peak resident set above the level before the step (VmHWM), max over repeats.\n"
            f"Recorded {env['recorded_at']} on {env['cpu_count']} cores shared with other jobs (load average "
            f"{env['load_avg_1m_before']:.2f} before, {env['load_avg_1m']:.2f} after): the interleaving keeps each "
            "ratio's pair of measurements close in time, the ranges show what the sharing left.\n\n"
            + _table(record["results"]) + "\n")
