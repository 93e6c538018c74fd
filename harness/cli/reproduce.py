"""`polymoo reproduce bkmoo|congrad`: run a paper's suite (or read its runs) and write a claim-by-claim report.

    polymoo reproduce bkmoo|congrad [--scale tiny|lab|full] [--method NAME ...] [--from-mlflow | --resume] [--set k=v ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="run a paper's suite (or read its runs) and write a claim-by-claim report")
    p.add_argument("paper", choices=["bkmoo", "congrad"])
    p.add_argument("--scale", choices=["tiny", "lab", "full"], default="tiny",
                   help="tiny: suites/<paper>_paper_tiny.yaml (CPU, minutes); lab: suites/<paper>_paper_lab.yaml "
                        "(the interference lab, CPU); full: suites/<paper>_paper.yaml")
    p.add_argument("--method", dest="methods", action="append", default=[], metavar="NAME",
                   help="only these methods of the suite (name or label; repeatable)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--from-mlflow", action="store_true", help="read the suite's existing runs instead of training")
    p.add_argument("--resume", action="store_true", help="keep finished runs of an interrupted reproduce, train the rest")
    p.add_argument("--no-separability", action="store_true", help="skip the per-layer separability analysis")
    p.add_argument("--out", default=None, help="report root (default results/reproduce)")


def cmd_reproduce(args: argparse.Namespace) -> int:
    from harness.reproduce import reproduce

    if not args.from_mlflow and not _preflight(args):
        return 2
    out = reproduce(args.paper, args.scale, args.overrides, args.methods or None, args.from_mlflow,
                    Path(args.out) if args.out else None, with_separability=not args.no_separability,
                    resume=args.resume)
    print((out / "report.md").read_text())
    print(f"report: {out / 'report.md'}")
    return 0


def _preflight(args: argparse.Namespace) -> bool:
    """`polymoo run`'s pre-flight (`polymoo check`: world, task names, data, memory) on the suite this reproduce trains,
    before anything loads or launches."""
    from harness.cli.run import preflight
    from harness.reproduce.run import load_paper_suite, suite_file

    suite = load_paper_suite(args.paper, args.scale, args.overrides, args.methods or None)
    return preflight(str(suite_file(args.paper, args.scale)), suite, suite.distributed.nproc, None)
