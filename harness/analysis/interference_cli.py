"""The `polymoo analyze interference SUITE` subcommand: its arguments and its command (wired in harness/cli/analyze.py).

    polymoo analyze interference SUITE [--set key=value ...] [--method joint_sft] [--model M] [--seeds 0,1]
                                       [--languages a,b,c] [--steps N] [--metric loss|answer_loss]
                                       [--out DIR] [--no-log]
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(asub: argparse._SubParsersAction) -> None:
    a = asub.add_parser("interference", help="interference matrix: train each language alone and in each pair")
    a.add_argument("suite", help="suite YAML (its model, data, training settings and seeds are used)")
    a.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite key (repeatable), e.g. --set data.conflict=0.8")
    a.add_argument("--method", default="joint_sft", help="method (name or label in the suite) to train with")
    a.add_argument("--model", default=None, help="model of the suite (default: its first)")
    a.add_argument("--seeds", default=None, help="comma-separated seeds (default: the suite's)")
    a.add_argument("--languages", default=None, help="comma-separated subset of the seen languages")
    a.add_argument("--steps", type=int, default=None, help="training steps (default: the suite's train.steps)")
    a.add_argument("--metric", choices=["loss", "answer_loss"], default=None,
                   help="held-out loss compared: answer_loss (the lab's answer words; its default) or loss (every "
                        "response token; the default elsewhere)")
    a.add_argument("--out", default=None, help="output folder (default results/analysis/interference/<suite>)")
    a.add_argument("--no-log", action="store_true", help="do not log an MLflow run")


def command(args: argparse.Namespace) -> int:
    from harness.analysis.interference import interference_matrix, log_result, write_outputs
    from harness.suite import load_suite

    overrides = list(args.overrides) + ([f"train.steps={args.steps}"] if args.steps else [])
    suite = load_suite(args.suite, overrides)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    langs = [x.strip() for x in args.languages.split(",")] if args.languages else None
    model = args.model or suite.models[0]
    out = Path(args.out) if args.out else Path("results") / "analysis" / "interference" / suite.suite.name
    result = interference_matrix(suite, args.method, model, seeds, langs, work_dir=out / "runs", metric=args.metric)
    files = write_outputs(result, out, f"{suite.suite.name}, {model}, {result.method}")
    print(result.table())
    print(f"\nwritten: {', '.join(str(f) for f in files)}")
    if not args.no_log:
        print(f"MLflow run: {log_result(suite, result, files, model)}")
    return 0
