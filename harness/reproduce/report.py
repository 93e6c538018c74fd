"""Report: the reproduction report of a paper at a scale, built from its runs: leaderboards per metric, plots,
separability before / after, claim verdicts, report.md (human) and report.json (machine).

Reports go to `results/reproduce/<paper>_<scale>/`, built in a temporary folder and moved in place only when
complete (`build_report`); `harness.reproduce.run.reproduce` then logs the folder to MLflow (`<experiment>/reports`).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from harness.config import Suite
from harness.leaderboard.aggregate import aggregate
from harness.leaderboard.render import to_markdown, write_all
from harness.reproduce.claims import ClaimResult, Measurement, evaluate_claim

METRICS = ("bench", "acc", "loss")

SCALE_NOTES = {
    "tiny": ("Tiny scale runs random-init tiny twins (a few M parameters) for a few dozen steps on offline data, "
             "on CPU. It shows that the reproduction runs end to end — the same methods, data order, evaluation, "
             "tracking and report as at full scale — and how the methods differ mechanically (losses, conflicts, "
             "step time). It cannot show the paper's figures: the models start from random weights, scores sit "
             "near chance (1/4 on the CLDR multiple choice), differences are mostly noise even when a t-test over "
             "3 seeds flags them, and single-process memory says nothing about distributed 8B training. Every "
             "quality or memory claim is therefore 'not comparable at this scale'."),
    "lab": ("Lab scale runs tiny twins on the controlled-interference lab (docs/interference_lab.md): synthetic "
            "languages over one task, where a dialled fraction of answers conflicts between languages, 5 seeds, on "
            "CPU. The paper's figures (benchmark points on 8B models, GPU memory) stay 'not comparable at this "
            "scale'; what the lab tests with power are the mechanisms the claims rest on: the 'Lab verdicts' "
            "section compares the methods on the worst language's held-out answer loss, paired by seed "
            "(results/paper/<paper>_lab.yaml)."),
    "full": ("Full scale runs the real base LLMs named by the paper on GPUs. Data, language split, benchmarks and "
             "hyper-parameters the paper does not publish are reconstructions (see the suite file), so a verdict "
             "compares the paper's claim with this reconstruction, not with the paper's exact setup."),
}


def build_report(out_root: Path, paper: str, scale: str, suite: Suite, runs: Any, claims: dict[str, Any], *,
                 from_mlflow: bool, with_separability: bool, started: float) -> Path:
    """Write the report of `runs` to `out_root/<paper>_<scale>` (replacing any previous one only when the new one is
    complete; nothing is left behind on failure); returns that folder."""
    reference = claims.get("reference", "joint_sft")
    tables = _tables(suite, runs, reference)
    final = out_root / f"{paper}_{scale}"
    tmp = out_root / f".{paper}_{scale}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "plots").mkdir(parents=True)
    try:
        notes: list[str] = []
        for metric in METRICS:
            if metric in tables:
                write_all(tables[metric], tmp / "leaderboards", f"{suite.suite.name}_{metric}",
                          f"{suite.suite.name} — eval/{metric} (Δ vs {reference})")
        sep = _separability(suite, tmp, notes) if with_separability else None
        plots = _plots(suite, runs, tables, tmp, notes)
        results = [evaluate_claim(c, tables, reference, scale, claims["paper"].get("scale", "full"), sep)
                   for c in claims["claims"]]
        lab = _lab_section(paper, suite, runs, sep) if scale == "lab" else {}
        meta = {"paper": claims["paper"], "scale": scale, "suite": suite.suite.name, "suite_file": suite.source,
                "reference": reference, "source": "MLflow (existing runs)" if from_mlflow else "trained by this command",
                "runs": int(len(runs)), "models": list(suite.models), "methods": [m.display for m in suite.methods],
                "seeds": list(suite.seeds), "config_hashes": sorted(set(runs.get("tags.polymoo.config_hash", []))),
                "run_ids": sorted(runs["run_id"]), "runtime_s": round(time.time() - started, 1),
                "scale_note": SCALE_NOTES[scale], "notes": notes,
                "date": time.strftime("%Y-%m-%d %H:%M:%S"), "tracking_uri": _uri(suite), **lab}
        write_report(tmp, meta, results, tables, [p.relative_to(tmp) for p in plots])
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace_dir(tmp, final)
    return final


def _lab_section(paper: str, suite: Suite, runs: Any, sep: dict[str, list[Any]] | None) -> dict[str, Any]:
    """The lab verdicts (harness.reproduce.lab) as report.json entries and the report.md section."""
    from harness.reproduce.lab import evaluate_lab_claims, lab_claims_file, lab_markdown, load_lab_claims

    claims = load_lab_claims(lab_claims_file(paper))
    verdicts = evaluate_lab_claims(claims, runs, suite.languages.seen, sep)
    return {"lab_verdicts": [v.as_dict() for v in verdicts],
            "lab_markdown": lab_markdown(verdicts, float(claims.get("alpha", 0.01)))}


def _tables(suite: Suite, runs: Any, reference: str) -> dict[str, Any]:
    tables: dict[str, Any] = {}
    for metric in METRICS:
        try:
            tables[metric] = aggregate(runs, metric, reference, suite.languages.all)
        except ValueError:
            continue
    if not tables:
        raise ValueError(f"runs of {suite.suite.name!r} hold no eval metrics")
    tables["primary"] = tables.get("bench", tables.get("acc", tables.get("loss")))
    tables["perf"] = tables["primary"]
    return tables


def _separability(suite: Suite, out: Path, notes: list[str]) -> dict[str, list[Any]]:
    """Probe accuracy / silhouette before (base model) and after (seed-0 run of each method), per model."""
    import numpy as np

    from harness.analysis.separability import separability
    from harness.evaluate.checkpoint import load_checkpoint
    from harness.models.loading import load_model
    from harness.plots import separability_curves
    from harness.runner import run_dir_for

    stats: dict[str, list[Any]] = {"probe_acc": [], "silhouette": []}
    seed = suite.seeds[0]
    langs = list(suite.languages.all)
    texts = None  # CLDR names; the lab's languages have none: their parallel held-out items instead
    if suite.data.source == "interference":
        from harness.data.interference import parallel_texts

        texts = parallel_texts(suite.data, langs)
        notes.append("separability: on the lab's parallel held-out items (prompt and gloss), not CLDR names")
    for model_name in suite.models:
        base, tok = load_model(model_name, suite.scale, suite.train.weights_dtype, init=suite.init)
        before = separability(base, tok, langs, texts=texts)
        curves = {"before (base)": {"probe_acc": before.probe_acc, "silhouette": before.silhouette}}
        for spec in suite.methods:
            final = run_dir_for(suite, model_name, spec, seed) / "final"
            if not final.exists():
                notes.append(f"separability: no saved model at {final} (train.save_model false?)")
                continue
            model, tok2, _ = load_checkpoint(final, suite.train.dtype)
            after = separability(model, tok2, langs, texts=texts)
            curves[spec.display] = {"probe_acc": after.probe_acc, "silhouette": after.silhouette}
            for stat in stats:
                delta = float(np.mean(getattr(after, stat)) - np.mean(getattr(before, stat)))
                stats[stat].append(Measurement(model_name, spec.display, delta, "base model", seeds=1))
        separability_curves(curves, out / "plots" / f"separability_{model_name}.png", chance=before.chance,
                            title=f"{model_name}: language separability per layer (seed {seed})")
        (out / f"separability_{model_name}.json").write_text(json.dumps(curves, indent=2))
    return stats


def _plots(suite: Suite, runs: Any, tables: dict[str, Any], out: Path, notes: list[str]) -> list[Path]:
    from harness import plots

    primary = tables["primary"]
    made = [plots.score_bars(primary, out / "plots" / "scores.png"),
            plots.score_bars(tables["loss"], out / "plots" / "heldout_loss.png") if "loss" in tables else None]
    if {"seen_mean", "unseen_mean"} <= set(primary.groups):  # (seen_worst may sit beside them)
        made.append(plots.pareto_scatter(primary, "seen_mean", "unseen_mean", out / "plots" / "pareto_seen_unseen.png"))
    if len(primary.languages) >= 2:
        a, b = primary.languages[:2]
        made.append(plots.pareto_scatter(primary, a, b, out / "plots" / f"pareto_{a}_{b}.png"))
    uri = suite.tracking.uri
    curves = plots.training_curves(plots.histories_from_mlflow(runs, "train/loss/", uri),
                                   out / "plots" / "training_curves.png")
    if curves is None:
        notes.append("training curves: no run logged train/loss/<lang> (the self-rewarding loop logs DPO metrics "
                     "instead), so there are none")
    made.append(curves)
    made.append(_delta_plot(runs, tables, out, uri, notes))
    cos = plots.histories_from_mlflow(runs, "moo/cos/", uri)
    drawn = False
    for label, per in cos.items():
        series = {pair: plots.mean_series(s) for pair, s in per.items()}
        path = plots.conflict_heatmap(series, out / "plots" / f"conflict_{label.replace(' ', '_')}.png",
                                      title=f"{label}: gradient cosine between languages")
        drawn = drawn or path is not None
        made.append(path)
    if not drawn:
        notes.append("conflict heatmap: no run logged moo/cos/<a>-<b> metrics (joint SFT computes no per-language "
                     "gradients), so there is none")
    return [p for p in made if p is not None]


def _delta_plot(runs: Any, tables: dict[str, Any], out: Path, uri: str | None, notes: list[str]) -> Path | None:
    """Training loss minus the reference's, paired by model, seed and settings (mean ± s.e. over seeds)."""
    from harness import plots
    from harness.leaderboard.curves import delta_curves, run_curves

    reference = tables["primary"].reference
    path = plots.delta_curves(delta_curves(run_curves(runs, "train/loss/", uri), reference),
                              out / "plots" / "training_delta.png", reference)
    if path is None:
        notes.append(f"training Δ curves: no method has a {reference} run of the same model, seed and settings with "
                     "train/loss/<lang> histories, so there are none")
    return path


def _replace_dir(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _uri(suite: Suite) -> str:
    from harness.tracking import tracking_uri

    return tracking_uri(suite.tracking.uri)


def _value(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {x}" for k, x in v.items())
    return str(v)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def write_report(out: Path, meta: dict[str, Any], results: list[ClaimResult], tables: dict[str, Any],
                 plots: list[Path]) -> None:
    paper = meta["paper"]
    lines = [
        f"# Reproduction report — {paper.get('name')} (arXiv {paper.get('arxiv')}) at scale `{meta['scale']}`",
        "",
        f"- command: `polymoo reproduce {paper.get('key')} --scale {meta['scale']}`; suite `{meta['suite']}` "
        f"({meta['suite_file']}); runs: {meta['source']}",
        f"- models: {', '.join(meta['models'])}; methods: {', '.join(meta['methods'])}; seeds: "
        f"{', '.join(map(str, meta['seeds']))} ({meta['runs']} runs); reference: `{meta['reference']}`",
        f"- date: {meta['date']}; runtime: {meta['runtime_s']:.0f} s; MLflow: {meta['tracking_uri']}",
        "",
        "## What this scale can and cannot show",
        "",
        meta["scale_note"],
        "",
        "## Claims",
        "",
        "| claim | public value | measured here | scale | verdict |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        measured = r.summary or "—"
        lines.append(f"| **{r.id}**: {r.claim} | {_value(r.value)} {('(' + r.unit + ')') if r.unit and r.value != 'not public' else ''} "
                     f"| {measured} | {meta['scale']} | **{r.verdict}** |")
    lines += ["", *meta.get("lab_markdown", []), "Notes per claim:", ""]
    for r in results:
        if r.note:
            lines.append(f"- `{r.id}`: {r.note}")
    lines += ["", "Verdicts: *reproduced* / *not reproduced* apply the claim's check at the paper's scale; "
              "*not comparable at this scale* reports the value measured here without judging the paper; "
              "*no public value to compare* marks what the paper does not publish (no number is invented); "
              "*not measured* means the runs lack a needed method or metric.", ""]
    for metric in METRICS:
        if metric in tables:
            lines += [f"## Leaderboard — eval/{metric}", "", to_markdown(tables[metric])]
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({p.as_posix()})" for p in plots]
        lines.append("")
    if meta["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in meta["notes"]] + [""]
    (out / "report.md").write_text("\n".join(lines))
    data = {**{k: v for k, v in meta.items() if k != "lab_markdown"}, "claims": [r.as_dict() for r in results],
            "plots": [p.as_posix() for p in plots]}
    (out / "report.json").write_text(json.dumps(_clean(data), indent=2, default=str))
