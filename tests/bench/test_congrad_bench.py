"""CONGRAD benchmark (`nox -s bench` / `pytest -m bench tests/bench/test_congrad_bench.py`): compression memory and
time on the tiny llama twin's full parameter vector, inner-product distortion against the JL bound, and JVP vs
explicit scoring time. Writes results/bench/congrad_compression.json (committed)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import pytest
import torch

from harness.preference.compression import ParamLayout, jl_epsilon, make_compressor

pytestmark = pytest.mark.bench

OUT = Path(__file__).resolve().parents[2] / "results" / "bench" / "congrad_compression.json"
N_SAMPLES = 16
RANK = 256


def _distortion(x: torch.Tensor, y: torch.Tensor) -> float:
    gx, gy = x.double() @ x.double().T, y.double() @ y.double().T
    norms = gx.diagonal().sqrt()
    return float(((gy - gx).abs() / (norms[:, None] * norms[None, :])).max())


@pytest.fixture(scope="module")
def record():
    data: dict = {"machine": platform.machine(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "n_samples": N_SAMPLES, "rank": RANK,
                  "generator": "counter-based int64 hash of (seed, row, column), generated on the gradients' device "
                               "one block of `chunk` columns per vectorised pass", "compressions": {}}
    yield data
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def llama_grads():
    from harness.models.loading import load_model
    from harness.preference.filters import per_sample_gradients
    from harness.preference.pairs import Pair

    model, tok = load_model("llama", "tiny")
    model.eval()
    prompts = ["Hello, how are you?", "What is AI?", "Bonjour", "Qui es-tu ?", "Hallo", "Wie geht es dir?",
               "Tell me a joke", "Quelle heure est-il ?"]
    pairs = [Pair("en", p, f"answer {i} to {p}", "no" * (i + 1), 2.0, 1.0) for i, p in enumerate(prompts * 2)]
    grads = per_sample_gradients(model, tok, pairs[:N_SAMPLES], 0.1, 0.01, 64)
    return model, tok, pairs[:N_SAMPLES], grads


@pytest.mark.parametrize("name", ["sparse", "gaussian", "lowrank"])
def test_bench_compression(benchmark, record, llama_grads, name):
    model, _, _, grads = llama_grads
    layout = ParamLayout.of(model)
    rank = 16 if name == "lowrank" else RANK
    comp = make_compressor(name, layout, rank, seed=0)
    out = benchmark.pedantic(comp.compress, args=(grads,), rounds=2, iterations=1)
    mem = comp.memory(N_SAMPLES, 3)
    effective = min(comp.dim, 16 * 16) if name == "lowrank" else rank
    record["compressions"][name] = {
        "rank": rank, "compressed_dim": comp.dim, "params": layout.numel,
        "full_per_sample_bytes": mem["full_bytes"], "compressed_bytes": mem["compressed_bytes"],
        "saving_ratio": mem["saving_ratio"], "per_sample_saving_ratio": layout.numel / comp.dim,
        "compress_seconds_mean": benchmark.stats.stats.mean, "device": str(grads.device),
        "chunk": getattr(comp, "chunk", None),
        "seconds_per_65536_params": benchmark.stats.stats.mean * 65536 / layout.numel,
        "max_pairwise_dot_distortion": _distortion(grads, out),
        "jl_bound": jl_epsilon(effective, N_SAMPLES),
    }
    assert mem["compressed_bytes"] < mem["full_bytes"]


def test_bench_jvp_vs_explicit_scoring(benchmark, record, llama_grads):
    from harness.preference.filters import jvp_scores, per_sample_gradients

    model, tok, pairs, grads = llama_grads
    d = grads.mean(0)
    t0 = time.perf_counter()
    explicit = per_sample_gradients(model, tok, pairs, 0.1, 0.01, 64) @ d
    explicit_s = time.perf_counter() - t0
    fast = benchmark.pedantic(jvp_scores, args=(model, tok, pairs, d, 0.1, 0.01, 64), kwargs={"batch_size": 8},
                              rounds=1, iterations=1)
    ra, rb = explicit.argsort().argsort().double(), fast.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    record["scoring"] = {"explicit_seconds": explicit_s, "jvp_seconds": benchmark.stats.stats.mean,
                         "spearman": float(ra @ rb / (ra.norm() * rb.norm())), "pairs": len(pairs)}
