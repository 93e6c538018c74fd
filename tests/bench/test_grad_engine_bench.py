"""Benchmark (``nox -s bench``; deselected by default): one gradient step by route on the tiny llama twin at K = 4, 8
and 16 languages, time and peak memory against joint SFT measured in the same process (`harness.train.bench`).
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


def _table(results: dict) -> str:
    lines = ["| K | route | step time (s) | × joint | peak memory above start (MB) | × joint |", "|---|---|---|---|---|---|"]
    for k, rows in results.items():
        for route, r in rows.items():
            lines.append(f"| {k.removeprefix('K=')} | {route} | {r['step_time_s']:.3f} | {r.get('time_vs_joint', 1):.2f} "
                         f"| {r['peak_mem_above_start_mb']:.1f} | {r.get('mem_vs_joint', 1):.2f} |")
    return "\n".join(lines)


def test_grad_engine_routes():
    out = OUT / "grad_engine.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "harness.train.bench", "--k", "4", "8", "16", "--out", str(out)],
                   cwd=REPO, env=env, check=True, timeout=1800)
    record = json.loads(out.read_text())
    record["env"] = _env() | {"torch_threads": 1}
    out.write_text(json.dumps(record, indent=2) + "\n")
    assert set(record["results"]) == {"K=4", "K=8", "K=16"}
    (OUT / "grad_engine.md").write_text(
        "# One gradient step by route, tiny llama twin, 4 rows × 64 tokens per language (`nox -s bench`)\n\n"
        "Median of 5 steps after a warm-up; memory: peak resident set above the level before the step (VmHWM).\n"
        f"Recorded {record['env']['recorded_at']}, load average {record['env']['load_avg_1m']:.2f}, one thread.\n\n"
        + _table(record["results"]) + "\n")
