"""`polymoo data prepare NAME` builds a data file a suite names, from a hub dataset; `polymoo data list` lists them.

    polymoo data list
    polymoo data prepare NAME [--suite SUITE] [--set key=value ...] [--source KEY] [--revision REV] [--from DIR]
                              [--out PATH] [--seed S] [--cache-dir DIR] [--force]

The recipe NAME follows its suite (languages, per-language caps, held-out share and data.path; `--suite`/`--set` to
change them), reads the recipe's default source (docs/data.md: the choice and the licences) and writes the JSONL and
its provenance sidecar atomically. It needs the hub, or `--from` a local copy of the dataset repository.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="build the data files the suites name (from hub datasets)")
    actions = p.add_subparsers(dest="data_command", required=True)
    actions.add_parser("list", help="the recipes: which file, from which dataset, under which licence")
    prep = actions.add_parser("prepare", help="build one recipe's JSONL and its provenance sidecar")
    prep.add_argument("name", help="recipe (polymoo data list)")
    prep.add_argument("--suite", help="the suite whose languages, caps and data.path to follow (default: the recipe's)")
    prep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a suite key, e.g. --set data.max_examples_per_language=500 (repeatable)")
    prep.add_argument("--source", help="dataset key (default: the recipe's; polymoo data list shows the others)")
    prep.add_argument("--revision", help="dataset commit, tag or branch (default: the pinned one, else main)")
    prep.add_argument("--from", dest="local_dir", type=Path,
                      help="a local copy of the dataset repository instead of the hub")
    prep.add_argument("--out", type=Path, help="output file (default: the suite's data.path)")
    prep.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    prep.add_argument("--cache-dir", help="datasets cache (default: HF_DATASETS_CACHE)")
    prep.add_argument("--force", action="store_true", help="replace an existing file not built by this command")
    for nested in actions.choices.values():  # `polymoo data prepare x --debug` too, as every sub-command
        nested.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def cmd_data(args: argparse.Namespace) -> int:
    return cmd_list() if args.data_command == "list" else cmd_prepare(args)


def cmd_list() -> int:
    from harness.data.hub_sources import RECIPES, SOURCES

    for r in RECIPES.values():
        s = SOURCES[r.source]
        others = ", ".join(f"{k} ({SOURCES[k].dataset_id}, {SOURCES[k].licence})" for k in r.alternatives)
        print(f"{r.name:16s} -> {r.path} for {r.suite}\n{'':16s}    {r.purpose}\n"
              f"{'':16s}    source {s.key}: {s.dataset_id} ({s.licence})" + (f"; also: {others}" if others else ""))
    return 0


def _recipe_and_source(args: argparse.Namespace):
    from harness.data.hub_sources import RECIPES, SOURCES
    from harness.validate import suggest

    recipe = RECIPES.get(args.name)
    if recipe is None:
        raise ValueError(f"no data recipe {args.name!r}{suggest(args.name, RECIPES)}; known: {', '.join(RECIPES)}")
    key = args.source or recipe.source
    if key not in SOURCES:
        raise ValueError(f"--source {key!r}: unknown{suggest(key, SOURCES)}; known: {', '.join(SOURCES)}")
    return recipe, SOURCES[key]


def cmd_prepare(args: argparse.Namespace) -> int:
    from harness.data.prepare import PrepareSpec, language_caps, prepare, provenance_path
    from harness.suite import load_suite

    recipe, source = _recipe_and_source(args)
    suite = load_suite(args.suite or recipe.suite, args.overrides)
    d = suite.data
    out = args.out or Path(d.path or recipe.path)
    languages = tuple(suite.languages.all)
    spec = PrepareSpec(recipe=recipe.name, source=source, languages=languages, out=out, seed=args.seed,
                       caps=language_caps(languages, d.max_examples_per_language, d.examples_per_language,
                                          d.heldout_fraction),
                       revision=args.revision, local_dir=args.local_dir, cache_dir=args.cache_dir, force=args.force)
    record = prepare(spec)
    for lang, info in record["languages"].items():
        short = "  (short of the cap)" if lang in record["short"] else ""
        print(f"  {lang}: {info['written']} of {info['available']} usable rows (cap {info['cap']}){short}")
    print(f"wrote {out} ({record['rows']} rows, sha256 {record['fingerprint']}…) from {source.dataset_id} "
          f"[{source.licence}]; provenance: {provenance_path(out)}")
    return 0
