"""How often a paired test over n seeds finds a difference, over every choice of n seeds from a larger pool.

    python -m harness.analysis.seed_subsets REPORT.json [REPORT.json ...] [--size 5] [--alpha 0.01] [--out FILE]

Reads `harness.analysis.lab_report` outputs of one suite (one per set of seeds; their suite, metric, baseline, data
and train settings must agree), pools each method's per-seed worst-language loss, and for every subset of `size` seeds
shared with the baseline runs the paired t-test of `lab_report`. Reports per method the share of subsets with p <
alpha and the worst subset, and the same for "some method": on each subset, the smallest p of the methods that ran on
its seeds. The interference lab's bar ("a MOO method differs at p < 0.01 for any choice of 5 seeds",
docs/interference_lab.md) is the "some method" share being 1.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.analysis.stats import paired_test

PerSeed = Mapping[int, float]


@dataclass(frozen=True)
class SubsetPower:
    """Over every subset of `size` seeds: how many there are, the share with p < alpha, the largest p and its seeds."""

    subsets: int
    share_below_alpha: float
    worst_p: float
    worst_seeds: tuple[int, ...]


def pooled(reports: Sequence[Mapping[str, Any]]) -> tuple[str, dict[str, dict[int, float]]]:
    """(baseline, method -> seed -> worst-language loss) from lab_report outputs of one suite and metric."""
    if not reports:
        raise ValueError("seed_subsets: no report given")
    fields = ("suite", "metric", "baseline", "data", "train")  # not the config hash: it names the seeds too
    keys = {json.dumps([r.get(f) for f in fields], sort_keys=True) for r in reports}
    if len(keys) > 1:
        differ = [f for f in fields if len({json.dumps(r.get(f), sort_keys=True) for r in reports}) > 1]
        raise ValueError(f"seed_subsets: the reports differ in {', '.join(differ)}: they are not one experiment")
    runs: dict[str, dict[int, float]] = {}
    for report in reports:
        for method, row in report["methods"].items():
            for seed, loss in zip(row["seeds"], row["worst_loss"], strict=True):
                if runs.setdefault(method, {}).setdefault(int(seed), loss) != loss:
                    raise ValueError(f"seed_subsets: {method} seed {seed} has two different results")
    return reports[0]["baseline"], runs


def subset_pvalues(method: PerSeed, baseline: PerSeed, size: int) -> dict[tuple[int, ...], float]:
    """Paired t-test p of `method` against `baseline` on every subset of `size` of their shared seeds."""
    shared = sorted(set(method) & set(baseline))
    if size < 2 or size > len(shared):
        raise ValueError(f"seed_subsets: subsets of {size} seeds from {len(shared)} shared seeds")
    return {seeds: paired_test([method[s] for s in seeds], [baseline[s] for s in seeds]).p_t
            for seeds in itertools.combinations(shared, size)}


def power(pvalues: Mapping[tuple[int, ...], float], alpha: float) -> SubsetPower:
    worst = max(pvalues, key=lambda seeds: pvalues[seeds])
    return SubsetPower(subsets=len(pvalues), share_below_alpha=sum(p < alpha for p in pvalues.values()) / len(pvalues),
                       worst_p=pvalues[worst], worst_seeds=worst)


def some_method(per_method: Mapping[str, Mapping[tuple[int, ...], float]]) -> dict[tuple[int, ...], float]:
    """Per subset, the smallest p of the methods that ran on all of its seeds."""
    every = set().union(*(set(p) for p in per_method.values()))
    return {seeds: min(p[seeds] for p in per_method.values() if seeds in p) for seeds in sorted(every)}


def analyse(reports: Sequence[Mapping[str, Any]], size: int = 5, alpha: float = 0.01) -> dict[str, Any]:
    baseline, runs = pooled(reports)
    if baseline not in runs:
        raise ValueError(f"seed_subsets: no {baseline} runs in the reports")
    eligible = {m: by_seed for m, by_seed in runs.items()
                if m != baseline and len(set(by_seed) & set(runs[baseline])) >= size}
    if not eligible:
        raise ValueError(f"seed_subsets: no method shares {size} seeds with {baseline}")
    per_method = {m: subset_pvalues(by_seed, runs[baseline], size) for m, by_seed in eligible.items()}
    rows = {m: asdict(power(p, alpha)) for m, p in per_method.items()}
    rows["some method"] = asdict(power(some_method(per_method), alpha))
    return {"baseline": baseline, "size": size, "alpha": alpha, "seeds": sorted(runs[baseline]), "methods": rows}


def table(result: Mapping[str, Any]) -> str:
    lines = [f"| method | subsets of {result['size']} seeds | share with p < {result['alpha']} | worst p | its seeds |",
             "|---|---|---|---|---|"]
    for method, row in result["methods"].items():
        seeds = " ".join(str(s) for s in row["worst_seeds"])
        lines.append(f"| {method} | {row['subsets']} | {row['share_below_alpha']:.3f} | {row['worst_p']:.3g} | {seeds} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.analysis.seed_subsets", description=__doc__.splitlines()[0])
    p.add_argument("reports", nargs="+", help="lab_report JSON files of one suite (e.g. one per set of seeds)")
    p.add_argument("--size", type=int, default=5, help="seeds per subset (default 5)")
    p.add_argument("--alpha", type=float, default=0.01)
    p.add_argument("--out", default=None, help="JSON file for the result")
    args = p.parse_args(argv)
    result = analyse([json.loads(Path(f).read_text()) for f in args.reports], args.size, args.alpha)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
