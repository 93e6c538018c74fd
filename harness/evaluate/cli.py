"""Sub-commands `eval`, `reproduce` and `analyze` (loaded by harness.cli when this module exists).

    polymoo eval CHECKPOINT --suite SUITE [--task TASK=LANG ...] [--out DIR] [--no-log] [--set k=v ...]
    polymoo reproduce bkmoo|congrad [--scale tiny|full] [--method NAME ...] [--from-mlflow | --resume] [--set k=v ...]
    polymoo analyze separability --model PATH_OR_NAME [--after RUN_DIR] [--languages en,fr,...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli import PARSER_HOOKS, command


def _parse_tasks(items: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for item in items:
        task, _, lang = item.partition("=")
        out[task.strip()] = lang.strip() or None
    return out


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a saved model (a run's final/ folder) on a suite's eval tasks")
    p.add_argument("checkpoint", help="model folder, or a run folder holding final/")
    p.add_argument("--suite", required=True, help="suite YAML whose languages and eval section to use")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--task", dest="tasks", action="append", default=[], metavar="TASK=LANG",
                   help="extra lm-eval task with its language, e.g. xcopa_sw=sw (repeatable)")
    p.add_argument("--out", help="result folder (default results/eval/<suite>/<checkpoint>)")
    p.add_argument("--no-log", action="store_true", help="do not log to MLflow")

    p = sub.add_parser("reproduce", help="run a paper's suite (or read its runs) and write a claim-by-claim report")
    p.add_argument("paper", choices=["bkmoo", "congrad"])
    p.add_argument("--scale", choices=["tiny", "full"], default="tiny",
                   help="tiny: suites/<paper>_paper_tiny.yaml (CPU, minutes); full: suites/<paper>_paper.yaml")
    p.add_argument("--method", dest="methods", action="append", default=[], metavar="NAME",
                   help="only these methods of the suite (name or label; repeatable)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--from-mlflow", action="store_true", help="read the suite's existing runs instead of training")
    p.add_argument("--resume", action="store_true", help="keep finished runs of an interrupted reproduce, train the rest")
    p.add_argument("--no-separability", action="store_true", help="skip the per-layer separability analysis")
    p.add_argument("--out", default=None, help="report root (default results/reproduce)")

    p = sub.add_parser("analyze", help="representation analyses")
    asub = p.add_subparsers(dest="analysis", required=True)
    a = asub.add_parser("separability", help="per-layer language-ID probe accuracy and silhouette")
    a.add_argument("--model", required=True, help="checkpoint folder or catalog model name (the 'before' model)")
    a.add_argument("--after", help="run folder (or model folder) fine-tuned from --model")
    a.add_argument("--languages", help="comma-separated (default: the run's languages, else 8 offline ones)")
    a.add_argument("--scale", choices=["tiny", "full"], default="tiny", help="how to resolve a model name")
    a.add_argument("--n-per-language", type=int, default=None, help="parallel items per language (default all)")
    a.add_argument("--out", default=None)
    a.add_argument("--no-log", action="store_true")


PARSER_HOOKS.append(add_parsers)


@command("eval")
def cmd_eval(args: argparse.Namespace) -> int:
    from harness.config import load_suite
    from harness.evaluate.checkpoint import resolve_checkpoint
    from harness.evaluate.standalone import evaluate_checkpoint

    resolve_checkpoint(args.checkpoint)  # before loading the suite: the most common mistake first
    suite = load_suite(args.suite, args.overrides)
    metrics, out = evaluate_checkpoint(args.checkpoint, suite, Path(args.out) if args.out else None,
                                       _parse_tasks(args.tasks), log=not args.no_log)
    width = max((len(k) for k in metrics), default=0)
    for key in sorted(metrics):
        print(f"{key:<{width}}  {metrics[key]:.4f}")
    print(f"\nresults: {out}")
    return 0


@command("reproduce")
def cmd_reproduce(args: argparse.Namespace) -> int:
    from harness.reproduce import reproduce

    out = reproduce(args.paper, args.scale, args.overrides, args.methods or None, args.from_mlflow,
                    Path(args.out) if args.out else None, with_separability=not args.no_separability,
                    resume=args.resume)
    print((out / "report.md").read_text())
    print(f"report: {out / 'report.md'}")
    return 0


@command("analyze")
def cmd_analyze(args: argparse.Namespace) -> int:
    from harness.analysis.run import analyze_separability

    langs = [x.strip() for x in args.languages.split(",")] if args.languages else None
    payload = analyze_separability(args.model, args.after, langs, args.scale,
                                   Path(args.out) if args.out else None, args.n_per_language, log=not args.no_log)
    print(f"languages: {', '.join(payload['languages'])} (chance {1 / len(payload['languages']):.3f})")
    for stage in ("before", "after"):
        if stage in payload:
            res = payload[stage]
            accs = " ".join(f"{x:.3f}" for x in res["probe_acc"])
            sils = " ".join(f"{x:.3f}" for x in res["silhouette"])
            print(f"{stage:>6}: probe acc per layer [{accs}]  silhouette [{sils}]")
    return 0
