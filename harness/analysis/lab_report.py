"""Compare every method of a finished suite run with joint SFT on the worst language's held-out loss, paired by seed.

    python -m harness.analysis.lab_report SUITE [--set key=value ...] [--metric answer_loss|loss]
                                          [--out results/interference_lab/NAME.json]

Reads the runs' DONE records (`<output_dir>/<suite>/<model>/<method>/seed<s>/DONE`), takes per run the largest
held-out loss over the seen languages, and tests each method against the baseline with the paired t-test, the exact
sign test and the exact Wilcoxon test (harness.analysis.stats). The loss is `eval/answer_loss/<lang>` by default (the
lab's answer words, where the conflict lives: docs/interference_lab.md) or `eval/loss/<lang>` (every response token).
Writes the raw per-seed numbers and the tests as JSON, and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from harness.analysis.stats import mean_se, paired_test
from harness.config import MethodSpec, Suite
from harness.tracking import NOT_RESULT_SETTINGS, config_params, resolved_params
from harness.validate import to_dict


def collect(suite: Suite, model: str | None = None) -> dict[str, dict[int, dict[str, float]]]:
    """method label -> seed -> metrics, for every finished run of the suite's first (or given) model. A run made with
    other settings than the suite's as it stands (another `--set`, an older version of the suite) is refused, naming
    the keys: a paired test must compare the methods, not two settings."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for spec, seed, done in done_records(suite, model):
        check_settings(done.parent, suite, spec)
        out.setdefault(spec.display, {})[seed] = json.loads(done.read_text())["metrics"]
    return out


def done_records(suite: Suite, model: str | None = None) -> list[tuple[MethodSpec, int, Path]]:
    """(method, seed, DONE file) of every finished run of the suite's methods and seeds."""
    root = Path(suite.output_dir) / suite.suite.name / (model or suite.models[0])
    found = [(spec, seed, root / spec.display / f"seed{seed}" / "DONE") for spec in suite.methods for seed in suite.seeds]
    return [(spec, seed, done) for spec, seed, done in found if done.exists()]


def environment(suite: Suite, model: str | None = None) -> dict[str, list[str]]:
    """Every value of each environment key (CPU, threads, device, commit) over the suite's finished runs; runs
    finished before DONE recorded it count as "(not recorded)"."""
    seen: dict[str, set[str]] = {}
    for _, _, done in done_records(suite, model):
        recorded = json.loads(done.read_text()).get("environment") or {"cpu": "(not recorded)"}
        for key, value in recorded.items():
            seen.setdefault(key, set()).add(str(value))
    return {key: sorted(values) for key, values in sorted(seen.items())}


def result_setting_changes(recorded: dict[str, Any], suite: Suite) -> dict[str, tuple[str, str]]:
    """{key: (the run's, the suite's)} for every setting that can change a result and differs between a run's resolved
    config (its config.yaml) and the suite's; a key on one side only counts (a key at its default is left out of a
    resolved config, so a run without `data.answer_vocabulary` ran the default)."""
    absent = "(absent)"
    run, now = resolved_params(recorded), config_params(suite)
    return {k: (run.get(k, absent), now.get(k, absent)) for k in sorted(run.keys() | now.keys())
            if not k.startswith(NOT_RESULT_SETTINGS) and run.get(k, absent) != now.get(k, absent)}


def check_settings(run_dir: Path, suite: Suite, spec: MethodSpec) -> None:
    """ValueError unless the run in `run_dir` (its config.yaml) was made with the suite's settings and method entry."""
    path = run_dir / "config.yaml"
    if not path.exists():
        raise ValueError(f"{run_dir}: no config.yaml, so its settings cannot be checked against {suite.suite.name}'s")
    recorded = yaml.safe_load(path.read_text())
    changes = result_setting_changes(recorded, suite)
    entries = [m for m in recorded.get("methods", []) if (m.get("label") or m.get("name")) == spec.display]
    wanted = to_dict(spec)
    if [e for e in entries if e != wanted] or not entries:
        changes["methods." + spec.display] = (str(entries[0] if entries else "(absent)"), str(wanted))
    if changes:
        listed = "; ".join(f"{k}: {run} (run) vs {now} (suite)" for k, (run, now) in changes.items())
        raise ValueError(f"{run_dir} was made with other settings than suite {suite.suite.name} now: {listed}. "
                         "Rerun it, or pass the run's settings with --set, or read another output_dir")


METRICS = ("answer_loss", "loss")


def worst_loss(metrics: dict[str, float], languages: tuple[str, ...], metric: str = "loss") -> tuple[float, str]:
    keys = {x: f"eval/{metric}/{x}" for x in languages}
    missing = [k for k in keys.values() if k not in metrics]
    if missing:
        raise ValueError(f"run metrics lack {missing}: rerun the suite (eval/answer_loss comes from the lab's "
                         "evaluation, data.source interference) or pass --metric loss")
    lang = max(languages, key=lambda x: metrics[keys[x]])
    return metrics[keys[lang]], lang


def compare(suite: Suite, baseline: str = "joint_sft", model: str | None = None,
            metric: str = "answer_loss") -> dict[str, Any]:
    """Per method: per-seed worst-language loss (and which language), mean ± SE, and the paired tests vs baseline."""
    if metric not in METRICS:
        raise ValueError(f"--metric {metric!r}: expected one of {', '.join(METRICS)}")
    runs = collect(suite, model)
    if baseline not in runs:
        raise ValueError(f"no finished {baseline} runs under {suite.output_dir}/{suite.suite.name}")
    langs = suite.languages.seen
    rows: dict[str, Any] = {}
    base = {s: worst_loss(m, langs, metric)[0] for s, m in runs[baseline].items()}
    for label, by_seed in runs.items():
        seeds = sorted(by_seed)
        worst = [worst_loss(by_seed[s], langs, metric) for s in seeds]
        values = [w[0] for w in worst]
        mean, se = mean_se(values)
        row: dict[str, Any] = {"seeds": seeds, "worst_loss": values, "worst_language": [w[1] for w in worst],
                               "mean": mean, "se": se,
                               "loss": {x: [by_seed[s][f"eval/loss/{x}"] for s in seeds] for x in langs},
                               "answer_loss": {x: [by_seed[s].get(f"eval/answer_loss/{x}") for s in seeds] for x in langs},
                               "acc": {x: [by_seed[s].get(f"eval/acc/{x}") for s in seeds] for x in langs},
                               "step_time_s": [by_seed[s].get("perf/mean_step_time_s") for s in seeds],
                               "step_time_vs_baseline": step_time_ratio(by_seed, runs[baseline])}
        shared = [s for s in seeds if s in base]
        if label != baseline and len(shared) >= 2:
            row["vs_baseline"] = paired_test([worst_loss(by_seed[s], langs, metric)[0] for s in shared],
                                             [base[s] for s in shared]).as_dict()
        rows[label] = row
    return {"suite": suite.suite.name, "config_hash": suite.config_hash(), "metric": f"eval/{metric}",
            "data": suite.resolved()["data"],
            "train": suite.resolved()["train"], "baseline": baseline, "environment": environment(suite, model),
            "methods": rows}


def step_time_ratio(runs: dict[int, dict[str, float]], baseline: dict[int, dict[str, float]]) -> float | None:
    """Median over the seeds both ran of the method's mean step time over the baseline's (a ratio between runs of
    one suite invocation: the machine's speed cancels); None without shared timed seeds."""
    key = "perf/mean_step_time_s"
    ratios = sorted(runs[s][key] / baseline[s][key] for s in runs
                    if s in baseline and runs[s].get(key) and baseline[s].get(key))
    if not ratios:
        return None
    mid = len(ratios) // 2
    return ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2


def table(report: dict[str, Any]) -> str:
    lines = [f"| method | worst-language {report.get('metric', 'eval/loss')} (mean ± SE) | Δ vs joint SFT | paired t p "
             "| Wilcoxon p | sign p |",
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
    p.add_argument("--metric", choices=METRICS, default="answer_loss",
                   help="answer_loss: the answer words (default); loss: every response token")
    p.add_argument("--out", default=None, help="JSON file for the raw per-seed numbers and the tests")
    args = p.parse_args(argv)
    report = compare(load_suite(args.suite, args.overrides), metric=args.metric)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
