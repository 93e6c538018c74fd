"""`polymoo run SUITE`: train and evaluate every (model, method, seed) of a suite, then print its leaderboard.

    polymoo run SUITE [--set key=value ...] [--model M ...] [--method NAME ...] [--seed S ...] [--resume | --resume-changed]
                      [--nproc N]

Each run prints a header (``run 3/14: llama · mgda · seed 0``) and a summary line with its key metrics and duration
on stderr; the progress bar shows the loss and the per-language losses.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from harness.cli.common import add_node_args, nodes_of, suite_args
from harness.cli.leaderboard import default_metric, print_leaderboard
from harness.validate import ConfigError


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="train and evaluate every (model, method, seed) of a suite")
    suite_args(p)
    p.add_argument("--model", action="append", help="only this model of the suite (repeatable)")
    p.add_argument("--method", action="append",
                   help="only this method: a label, else a method name (all its variants); repeatable")
    p.add_argument("--seed", type=int, action="append", help="only this seed (repeatable)")
    p.add_argument("--resume", action="store_true", help="skip finished runs, resume failed ones from their checkpoint")
    p.add_argument("--resume-changed", action="store_true",
                   help="like --resume, but accept a suite changed since a run started: the run continues with the "
                        "new settings, its params are updated and the change (old -> new) is recorded as a tag and "
                        "an artifact (without it such a resume is refused, naming the keys)")
    p.add_argument("--nproc", type=int, default=None, help="processes (torchrun); default: suite distributed.nproc")
    p.add_argument("--gpu-mem", type=float, default=None,
                   help="GB per device for the pre-flight memory check (default: measured on the device one process "
                        "would use: CUDA's free memory, else the host's available RAM)")
    add_node_args(p)
    p.add_argument("--no-leaderboard", action="store_true", help="do not print the leaderboard afterwards")


def preflight(path: str, suite: Any, world: int, gpu_mem_gb: float | None) -> bool:
    """`polymoo check` before anything loads or launches (once, not on every rank): world, lm-eval task names, data
    and memory; one process is checked against the device it is about to use (harness.memory_guard). Prints the
    failures and returns False when there are any."""
    from pathlib import Path

    from harness.check import run_checks

    failed = [f for f in run_checks(suite, world, gpu_mem_gb, Path.cwd(), measure_device=True) if f.status == "fail"]
    for f in failed:
        print(f"polymoo run: {f.check}: {f.message}", file=sys.stderr)
    if failed:
        print(f"polymoo run: {len(failed)} problem(s) before launch, nothing was loaded; `polymoo check {path}` "
              "lists every check", file=sys.stderr)
    return not failed


def cmd_run(args: argparse.Namespace) -> int:
    from harness.suite import load_suite

    suite = load_suite(args.suite, args.overrides)
    unmatched = [f"--model {m}" for m in args.model or () if not suite.with_only(model=m).models]
    unmatched += [f"--method {m}" for m in args.method or () if not suite.with_only(method=m).methods]
    if unmatched:  # one typo among several filters would otherwise drop a method silently
        raise ConfigError([f"{args.suite}: {f} selects nothing (models: {', '.join(suite.models)}; methods: "
                           f"{', '.join(m.display for m in suite.methods)})" for f in unmatched])
    suite = suite.with_only(model=args.model, method=args.method, seed=args.seed)
    nproc = args.nproc if args.nproc is not None else suite.distributed.nproc
    nodes = nodes_of(args)
    if "LOCAL_RANK" not in os.environ and not preflight(args.suite, suite, nproc * nodes.nnodes, args.gpu_mem):
        return 2
    if (nproc > 1 or nodes.nnodes > 1) and "LOCAL_RANK" not in os.environ:
        from harness.distributed.launch import launch

        return launch(nproc, nodes)
    from harness.distributed.launch import current_dist
    from harness.runner import Terminated, describe_results, run_suite

    dist = current_dist(suite)
    try:
        results = run_suite(suite, resume=args.resume or args.resume_changed, dist=dist,
                            resume_changed=args.resume_changed)
    except (Terminated, KeyboardInterrupt) as stop:
        what, code = (f"stopped by {stop}", 128 + 15) if isinstance(stop, Terminated) else ("interrupted", 128 + 2)
        print(f"polymoo: {what}: the current run ended KILLED in MLflow with what it had logged; "
              f"continue with: polymoo run {args.suite} --resume", file=sys.stderr)
        return code
    if dist.is_main:
        for row in describe_results(results):
            print(f"{row['model']:<14} {row['method']:<20} seed {row['seed']}: {row['status']} (run {row['run_id']})")
        if not args.no_leaderboard:
            print()
            from harness.tracking import results_root

            print_leaderboard(suite, default_metric(suite), "md", results_root() / "leaderboards")
    return 0
