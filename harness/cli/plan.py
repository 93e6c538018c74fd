"""`polymoo plan SUITE`: the capacity planner's table for the suite's models at full scale (meta device, no weights).

    polymoo plan suites/bkmoo_paper.yaml [--nproc 8,16,64] [--languages K] [--bucket-cap-mb 25] [--seq 1024]
                 [--batch 1] [--checkpointing | --no-checkpointing] [--out results/planner]

Precision, optimizer and activation checkpointing are the suite's (``train.dtype``, ``train.master_weights``,
``train.optimizer``, ``train.gradient_checkpointing``), so the table predicts what `polymoo run` would hold.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="predict bytes and memory per rank for the suite's base LLMs (N = 8 … 64)")
    p.add_argument("suite", help="suite YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--nproc", default="8,16,64", help="comma-separated world sizes (default 8,16,64)")
    p.add_argument("--languages", type=int, default=None, help="languages K (default: the suite's seen languages)")
    p.add_argument("--bucket-cap-mb", type=float, default=None,
                   help="DDP bucket cap (default: the suite's bkmoo bucket_cap_mb, else 25)")
    p.add_argument("--batch", type=int, default=None, help="per-rank micro-batch (default: train.batch_size_per_language)")
    p.add_argument("--seq", type=int, default=None, help="sequence length (default: train.max_seq_len)")
    p.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="activation checkpointing on / off (default: the suite's train.gradient_checkpointing)")
    p.add_argument("--out", default="results/planner", help="folder for <suite>.md / .csv / _claim.json")
    p.add_argument("--engine", choices=("ddp", "fsdp2"), default="ddp",
                   help="fsdp2: per-rank memory and bytes of the FSDP2 engine (harness.distributed.planner_fsdp2)")


def _catalog_key(name: str) -> str:
    from harness.models.catalog import ALIASES, CATALOG

    key = ALIASES.get(name, name.removeprefix("tiny-"))
    key = ALIASES.get(key, key)
    if key not in CATALOG:
        raise ValueError(f"planner: no config for model {name!r}; known: {', '.join(CATALOG)}")
    return key


def _planned_models(suite) -> list[str]:
    """The suite's models as catalog keys, once each; a model without a config file is skipped with a note."""
    from harness.distributed.planner import config_path

    models: list[str] = []
    for name in suite.models:
        key = _catalog_key(name)
        try:
            config_path(key)
        except KeyError as err:
            print(f"polymoo plan: skipping {name}: {err}")
            continue
        if key not in models:
            models.append(key)
    return models


def cmd_plan(args: argparse.Namespace) -> int:
    from harness.distributed.planner import Workload, closest_to_claim, plan_rows, to_markdown, write_plan
    from harness.suite import load_suite

    suite = load_suite(args.suite, args.overrides)
    models = _planned_models(suite)
    if args.engine == "fsdp2":
        return _plan_fsdp2(args, suite, models)
    caps = [float(m.options["bucket_cap_mb"]) for m in suite.methods if "bucket_cap_mb" in m.options]
    cap = args.bucket_cap_mb or (caps[0] if caps else 25.0)
    worlds = [int(x) for x in args.nproc.split(",") if x.strip()]
    k = args.languages or len(suite.languages.seen)
    t = suite.train
    wl = Workload.from_train(t, batch=args.batch or t.batch_size_per_language, seq=args.seq or t.max_seq_len,
                             checkpointing=t.gradient_checkpointing if args.checkpointing is None else args.checkpointing)
    lora = None
    if suite.train.lora is not None:
        lora = {"rank": suite.train.lora.rank, "alpha": suite.train.lora.alpha,
                "target_modules": list(suite.train.lora.target_modules)}
    rows = plan_rows(models, worlds, k, cap, lora=lora, wl=wl)
    paths = write_plan(Path(args.out), suite.suite.name, rows, wl, cap)
    print(to_markdown(rows, closest_to_claim(rows), wl, cap))
    print(f"\nwritten: {', '.join(str(p) for p in paths.values())}")
    return 0


def _plan_fsdp2(args: argparse.Namespace, suite, models: list[str]) -> int:
    """The FSDP2 engine's table at the first --nproc, written to <out>/<suite>_fsdp2.md."""
    from harness.distributed.planner_fsdp2 import Fsdp2Workload, plan_table, to_markdown

    flag = getattr(args, "checkpointing", None)  # --checkpointing / --no-checkpointing; None: the suite's
    wl = Fsdp2Workload(batch=args.batch or suite.train.batch_size_per_language, seq=args.seq or suite.train.max_seq_len,
                       compute_bytes=2 if suite.train.dtype != "float32" else 4,
                       checkpointing=suite.train.gradient_checkpointing if flag is None else flag)
    world = int(args.nproc.split(",")[0])
    text = to_markdown(plan_table(models, world, args.languages or len(suite.languages.seen), wl), wl)
    out = Path(args.out) / f"{suite.suite.name}_fsdp2.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text + f"\nwritten: {out}")
    return 0
