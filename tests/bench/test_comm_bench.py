"""Communication, step time and memory of the DDP hooks, measured on CPU with gloo for N = 2 and 4 ranks (K = 2).

Writes results/bench/comm_<hook>[_bf16]_n<N>.json (one record per hook, the first of its repeats, with every repeat's
step time) and results/bench/comm_summary.{json,md} with the environment. Step time is a ratio against the mean hook
(joint SFT) in the same run: `mean` and `sharded` (the issue's target, sharded ≤ 1.10× mean at N = 2) run REPEATS
times, interleaved, and the ratio is the median over the pairs (each pair run back to back), with its range; the other
hooks run once against the median mean. Pure-bf16 runs of both show the bytes in the gradient dtype. The machine may be
shared: the load average is recorded. Run with `pytest -m bench tests/bench/test_comm_bench.py` (or `nox -s bench`);
about 25 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

import pytest

from harness.distributed.accounting import allreduce_bytes
from harness.distributed.bench import run_bench
from tests.bench.test_moo_bench import _env

pytestmark = pytest.mark.bench

OUT = Path(__file__).resolve().parents[2] / "results" / "bench"
HOOKS = ("mean", "sharded", "allgather", "full", "full_gather")
TIMED = ("mean", "sharded")  # repeated and interleaved: the target ratio
ONCE = (("allgather", "float32"), ("full", "float32"), ("full_gather", "float32"), ("mean", "bfloat16"),
        ("sharded", "bfloat16"))
REPEATS = 3
TARGET_N2 = 1.10  # issue 12: sharded step time at most 1.10× the mean hook's at N = 2
BEFORE = {2: 1.16, 4: 1.57}  # sharded × mean with the synchronous hooks (one run each; comm_summary.md at b0bacf7)


def _name(hook: str, dtype: str, world: int) -> str:
    return f"comm_{hook}{'_bf16' if dtype == 'bfloat16' else ''}_n{world}"


def _run_all(world: int) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every (hook, dtype) run; `mean` and `sharded` REPEATS times, back to back, with the others between repeats."""
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    once = list(ONCE)
    for rep in range(REPEATS):
        for hook in TIMED:
            key = (hook, "float32")
            out = OUT / f"{_name(hook, 'float32', world)}{'' if rep == 0 else f'.rep{rep}'}.json"
            runs.setdefault(key, []).append(run_bench(hook, world, out))
        for _ in range(-(-len(ONCE) // REPEATS)):
            if once:
                hook, dtype = once.pop(0)
                runs[(hook, dtype)] = [run_bench(hook, world, OUT / f"{_name(hook, dtype, world)}.json",
                                                 {"run": {"dtype": dtype}})]
    for rep in range(1, REPEATS):  # one record per hook, with every repeat's step times
        for hook in TIMED:
            (OUT / f"{_name(hook, 'float32', world)}.rep{rep}.json").unlink()
    return runs


def _timing(runs: dict[tuple[str, str], list[dict[str, Any]]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Step time per (hook, dtype) and its ratio to the mean hook of the same dtype (pairs where repeated)."""
    out = {}
    for (hook, dtype), recs in runs.items():
        times = [r["step_time_s"] for r in recs]
        base = runs.get(("mean", dtype))
        if base is not None and len(base) == len(recs):
            ratios = [t / b["step_time_s"] for t, b in zip(times, base, strict=True)]
        else:
            ratios = [statistics.median(times) / statistics.median(b["step_time_s"] for b in base)] if base else []
        out[(hook, dtype)] = {"step_time_s": statistics.median(times), "step_times_per_repeat_s": times,
                              "vs_mean": statistics.median(ratios) if ratios else None,
                              "vs_mean_range": [min(ratios), max(ratios)] if ratios else None}
    return out


@pytest.mark.parametrize("world", [2, 4])
def test_comm_bench(world):
    OUT.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    runs = _run_all(world)
    first = {key: recs[0] for key, recs in runs.items()}
    timing = _timing(runs)
    for (hook, dtype), rec in first.items():  # the record of the first repeat, plus the repeats' timing
        rec["timing"] = timing[(hook, dtype)]
        (OUT / f"{_name(hook, dtype, world)}.json").write_text(json.dumps(rec, indent=2))
    _check_bytes(first, world)
    # memory: the naive full-gradient gather keeps K full gradients; the sharded hook only bucket-sized buffers
    assert first[("sharded", "float32")]["peak_mem_delta_mb"] < first[("full_gather", "float32")]["peak_mem_delta_mb"]
    _write_summary(world, load_before)


def _check_bytes(first: dict[tuple[str, str], dict[str, Any]], world: int) -> None:
    k = min(world, first[("mean", "float32")]["languages"])
    for dtype in ("float32", "bfloat16"):
        mean, sharded = first[("mean", dtype)], first[("sharded", dtype)]
        allreduce = allreduce_bytes(mean["model"]["grad_bytes"], world)
        gram = allreduce_bytes(8 * k * k, world)
        assert mean["bytes_per_step"] == pytest.approx(allreduce, rel=1e-9)
        # sharded: the all-reduce volume (in the gradient dtype) plus the K×K terms, within 5 %
        assert abs(sharded["bytes_per_step"] - (allreduce + sharded["buckets"] * gram)) <= 0.05 * allreduce, dtype
        assert sharded["bytes_ratio_allreduce"] == pytest.approx(1.0, abs=0.05), dtype
    allreduce = allreduce_bytes(first[("mean", "float32")]["model"]["grad_bytes"], world)
    assert abs(first[("full", "float32")]["bytes_per_step"] - (allreduce + gram)) <= 0.05 * allreduce
    for h in ("allgather", "full_gather"):  # all-gather and the naive full gather: N/2 times the all-reduce
        assert first[(h, "float32")]["bytes_ratio_allreduce"] == pytest.approx(world / 2, rel=0.01)


def _summary_rows() -> list[dict[str, Any]]:
    rows = []
    for path in sorted(OUT.glob("comm_*_n*.json")):
        r = json.loads(path.read_text())
        t = r.get("timing", {})
        rows.append({k: r.get(k) for k in ("hook", "world_size", "languages", "buckets", "bytes_per_step",
                                           "bytes_ratio_allreduce", "hook_time_s", "peak_mem_mb",
                                           "peak_mem_delta_mb", "device")}
                    | {"dtype": r.get("dtype", "float32"), "step_time_s": t.get("step_time_s", r["step_time_s"]),
                       "repeats": len(t.get("step_times_per_repeat_s", [1])), "vs_mean": t.get("vs_mean"),
                       "vs_mean_range": t.get("vs_mean_range"), "load_avg_1m_at_end": r.get("load_avg_1m_at_end")})
    rows.sort(key=lambda r: (r["world_size"], r["dtype"] != "float32", HOOKS.index(r["hook"])))
    return rows


def _ratio(r: dict[str, Any]) -> str:
    if r["vs_mean"] is None:
        return "—"
    lo, hi = r["vs_mean_range"]
    return f"{r['vs_mean']:.2f}" + (f" ({lo:.2f}–{hi:.2f})" if r["repeats"] > 1 else "")


def _write_summary(world: int, load_before: float) -> None:
    rows = _summary_rows()
    env = _env() | {"torch_threads_per_rank": 1, f"load_avg_1m_before_n{world}": load_before}
    previous = json.loads((OUT / "comm_summary.json").read_text()) if (OUT / "comm_summary.json").exists() else {}
    env = (previous.get("env", {}) if isinstance(previous, dict) else {}) | env
    target = next((r for r in rows if r["world_size"] == 2 and r["hook"] == "sharded" and r["dtype"] == "float32"), None)
    verdict = {"target_sharded_vs_mean_n2": TARGET_N2, "measured": target and target["vs_mean"],
               "met": bool(target and target["vs_mean"] is not None and target["vs_mean"] <= TARGET_N2)}
    (OUT / "comm_summary.json").write_text(json.dumps({"env": env, "target": verdict, "rows": rows}, indent=2))
    lines = ["# DDP hooks: communication, step time and memory per rank and step — CPU, gloo (measured)", "",
             "Model: Llama architecture, 26.1 M parameters (104 MB float32 / 52 MB bf16 gradients), DDP buckets at "
             "25 MB; K = 2 languages; 5 steps, the first a plain all-reduce warm-up. Hooks asynchronous (collectives "
             "launched with async_op=True, futures chained). `× all-reduce`: bytes sent against one all-reduce of the "
             "gradients in their own dtype. `step (s)`: median of the 4 steady steps (median over repeats where "
             f"repeated); `× mean`: against the mean hook (joint SFT) of the same dtype in the same run, for `mean` "
             f"and `sharded` the median over {REPEATS} interleaved pairs (range in brackets). `peak Δ MB`: peak RSS "
             "(VmHWM) minus the RSS before the model existed (max over ranks). One torch thread per rank; the "
             "machine (2 cores) was shared with other jobs, see the load averages in comm_summary.json. Regenerate: "
             "`pytest -m bench tests/bench/test_comm_bench.py`.", "",
             f"Target (issue 12): sharded ≤ {TARGET_N2:.2f}× mean at N = 2; measured "
             f"{_ratio(target) if target else '—'} → {'met' if verdict['met'] else 'not met'}. "
             + " ".join(f"N = {r['world_size']}: {_ratio(r)} (synchronous hooks before: {BEFORE[r['world_size']]:.2f}×, "
                        "one run)." for r in rows if r["hook"] == "sharded" and r["dtype"] == "float32"), "",
             "| N | hook | dtype | buckets | bytes/step (MB) | × all-reduce | hook time (s) | step (s) | × mean | "
             "peak Δ MB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['world_size']} | {r['hook']} | {r['dtype']} | {r['buckets']} | "
                     f"{r['bytes_per_step'] / 1e6:.3f} | {r['bytes_ratio_allreduce']:.4f} | {r['hook_time_s']:.3f} | "
                     f"{r['step_time_s']:.2f} | {_ratio(r)} | {r['peak_mem_delta_mb']:.0f} |")
    lines += ["", f"Device: {rows[0]['device'] if rows else '?'}; recorded {env['recorded_at']}; "
              f"versions: torch {env['versions'].get('torch', '?')}."]
    (OUT / "comm_summary.md").write_text("\n".join(lines) + "\n")
