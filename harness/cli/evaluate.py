"""`polymoo eval CHECKPOINT --suite SUITE`: evaluate a saved model on a suite's eval tasks, outside training.

    polymoo eval CHECKPOINT --suite SUITE [--task TASK=LANG ...] [--out DIR] [--no-log] [--set k=v ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _parse_tasks(items: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for item in items:
        task, _, lang = item.partition("=")
        out[task.strip()] = lang.strip() or None
    return out


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="evaluate a saved model (a run's final/ folder) on a suite's eval tasks")
    p.add_argument("checkpoint", help="model folder, or a run folder holding final/")
    p.add_argument("--suite", required=True, help="suite YAML whose languages and eval section to use")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--task", dest="tasks", action="append", default=[], metavar="TASK=LANG",
                   help="extra lm-eval task with its language, e.g. xcopa_sw=sw (repeatable)")
    p.add_argument("--out", help="result folder (default results/eval/<suite>/<checkpoint>)")
    p.add_argument("--no-log", action="store_true", help="do not log to MLflow")


def cmd_eval(args: argparse.Namespace) -> int:
    from harness.evaluate.checkpoint import resolve_checkpoint
    from harness.evaluate.standalone import evaluate_checkpoint
    from harness.suite import load_suite

    resolve_checkpoint(args.checkpoint)  # before loading the suite: the most common mistake first
    suite = load_suite(args.suite, args.overrides)
    metrics, out = evaluate_checkpoint(args.checkpoint, suite, Path(args.out) if args.out else None,
                                       _parse_tasks(args.tasks), log=not args.no_log)
    width = max((len(k) for k in metrics), default=0)
    for key in sorted(metrics):
        print(f"{key:<{width}}  {metrics[key]:.4f}")
    print(f"\nresults: {out}")
    return 0
