"""Benchmarks (``nox -s bench``; deselected by default): weighting latency for K = 2, 4, 8, 16 and the per-step
overhead of each gradient method relative to joint SFT on the tiny llama twin. Summaries are written to
``results/bench/moo_weightings.json`` and ``results/bench/moo_step_overhead.json`` (machine, threads, versions).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import pytest
import torch

from harness.moo import available_weightings, weighting
from harness.moo.combiners import small_ops
from harness.perf import cpu_model
from tests.conftest import DATA_SLICE

pytestmark = pytest.mark.bench
OUT = Path(__file__).resolve().parents[2] / "results" / "bench"
KS = (2, 4, 8, 16)
SLOW_S = 0.5  # a weighting slower than this per call is timed over one round only
_WEIGHTINGS: dict[str, dict] = {}
_STEPS: dict[str, dict] = {}
STEP_CASES = {
    "joint_sft": ("joint_sft", {}),
    "pcgrad": ("pcgrad", {"diagnostics": {"bucket_cap_mb": 0.25}}),
    "mgda": ("mgda", {"diagnostics": {"bucket_cap_mb": 0.25}}),
    "cagrad": ("cagrad", {"diagnostics": {"bucket_cap_mb": 0.25}}),
    "bkmoo_mgda": ("bkmoo", {"solver": "mgda", "bucket_cap_mb": 0.25}),
    "bkmoo_pcgrad": ("bkmoo", {"solver": "pcgrad", "bucket_cap_mb": 0.25}),
    "bkmoo_cagrad": ("bkmoo", {"solver": "cagrad", "bucket_cap_mb": 0.25}),
    "bkmoo_mgda_nodiag": ("bkmoo", {"solver": "mgda", "bucket_cap_mb": 0.25, "diagnostics": {"enabled": False}}),
}
STEP_LANGUAGES = ["en", "fr", "de", "es", "it", "pt", "nl", "tr", "ru", "id", "sv", "hi", "ja", "zh", "ko", "th"]
STEP_KS = (4, 8, 16)


def step_suite(k: int) -> dict:
    """The first k languages of the frozen slice, 4 examples each per step (tokens per step grow with k)."""
    return {"languages": {"seen": STEP_LANGUAGES[:k], "unseen": []},
            "data": {"source": "json", "path": str(DATA_SLICE), "max_examples_per_language": 60},
            "train": {"steps": 7, "batch_size_per_language": 4, "lr": 1.0e-3, "max_seq_len": 64,
                      "schedule": "constant", "save_model": False}}


def _env() -> dict:
    from harness.tracking import package_versions

    return {"machine": platform.machine(), "processor": cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_avg_1m": os.getloadavg()[0],
            "versions": package_versions(), "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _write(name: str, rows: dict, note: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_text(json.dumps({"note": note, "env": _env(), "results": rows}, indent=2) + "\n")


@pytest.fixture(scope="module", autouse=True)
def _summaries():
    yield
    if _WEIGHTINGS:
        _write("moo_weightings.json", _WEIGHTINGS, "median seconds per call of weighting(name)(G), G = JJᵀ of a random "
               "K×64 float64 J, default threads and under small_ops() (one intra-op thread, what the combiners use)")
    if _STEPS:
        for rows in _STEPS.values():
            base = rows.get("joint_sft", {})
            for row in rows.values():
                row["time_vs_joint_sft"] = row["mean_step_time_s"] / base["mean_step_time_s"] if base else None
                row["peak_mem_vs_joint_sft"] = row["peak_mem_mb"] / base["peak_mem_mb"] if base else None
        _write("moo_step_overhead.json", _STEPS, "tiny llama twin, K languages × 4 examples, seq ≤ 64, 7 steps "
               "(first excluded), diagnostics every step unless disabled; mean step time s and peak RSS MB (sampled "
               "after each step; results/bench/grad_engine.md has exact per-step peaks) with ratios to joint SFT")


def _gram(k: int) -> torch.Tensor:
    j = torch.randn(k, 64, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    return j @ j.T


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("name", available_weightings())
@pytest.mark.parametrize("threads", ["default", "one"])
def test_weighting_latency(benchmark, name, k, threads):
    fn = weighting(name)
    g = _gram(k)
    gen = torch.Generator().manual_seed(0)

    def call():
        if threads == "one":
            with small_ops():
                return fn(g, generator=gen)
        return fn(g, generator=gen)

    started = time.perf_counter()
    c = call()
    first = time.perf_counter() - started
    assert torch.isfinite(c).all()
    if first > SLOW_S:
        benchmark.pedantic(call, rounds=1, iterations=1)
    else:
        benchmark(call)
    _WEIGHTINGS.setdefault(name, {}).setdefault(f"K={k}", {})[threads] = benchmark.stats.stats.median


@pytest.mark.parametrize("k", STEP_KS)
@pytest.mark.parametrize("case", STEP_CASES)
def test_step_overhead(benchmark, case, k):
    from tests.methods._tiny import train

    name, options = STEP_CASES[case]
    holder = {}

    def run():
        with tempfile.TemporaryDirectory() as tmp:
            holder["out"] = train(name, options, tmp_path=Path(tmp), overrides=step_suite(k))

    benchmark.pedantic(run, rounds=1, iterations=1)
    metrics = holder["out"].metrics
    _STEPS.setdefault(f"K={k}", {})[case] = {"method": name, "options": options, "mean_step_time_s": metrics["perf/mean_step_time_s"],
                    "peak_mem_mb": metrics.get("perf/peak_mem_mb")}
