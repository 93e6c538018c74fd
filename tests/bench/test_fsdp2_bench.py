"""The FSDP2 engine measured on CPU with gloo, N = 2 and 4 (K = 2 languages): bytes per step of per-unit
(Bucket-Level) MOO and global MOO against FSDP2 joint SFT's reduce-scatter (target ≤ 1.05×), step time against joint
SFT on the same engine, peak memory.

Writes results/bench/fsdp2_n<N>.json and results/bench/fsdp2_summary.{json,md}. Run with
`pytest -m bench tests/bench/test_fsdp2_bench.py` (or `nox -s bench`); a few minutes on 2 cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.distributed.fsdp2_bench import MODES, run_fsdp2_bench

pytestmark = pytest.mark.bench

OUT = Path(__file__).resolve().parents[2] / "results" / "bench"
LABELS = {"mean": "joint SFT (reduce-scatter)", "sharded": "Bucket-Level MOO (per unit)", "full": "global MOO"}


@pytest.mark.parametrize("world", [2, 4])
def test_fsdp2_bench(world):
    OUT.mkdir(parents=True, exist_ok=True)
    record = run_fsdp2_bench(world, OUT / f"fsdp2_n{world}.json")
    modes = record["modes"]
    assert modes["mean"]["bytes_ratio_reduce_scatter"] == pytest.approx(1.0, rel=1e-12)
    for mode in ("sharded", "full"):
        assert modes[mode]["bytes_ratio_joint_reduce_scatter"] <= 1.05, mode
        assert modes[mode]["param_bytes_per_step"] == modes["mean"]["param_bytes_per_step"]
    _write_summary()


def _write_summary() -> None:
    rows = []
    for path in sorted(OUT.glob("fsdp2_n*.json")):
        r = json.loads(path.read_text())
        for mode in MODES:
            m = r["modes"][mode]
            rows.append({"world_size": r["world_size"], "mode": mode, "device": r["device"], "params": m["params"],
                         "load": r.get("load_average_1_5_15"),
                         "units": m["units"], **{k: m[k] for k in (
                             "bytes_per_step", "bytes_ratio_joint_reduce_scatter", "param_bytes_per_step",
                             "step_time_s", "step_time_ratio_joint", "comm_time_s", "peak_mem_delta_mb",
                             "peak_tensor_mb")}})
    (OUT / "fsdp2_summary.json").write_text(json.dumps(rows, indent=2))
    lines = ["# FSDP2 engine: bytes, step time and memory per rank and step — CPU, gloo (measured)", "",
             f"Model: Llama architecture, {rows[0]['params'] / 1e6:.1f} M parameters, {rows[0]['units']} FSDP2 units "
             "(each decoder block, then the root); K = 2 languages; float32; mean over steps 2-4 (step 1 untimed); "
             "step time of the slowest rank. `× RS`: gradient bytes over FSDP2 joint SFT's reduce-scatter. "
             "`peak Δ MB`: peak RSS (VmHWM) minus the RSS before the model (max over ranks); `peak tensors MB`: "
             "torch's FSDPMemTracker over one step. Regenerate: `pytest -m bench tests/bench/test_fsdp2_bench.py`.",
             "", "| N | method | grad bytes/step (MB) | × RS | param gathers (MB) | step time (s) | × joint SFT | "
             "comm time (s) | peak Δ MB | peak tensors MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['world_size']} | {LABELS[r['mode']]} | {r['bytes_per_step'] / 1e6:.3f} | "
                     f"{r['bytes_ratio_joint_reduce_scatter']:.6f} | {r['param_bytes_per_step'] / 1e6:.1f} | "
                     f"{r['step_time_s']:.3f} | {r['step_time_ratio_joint']:.2f} | {r['comm_time_s']:.3f} | "
                     f"{r['peak_mem_delta_mb']:.0f} | {r['peak_tensor_mb']:.0f} |")
    loads = sorted({f"N={r['world_size']}: {r['load']}" for r in rows if r["load"]})
    lines += ["", f"Device: {rows[0]['device'] if rows else '?'}; load average (1, 5, 15 min) at the end of each "
              f"record: {'; '.join(loads) or 'not recorded'} (other jobs shared the cores: step-time ratios are "
              "indicative, bytes are exact)"]
    (OUT / "fsdp2_summary.md").write_text("\n".join(lines) + "\n")
