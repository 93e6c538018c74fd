"""`polymoo leaderboard SUITE`: a suite's leaderboard from the MLflow store (also printed after `polymoo run`).

    polymoo leaderboard SUITE [--metric acc|loss] [--format md|csv|html] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.common import suite_args


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="print a suite's leaderboard from the MLflow store")
    suite_args(p)
    p.add_argument("--metric", default=None, help="eval metric family: acc, loss, ppl (default: acc if the suite has MC tasks)")
    p.add_argument("--format", choices=["md", "csv", "html"], default="md")
    p.add_argument("--out", default=None, help="folder for the md/csv/html files (default: results/leaderboards)")


def default_metric(suite) -> str:
    """Accuracy when the suite evaluates multiple-choice tasks, else held-out loss."""
    return "acc" if suite.eval.tasks or suite.eval.lm_eval_tasks else "loss"


def print_leaderboard(suite, metric: str, fmt: str, out: Path) -> None:
    """Aggregate the suite's finished runs from MLflow, write md/csv/html under `out`, log them, print one."""
    from harness.leaderboard import publish, render, title_for

    table, _ = publish(suite, metric, out)
    print(render(table, fmt, title_for(suite, metric)))


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness.suite import load_suite

    suite = load_suite(args.suite, args.overrides)
    from harness.tracking import results_root

    out = Path(args.out) if args.out else results_root() / "leaderboards"
    print_leaderboard(suite, args.metric or default_metric(suite), args.format, out)
    return 0
