"""`polymoo methods [--long]`: the registered methods and baselines (imports no training stack)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="list registered methods and baselines")
    p.add_argument("--long", action="store_true", help="also list every option with its source")


def cmd_methods(args: argparse.Namespace) -> int:
    from harness.registry import available_methods, describe

    for method in available_methods().values():
        print(describe(method, long=args.long))
    return 0
