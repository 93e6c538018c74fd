"""`polymoo analyze separability | interference`: representation and interference analyses.

    polymoo analyze separability --model PATH_OR_NAME [--after RUN_DIR] [--languages en,fr,...]
    polymoo analyze interference SUITE [--set ...]   (each language alone and each pair: interference per pair)
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="representation analyses")
    asub = p.add_subparsers(dest="analysis", required=True)
    a = asub.add_parser("separability", help="per-layer language-ID probe accuracy and silhouette")
    a.add_argument("--model", required=True, help="checkpoint folder or catalog model name (the 'before' model)")
    a.add_argument("--after", help="run folder (or model folder) fine-tuned from --model")
    a.add_argument("--languages", help="comma-separated (default: the run's languages, else 8 offline ones)")
    a.add_argument("--scale", choices=["tiny", "full"], default="tiny", help="how to resolve a model name")
    a.add_argument("--n-per-language", type=int, default=None, help="parallel items per language (default all)")
    a.add_argument("--out", default=None)
    a.add_argument("--no-log", action="store_true")
    from harness.analysis.interference_cli import add_parser as add_interference

    add_interference(asub)


def cmd_analyze(args: argparse.Namespace) -> int:
    if args.analysis == "interference":
        from harness.analysis.interference_cli import command

        return command(args)
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
