"""MGDA solver latency against TorchJD (``nox -s bench -- tests/bench/test_mgda_solver_bench.py``; deselected by
default): ``weighting("mgda")`` against ``torchjd.aggregation.MGDAWeighting()`` with its defaults (Frank-Wolfe,
epsilon 1e-3, 100 iterations) on the same float64 Gram, K = 2 … 64, two Gram families, with torch's default intra-op
threads and under ``small_ops()`` (one thread: what the training combiners use around the solve). The two are timed in
alternating rounds in one process, so both see the same machine load, and the ratio is taken per round. Both answers'
KKT residuals (relative to max diag G) are recorded next to the times. Writes ``results/bench/mgda_solver_latency.json``
and ``.md`` (committed).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
import torch

from harness.moo import _qp, gram, weighting
from harness.moo.combiners import small_ops
from harness.perf import cpu_model

pytestmark = pytest.mark.bench
OUT = Path(__file__).resolve().parents[2] / "results" / "bench"
KS = (2, 4, 8, 16, 32, 64)
FAMILIES = ("random", "shared")
ROUNDS = 15
ROUND_S = 0.01  # target seconds per solver per round (the call count per round is fixed from a first timing)
_ROWS: dict[str, dict] = {}


def _gram(family: str, k: int) -> torch.Tensor:
    """``random``: J ~ N(0, 1), K×64 (as ``moo_weightings.json``). ``shared``: a common component plus language parts
    of unequal norms, K×256 — correlated gradients with a partial support, the multilingual case."""
    gen = torch.Generator().manual_seed(k)
    if family == "random":
        return gram(torch.randn(k, 64, generator=gen, dtype=torch.float64))
    shared = torch.randn(1, 256, generator=gen, dtype=torch.float64)
    own = torch.randn(k, 256, generator=gen, dtype=torch.float64) * 2 * torch.rand(k, 1, generator=gen, dtype=torch.float64)
    return gram(0.8 * shared + own)


def _kkt(g: torch.Tensor, c: torch.Tensor) -> float:
    gc = g @ c
    obj = c @ gc
    support = c > 0
    worst = max(float((obj - gc).clamp_min(0).max()), float((gc[support] - obj).abs().max()))
    return worst / float(torch.diagonal(g).max())


def _per_call(fn, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n


def _env() -> dict:
    from harness.tracking import package_versions

    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not-installed"

    return {"machine": platform.machine(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_avg_1m": os.getloadavg()[0],
            "versions": {**package_versions(), "torchjd": pkg("torchjd"), "numpy": pkg("numpy")},
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _markdown(record: dict) -> str:
    env = record["env"]
    lines = [
        "# MGDA solver latency against TorchJD (measured)",
        "",
        f"{record['note']} Regenerate: `nox -s bench -- tests/bench/test_mgda_solver_bench.py`.",
        "",
        "| threads | Gram | K | ours (ms) | TorchJD (ms) | ours / TorchJD | our path | KKT ours | KKT TorchJD |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in record["results"].values():
        lines.append(f"| {row['threads']} | {row['family']} | {row['k']} | {row['ours_s'] * 1e3:.3f} | "
                     f"{row['torchjd_s'] * 1e3:.3f} | "
                     f"{row['ratio']:.3f} | {row['path']} | {row['kkt_ours']:.1e} | {row['kkt_torchjd']:.1e} |")
    lines += ["", f"Machine: {env['cpu']} ({env['machine']}), {env['cpu_count']} CPUs, torch threads "
              f"{env['torch_threads']}, load average {env['load_avg_1m']:.2f} at the start; torch "
              f"{env['versions']['torch']}, numpy {env['versions']['numpy']}, torchjd {env['versions']['torchjd']}; "
              f"{env['recorded_at']}.", ""]
    return "\n".join(lines)


@pytest.fixture(scope="module", autouse=True)
def _summary():
    env = _env()
    yield
    if _ROWS:
        note = (f"Median over {ROUNDS} alternating rounds of the seconds per call of weighting('mgda')(G) (ours) and "
                "torchjd MGDAWeighting()(G) (defaults: epsilon 1e-3, max_iters 100), same float64 G, same process; "
                "`ratio` is the median of the per-round ratios. KKT: max violation of (Gc)_i ≥ cᵀGc (equality on the "
                "support) over max diag G.")
        record = {"note": note, "env": env, "results": _ROWS}
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "mgda_solver_latency.json").write_text(json.dumps(record, indent=2) + "\n")
        (OUT / "mgda_solver_latency.md").write_text(_markdown(record))


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("threads", ["default", "one"])
def test_mgda_latency_against_torchjd(threads, family, k):
    agg = pytest.importorskip("torchjd.aggregation")
    with small_ops(threads == "one"):
        _measure(agg, threads, family, k)


def _measure(agg, threads: str, family: str, k: int) -> None:
    g = _gram(family, k)
    ours_fn, theirs_fn = weighting("mgda"), agg.MGDAWeighting()
    ours, theirs = ours_fn(g), theirs_fn(g)  # warm-up, and the answers whose KKT residual is recorded
    n_ours = max(1, int(ROUND_S / max(_per_call(lambda: ours_fn(g), 3), 1e-7)))
    n_theirs = max(1, int(ROUND_S / max(_per_call(lambda: theirs_fn(g), 3), 1e-7)))
    t_ours, t_theirs = [], []
    for _ in range(ROUNDS):
        t_ours.append(_per_call(lambda: ours_fn(g), n_ours))
        t_theirs.append(_per_call(lambda: theirs_fn(g), n_theirs))
    path = "closed form" if k == 2 else "enumeration" if _qp.uses_enumeration(k, g.device) else "active set"
    _ROWS[f"{threads}/{family}/K={k}"] = {
        "threads": threads, "family": family, "k": k, "path": path,
        "ours_s": statistics.median(t_ours), "torchjd_s": statistics.median(t_theirs),
        "ratio": statistics.median(a / b for a, b in zip(t_ours, t_theirs, strict=True)),
        "kkt_ours": _kkt(g, ours), "kkt_torchjd": _kkt(g, theirs.to(torch.float64)),
        "objective_ours_over_torchjd": float(ours @ g @ ours) / float(theirs @ g @ theirs),
    }
    assert torch.isfinite(ours).all()
