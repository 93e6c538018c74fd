"""Arguments shared by several sub-commands."""

from __future__ import annotations

import argparse


def suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="suite YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite key, e.g. --set train.steps=20 (repeatable)")
