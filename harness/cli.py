"""`polymoo` command line (also `python -m harness`).

    polymoo run SUITE [--set key=value ...] [--model M] [--method NAME] [--seed S] [--resume] [--nproc N]
    polymoo methods [--long]
    polymoo leaderboard SUITE [--metric acc|loss] [--format md|csv|html]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from harness.validate import ConfigError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}
PARSER_HOOKS: list[Callable[[argparse._SubParsersAction], None]] = []


def command(name: str):
    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return deco


def _suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="suite YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite key, e.g. --set train.steps=20 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="polymoo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train and evaluate every (model, method, seed) of a suite")
    _suite_args(p)
    p.add_argument("--model", help="only this model of the suite")
    p.add_argument("--method", help="only this method (name or label)")
    p.add_argument("--seed", type=int, help="only this seed")
    p.add_argument("--resume", action="store_true", help="skip finished runs, resume failed ones from their checkpoint")
    p.add_argument("--nproc", type=int, default=None, help="processes (torchrun); default: suite distributed.nproc")
    p.add_argument("--no-leaderboard", action="store_true", help="do not print the leaderboard afterwards")

    p = sub.add_parser("methods", help="list registered methods and baselines")
    p.add_argument("--long", action="store_true", help="also list every option with its source")

    p = sub.add_parser("leaderboard", help="print a suite's leaderboard from the MLflow store")
    _suite_args(p)
    p.add_argument("--metric", default=None, help="eval metric family: acc, loss, ppl (default: acc if the suite has MC tasks)")
    p.add_argument("--format", choices=["md", "csv", "html"], default="md")
    p.add_argument("--out", default="results/leaderboards", help="folder for the md/csv/html files")

    for hook in PARSER_HOOKS:
        hook(sub)
    return parser


@command("methods")
def cmd_methods(args: argparse.Namespace) -> int:
    from harness.registry import available_methods, describe

    for method in available_methods().values():
        print(describe(method, long=args.long))
    return 0


@command("run")
def cmd_run(args: argparse.Namespace) -> int:
    from harness.config import load_suite

    suite = load_suite(args.suite, args.overrides)
    suite = suite.with_only(model=args.model, method=args.method, seed=args.seed)
    if not suite.methods or not suite.models:
        raise ConfigError([f"{args.suite}: --model/--method filter selects nothing"])
    nproc = args.nproc if args.nproc is not None else suite.distributed.nproc
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        from harness.distributed.launch import launch

        return launch(args, nproc)
    from harness.distributed.launch import current_dist
    from harness.runner import describe_results, run_suite

    dist = current_dist(suite)
    results = run_suite(suite, resume=args.resume, dist=dist)
    if dist.is_main:
        for row in describe_results(results):
            print(f"{row['model']:<14} {row['method']:<20} seed {row['seed']}: {row['status']} (run {row['run_id']})")
        if not args.no_leaderboard:
            print()
            print_leaderboard(suite, default_metric(suite), "md", Path("results/leaderboards"))
    return 0


def default_metric(suite) -> str:
    """Accuracy when the suite evaluates multiple-choice tasks, else held-out loss."""
    return "acc" if suite.eval.tasks or suite.eval.lm_eval_tasks else "loss"


def print_leaderboard(suite, metric: str, fmt: str, out: Path) -> None:
    """Aggregate the suite's finished runs from MLflow, write md/csv/html under `out`, log them, print one."""
    from harness.leaderboard import publish, to_csv, to_html, to_markdown

    table, _ = publish(suite, metric, out)
    title = f"polymoo leaderboard — {suite.suite.name} (eval/{metric})"
    print({"md": to_markdown, "csv": to_csv}.get(fmt, lambda t: to_html(t, title))(table))


@command("leaderboard")
def cmd_leaderboard(args: argparse.Namespace) -> int:
    from harness.config import load_suite

    suite = load_suite(args.suite, args.overrides)
    print_leaderboard(suite, args.metric or default_metric(suite), args.format, Path(args.out))
    return 0


def _load_plugins() -> None:
    """Sub-commands contributed by harness packages (plan; eval, reproduce, analyze) register through
    `command` and `PARSER_HOOKS` when these modules exist."""
    import importlib

    for module in ("harness.distributed.cli", "harness.evaluate.cli"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise


def main(argv: list[str] | None = None) -> int:
    _load_plugins()
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as err:
        print(f"polymoo: invalid configuration:\n{err}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"polymoo: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
