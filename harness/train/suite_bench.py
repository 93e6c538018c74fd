"""Benchmark of whole training runs: each gradient method's mean step time and peak memory against joint SFT, measured
by runs of a suite (``polymoo run``, the real path: HF Trainer, data, combiner, diagnostics, MLflow).

``python -m harness.train.suite_bench --k 4 8 16 --repeats 3 --out results/bench/quickstart_step_times.json``
(``nox -s bench`` runs it through ``tests/bench/test_suite_bench.py``). For every K (the first K of `LANGUAGES` as the
seen languages, the suite's examples per language per step, so the tokens per step grow with K for every method
alike) and every repeat, each method of the suite is run once on one model, in the suite's order, evaluation off; a
run's ``perf/mean_step_time_s`` (its steps after the first) and ``perf/peak_mem_mb`` (the process's resident peak) are
read back from its MLflow run. The ratio to joint SFT pairs runs of the same repeat (neighbours in time on a machine
others may share); the record keeps each method's median ratio over repeats and its range.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "ru", "id", "nl", "tr", "sv", "uk", "ja", "zh", "ko", "hi")
"""The quickstart's 8 languages first (K = 8 is the issue's setting), then 8 more chatterbot languages."""
METRICS = {"mean_step_time_s": "perf/mean_step_time_s", "peak_mem_mb": "perf/peak_mem_mb"}


def run_arguments(suite: str, model: str, method: str, languages: list[str], out: Path, extra: list[str]) -> list[str]:
    """``polymoo run`` of one method on one model: the given seen languages, no unseen ones, evaluation off."""
    return [sys.executable, "-m", "harness", "run", suite, "--model", model, "--method", method,
            "--set", f"languages.seen=[{','.join(languages)}]", "--set", "languages.unseen=[]",
            "--set", "eval.tasks=[]", "--set", "eval.heldout_loss=false", "--set", f"output_dir={out}",
            "--no-leaderboard", *extra]


def read_metrics(tracking_uri: str) -> dict[str, dict[str, float]]:
    """``{method label: {metric: value}}`` of the FINISHED runs in the MLflow store at ``tracking_uri``."""
    from harness.tracking import client as mlflow_client

    store = mlflow_client(tracking_uri)
    out = {}
    for exp in store.search_experiments():
        for run in store.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'"):
            label = run.data.tags.get("mlflow.runName", "").split("/")[1]
            out[label] = {key: run.data.metrics[name] for key, name in METRICS.items() if name in run.data.metrics}
    return out


def measure_once(suite: str, model: str, methods: list[str], languages: list[str], extra: list[str],
                 threads: int | None = None) -> dict[str, Any]:
    """One run per method in a fresh MLflow store; ``{method: {metric: value}}``, failures named. ``threads``: the
    runs' ``OMP_NUM_THREADS`` (None: the environment's, torch's default being one per core)."""
    with tempfile.TemporaryDirectory(prefix="polymoo-suite-bench-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        for method in methods:
            proc = subprocess.run(run_arguments(suite, model, method, languages, Path(tmp) / "runs", extra),
                                  env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"suite bench: {method} (K={len(languages)}) failed:\n{proc.stderr[-3000:]}")
        return read_metrics(uri)


def run_order(methods: list[str], repeat: int) -> list[str]:
    """The methods of repeat ``repeat``, rotated by it: a slow or fast spell of the machine does not always fall on
    the same method, or always beside joint SFT (each ratio pairs a method with the joint SFT run of its repeat)."""
    shift = repeat % len(methods)
    return methods[shift:] + methods[:shift]


def summarise(repeats: list[dict[str, dict[str, float]]], baseline: str = "joint_sft") -> dict[str, dict[str, Any]]:
    """Per method: median step time and peak memory over repeats, and the per-repeat ratios to ``baseline``
    (median and range)."""
    out: dict[str, dict[str, Any]] = {}
    for method in repeats[0]:
        times = [r[method]["mean_step_time_s"] for r in repeats]
        ratios = [r[method]["mean_step_time_s"] / r[baseline]["mean_step_time_s"] for r in repeats]
        mems = [r[method]["peak_mem_mb"] / r[baseline]["peak_mem_mb"] for r in repeats]
        out[method] = {"mean_step_time_s": statistics.median(times), "time_vs_joint": statistics.median(ratios),
                       "time_vs_joint_range": [min(ratios), max(ratios)], "time_vs_joint_each": ratios,
                       "mean_step_time_s_each": times,
                       "peak_mem_mb": statistics.median(r[method]["peak_mem_mb"] for r in repeats),
                       "peak_mem_vs_joint": statistics.median(mems)}
    return out


def environment() -> dict[str, Any]:
    import torch

    from harness.perf import cpu_model
    from harness.tracking import package_versions

    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "load_average_1_5_15_at_start": list(os.getloadavg()),
            "versions": package_versions(), "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def methods_of(suite: str) -> list[str]:
    from harness.suite import load_suite

    return [m.display for m in load_suite(suite).methods]


def run(suite: str, model: str, ks: list[int], repeats: int, methods: list[str] | None,
        extra: list[str], threads: int | None = None) -> dict[str, Any]:
    methods = methods or methods_of(suite)
    if "joint_sft" not in methods:
        raise ValueError("suite bench: the methods must include joint_sft (the baseline of every ratio)")
    if max(ks) > len(LANGUAGES) or min(ks) < 2:
        raise ValueError(f"suite bench: K must be in [2, {len(LANGUAGES)}], got {ks}")
    record: dict[str, Any] = {"suite": suite, "model": model, "methods": methods, "repeats": repeats,
                              "extra_overrides": extra, "omp_num_threads": threads or os.environ.get("OMP_NUM_THREADS"),
                              "environment": environment(), "results": {}}
    raw: dict[int, list[dict[str, dict[str, float]]]] = {k: [] for k in ks}
    for repeat in range(repeats):
        for k in ks:
            raw[k].append(measure_once(suite, model, run_order(methods, repeat), list(LANGUAGES[:k]), extra, threads))
    for k in ks:
        record["results"][f"K={k}"] = {"languages": list(LANGUAGES[:k]), "methods": summarise(raw[k])}
    record["environment"]["load_average_1_5_15_at_end"] = list(os.getloadavg())
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="suites/quickstart.yaml")
    p.add_argument("--model", default="llama")
    p.add_argument("--k", type=int, nargs="+", default=[8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", nargs="+", default=None, help="method labels of the suite (default: all)")
    p.add_argument("--set", dest="extra", action="append", default=[], help="more `--set key=value` for every run")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs (default: inherited)")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    extra = [x for kv in a.extra for x in ("--set", kv)]
    record = run(a.suite, a.model, a.k, a.repeats, a.methods, extra, a.threads)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
