"""`polymoo` command line (also `python -m harness`): the parser is built here from one module per sub-command.

    run.py          polymoo run          train and evaluate a suite (torchrun when --nproc > 1)
    methods.py      polymoo methods      list the registered methods
    leaderboard.py  polymoo leaderboard  a suite's leaderboard from MLflow
    plan.py         polymoo plan         the capacity planner's table
    evaluate.py     polymoo eval         evaluate a saved model
    reproduce.py    polymoo reproduce    a paper's suite and its claim-by-claim report
    analyze.py      polymoo analyze      representation analyses

This package imports its sub-commands; nothing below it imports `harness.cli`. Each module keeps its heavy imports
(torch, transformers, MLflow) inside the command function, so `polymoo methods` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from harness.cli import analyze, evaluate, leaderboard, methods, plan, reproduce, run
from harness.validate import ConfigError

DESCRIPTION = """`polymoo` command line (also `python -m harness`).

    polymoo run SUITE [--set key=value ...] [--model M] [--method NAME] [--seed S] [--resume] [--nproc N]
    polymoo methods [--long]
    polymoo leaderboard SUITE [--metric acc|loss] [--format md|csv|html]
"""

AddParser = Callable[[argparse._SubParsersAction, str], None]
Command = Callable[[argparse.Namespace], int]

# name -> (adds its parser, runs it); the order is the order of `polymoo --help`
SUBCOMMANDS: dict[str, tuple[AddParser, Command]] = {
    "run": (run.add_parser, run.cmd_run),
    "methods": (methods.add_parser, methods.cmd_methods),
    "leaderboard": (leaderboard.add_parser, leaderboard.cmd_leaderboard),
    "plan": (plan.add_parser, plan.cmd_plan),
    "eval": (evaluate.add_parser, evaluate.cmd_eval),
    "reproduce": (reproduce.add_parser, reproduce.cmd_reproduce),
    "analyze": (analyze.add_parser, analyze.cmd_analyze),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polymoo", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_parser, _) in SUBCOMMANDS.items():
        add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return SUBCOMMANDS[args.command][1](args)
    except ConfigError as err:
        print(f"polymoo: invalid configuration:\n{err}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"polymoo: error: {err}", file=sys.stderr)
        return 2


__all__ = ["SUBCOMMANDS", "build_parser", "main"]
