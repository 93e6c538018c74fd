"""`polymoo` command line (also `python -m harness`): the parser is built here from one module per sub-command.

    run.py          polymoo run          train and evaluate a suite (torchrun when --nproc > 1)
    check.py        polymoo check        check a suite before launch (world, lm-eval tasks, data, memory)
    data.py         polymoo data         build the data files the suites name (data prepare NAME) from hub datasets
    methods.py      polymoo methods      list the registered methods
    leaderboard.py  polymoo leaderboard  a suite's leaderboard from MLflow
    plan.py         polymoo plan         the capacity planner's table
    evaluate.py     polymoo eval         evaluate a saved model
    reproduce.py    polymoo reproduce    a paper's suite and its claim-by-claim report
    analyze.py      polymoo analyze      representation analyses
    ui.py           polymoo ui           the MLflow UI on the store (a moved results/ folder too)

This package imports its sub-commands; nothing below it imports `harness.cli`. Each module keeps its heavy imports
(torch, transformers, MLflow) inside the command function, so `polymoo methods` stays fast.

Errors: a user error (bad suite, unknown name, missing file) prints its message and exits 2; anything unexpected
prints one line with the path of a log holding the full traceback (``results/logs/polymoo-<time>.log``) and exits 1;
``--debug`` (before or after the sub-command) lets the exception through with its traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from harness.cli import analyze, check, data, evaluate, leaderboard, methods, plan, reproduce, run, ui
from harness.validate import ConfigError

DESCRIPTION = """`polymoo` command line (also `python -m harness`).

    polymoo run SUITE [--set key=value ...] [--model M ...] [--method NAME ...] [--seed S ...] [--resume | --resume-changed]
                      [--nproc N]
    polymoo check SUITE [--nproc N] [--gpu-mem GB]
    polymoo data prepare NAME [--from DIR]      (polymoo data list: the data files the suites name)
    polymoo methods [--long]
    polymoo leaderboard SUITE [--metric acc|loss] [--format md|csv|html]
    polymoo ui [--port 5000]

    --debug (anywhere): show the traceback of an unexpected error instead of a one-line message and a log file
"""

AddParser = Callable[[argparse._SubParsersAction, str], None]
Command = Callable[[argparse.Namespace], int]

# name -> (adds its parser, runs it); the order is the order of `polymoo --help`
SUBCOMMANDS: dict[str, tuple[AddParser, Command]] = {
    "run": (run.add_parser, run.cmd_run),
    "check": (check.add_parser, check.cmd_check),
    "data": (data.add_parser, data.cmd_data),
    "methods": (methods.add_parser, methods.cmd_methods),
    "leaderboard": (leaderboard.add_parser, leaderboard.cmd_leaderboard),
    "plan": (plan.add_parser, plan.cmd_plan),
    "eval": (evaluate.add_parser, evaluate.cmd_eval),
    "reproduce": (reproduce.add_parser, reproduce.cmd_reproduce),
    "analyze": (analyze.add_parser, analyze.cmd_analyze),
    "ui": (ui.add_parser, ui.cmd_ui),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polymoo", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_parser, _) in SUBCOMMANDS.items():
        add_parser(sub, name)
    for subparser in sub.choices.values():  # `polymoo run x.yaml --debug` too; SUPPRESS keeps a global --debug
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return SUBCOMMANDS[args.command][1](args)
    except ConfigError as err:
        if args.debug:
            raise
        print(f"polymoo: invalid configuration:\n{err}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, FileNotFoundError) as err:
        if args.debug:
            raise
        print(f"polymoo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("polymoo: interrupted", file=sys.stderr)
        return 128 + 2
    except Exception as err:  # a bug or an environment problem: one line here, the traceback in a log file
        if args.debug:
            raise
        log = write_error_log(argv if argv is not None else sys.argv[1:])
        print(f"polymoo: unexpected error: {type(err).__name__}: {_first_line(err)} (full log: {log}; "
              "rerun with --debug for the traceback)", file=sys.stderr)
        return 1


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"


def write_error_log(argv: list[str]) -> Path:
    """The current exception's traceback, with the command and the Python version, in
    `$POLYMOO_RESULTS/logs/polymoo-<time>-<pid>.log` (results/ by default; the temp folder if that is unwritable)."""
    from harness.tracking import results_root

    name = f"polymoo-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = (f"command: polymoo {' '.join(argv)}\npython: {sys.version.split()[0]}\ncwd: {os.getcwd()}\n\n"
            + traceback.format_exc())
    for folder in (results_root() / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
            return folder / name
        except OSError:
            continue
    return Path("(no writable folder for the log)")


__all__ = ["SUBCOMMANDS", "build_parser", "main"]
