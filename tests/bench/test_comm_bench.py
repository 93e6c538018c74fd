"""Communication and memory of the DDP hooks, measured on CPU with gloo for N = 2 and 4 ranks (K = 2 languages).

Writes results/bench/comm_<hook>_n<N>.json (one record per run) and results/bench/comm_summary.{json,md}. Run with
`pytest -m bench tests/bench/test_comm_bench.py` (or `nox -s bench`); ~5 minutes on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.distributed.accounting import allreduce_bytes
from harness.distributed.bench import run_bench

pytestmark = pytest.mark.bench

OUT = Path(__file__).resolve().parents[2] / "results" / "bench"
HOOKS = ("mean", "sharded", "allgather", "full", "full_gather")


@pytest.mark.parametrize("world", [2, 4])
def test_comm_bench(world):
    OUT.mkdir(parents=True, exist_ok=True)
    records = {h: run_bench(h, world, OUT / f"comm_{h}_n{world}.json") for h in HOOKS}
    grad = records["mean"]["model"]["grad_bytes"]
    allreduce = allreduce_bytes(grad, world)
    k = min(world, records["mean"]["languages"])
    n_buckets = records["sharded"]["buckets"]
    gram = allreduce_bytes(8 * k * k, world)
    assert records["mean"]["bytes_per_step"] == pytest.approx(allreduce, rel=1e-9)
    # sharded: the all-reduce volume plus the K×K terms, within 5 %
    assert abs(records["sharded"]["bytes_per_step"] - (allreduce + n_buckets * gram)) <= 0.05 * allreduce
    assert abs(records["full"]["bytes_per_step"] - (allreduce + gram)) <= 0.05 * allreduce
    # all-gather and the naive full gather: N/2 times the all-reduce
    for h in ("allgather", "full_gather"):
        assert records[h]["bytes_ratio_allreduce"] == pytest.approx(world / 2, rel=0.01)
    # memory: the naive full-gradient gather keeps K full gradients; the sharded hook only bucket-sized buffers
    assert records["sharded"]["peak_mem_delta_mb"] < records["full_gather"]["peak_mem_delta_mb"]
    _write_summary()


def _write_summary() -> None:
    rows = []
    for path in sorted(OUT.glob("comm_*_n*.json")):
        r = json.loads(path.read_text())
        rows.append({k: r[k] for k in ("hook", "world_size", "languages", "buckets", "bytes_per_step",
                                       "bytes_ratio_allreduce", "hook_time_s", "step_time_s", "peak_mem_mb",
                                       "peak_mem_delta_mb", "device")})
    rows.sort(key=lambda r: (r["world_size"], HOOKS.index(r["hook"])))
    (OUT / "comm_summary.json").write_text(json.dumps(rows, indent=2))
    lines = ["# Communication and memory per rank and step — CPU, gloo (measured)", "",
             "Model: Llama architecture, 26.1 M parameters (104 MB float32 gradients), DDP buckets at 25 MB; K = 2 "
             "languages; steady-state steps after one warm-up step. `peak Δ MB`: peak RSS (VmHWM) minus the RSS "
             "before the model existed (max over ranks). Regenerate: `pytest -m bench tests/bench/test_comm_bench.py`.",
             "", "| N | hook | buckets | bytes/step (MB) | × all-reduce | hook time (s) | step time (s) | peak Δ MB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['world_size']} | {r['hook']} | {r['buckets']} | {r['bytes_per_step'] / 1e6:.3f} | "
                     f"{r['bytes_ratio_allreduce']:.4f} | {r['hook_time_s']:.3f} | {r['step_time_s']:.2f} | "
                     f"{r['peak_mem_delta_mb']:.0f} |")
    lines += ["", f"Device: {rows[0]['device'] if rows else '?'}"]
    (OUT / "comm_summary.md").write_text("\n".join(lines) + "\n")
