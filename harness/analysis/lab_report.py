"""Compare every method of a finished suite run with joint SFT on the worst language's held-out loss, paired by seed.

    python -m harness.analysis.lab_report SUITE [--set key=value ...] [--out results/interference_lab/NAME.json]

Reads the runs' DONE records (`<output_dir>/<suite>/<model>/<method>/seed<s>/DONE`), takes per run the largest
held-out loss over the seen languages (`eval/loss/<lang>`), and tests each method against the baseline with the
paired t-test, the exact sign test and the exact Wilcoxon test (harness.analysis.stats). Writes the raw per-seed
numbers and the tests as JSON, and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harness.analysis.stats import mean_se, paired_test
from harness.config import Suite


def collect(suite: Suite, model: str | None = None) -> dict[str, dict[int, dict[str, float]]]:
    """method label -> seed -> metrics, for every finished run of the suite's first (or given) model."""
    root = Path(suite.output_dir) / suite.suite.name / (model or suite.models[0])
    out: dict[str, dict[int, dict[str, float]]] = {}
    for spec in suite.methods:
        for seed in suite.seeds:
            done = root / spec.display / f"seed{seed}" / "DONE"
            if done.exists():
                out.setdefault(spec.display, {})[seed] = json.loads(done.read_text())["metrics"]
    return out


def worst_loss(metrics: dict[str, float], languages: tuple[str, ...]) -> tuple[float, str]:
    lang = max(languages, key=lambda x: metrics[f"eval/loss/{x}"])
    return metrics[f"eval/loss/{lang}"], lang


def compare(suite: Suite, baseline: str = "joint_sft", model: str | None = None) -> dict[str, Any]:
    """Per method: per-seed worst-language loss (and which language), mean ± SE, and the paired tests vs baseline."""
    runs = collect(suite, model)
    if baseline not in runs:
        raise ValueError(f"no finished {baseline} runs under {suite.output_dir}/{suite.suite.name}")
    langs = suite.languages.seen
    rows: dict[str, Any] = {}
    base = {s: worst_loss(m, langs)[0] for s, m in runs[baseline].items()}
    for label, by_seed in runs.items():
        seeds = sorted(by_seed)
        worst = [worst_loss(by_seed[s], langs) for s in seeds]
        values = [w[0] for w in worst]
        mean, se = mean_se(values)
        row: dict[str, Any] = {"seeds": seeds, "worst_loss": values, "worst_language": [w[1] for w in worst],
                               "mean": mean, "se": se,
                               "loss": {x: [by_seed[s][f"eval/loss/{x}"] for s in seeds] for x in langs},
                               "acc": {x: [by_seed[s].get(f"eval/acc/{x}") for s in seeds] for x in langs}}
        shared = [s for s in seeds if s in base]
        if label != baseline and len(shared) >= 2:
            row["vs_baseline"] = paired_test([worst_loss(by_seed[s], langs)[0] for s in shared],
                                             [base[s] for s in shared]).as_dict()
        rows[label] = row
    return {"suite": suite.suite.name, "config_hash": suite.config_hash(), "data": suite.resolved()["data"],
            "train": suite.resolved()["train"], "baseline": baseline, "methods": rows}


def table(report: dict[str, Any]) -> str:
    lines = ["| method | worst-language loss (mean ± SE) | Δ vs joint SFT | paired t p | Wilcoxon p | sign p |",
             "|---|---|---|---|---|---|"]
    for label, row in report["methods"].items():
        test = row.get("vs_baseline")
        cells = (f"{test['mean_diff']:+.4f} ± {test['se_diff']:.4f} | {test['p_t']:.2g} | {test['p_wilcoxon']:.3g} | "
                 f"{test['p_sign']:.3g}") if test else "— | — | — | —"
        lines.append(f"| {label} | {row['mean']:.4f} ± {row['se']:.4f} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from harness.suite import load_suite

    p = argparse.ArgumentParser(prog="python -m harness.analysis.lab_report", description=__doc__.splitlines()[0])
    p.add_argument("suite")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="JSON file for the raw per-seed numbers and the tests")
    args = p.parse_args(argv)
    report = compare(load_suite(args.suite, args.overrides))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
