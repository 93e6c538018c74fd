"""`polymoo check SUITE [--nproc N] [--gpu-mem GB] [--set ...]`: what can be checked before any model loads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli.common import suite_args


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="check a suite before launch: world, lm-eval task names, data, memory")
    suite_args(p)
    p.add_argument("--nproc", type=int, default=None, help="ranks to check for; default: suite distributed.nproc")
    p.add_argument("--gpu-mem", type=float, default=None, help="GB per device: check the planner's memory fit")


def cmd_check(args: argparse.Namespace) -> int:
    from harness.check import run_checks
    from harness.suite import load_suite

    suite = load_suite(args.suite, args.overrides)  # schema, registries and values: a ConfigError names each problem
    nproc = args.nproc if args.nproc is not None else suite.distributed.nproc
    if nproc < 1:
        print(f"polymoo check: --nproc must be >= 1, got {nproc}", file=sys.stderr)
        return 2
    findings = run_checks(suite, nproc, args.gpu_mem, Path.cwd())
    print(f"{args.suite}: suite valid (schema, models, methods, options, local tasks)")
    for f in findings:
        print(f"  {f.status:4s}  {f.check:8s} {f.message}")
    failed = [f for f in findings if f.status == "fail"]
    print(f"{len(failed)} problem(s)" if failed else "ready to launch", file=sys.stderr if failed else sys.stdout)
    return 2 if failed else 0
