"""`polymoo reproduce bkmoo|congrad`: run a paper's suite (or read its runs from MLflow) and write a report
of the paper's public claims: claim, measured value, scale, verdict, with leaderboards and plots.

Scales. Each paper has two suites that share methods and seeds (a test keeps them identical):
`suites/<paper>_paper.yaml` (scale full: the real base LLMs, GPUs, torchrun) and
`suites/<paper>_paper_tiny.yaml` (scale tiny: tiny twins, offline data, CPU, a few minutes). Two standalone
files rather than an `include:` because the tiny twin must *remove* full-scale sections (lm-eval's hub tasks,
the data path) and one-level `include:` can only add or replace keys.

Claims live in `results/paper/<paper>.yaml` (see harness.evaluate.claims for the verdict rules). Reports go
to `results/reproduce/<paper>_<scale>/` (report.md, report.json, leaderboards, plots), built in a temporary
folder and moved in place only when complete, and are logged to MLflow (`<experiment>/reports`).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.config import Suite, apply_overrides, read_yaml, suite_from_data
from harness.validate import ConfigError

REPO = Path(__file__).resolve().parent.parent
PAPERS = ("bkmoo", "congrad")
SCALES = ("tiny", "full")

SCALE_NOTES = {
    "tiny": ("Tiny scale runs random-init tiny twins (a few M parameters) for a few dozen steps on offline data, "
             "on CPU. It shows that the reproduction runs end to end — the same methods, data order, evaluation, "
             "tracking and report as at full scale — and how the methods differ mechanically (losses, conflicts, "
             "step time). It cannot show the paper's figures: the models start from random weights, scores sit "
             "near chance (1/4 on the CLDR multiple choice), differences are mostly noise even when a t-test over "
             "3 seeds flags them, and single-process memory says nothing about distributed 8B training. Every "
             "quality or memory claim is therefore 'not comparable at this scale'."),
    "full": ("Full scale runs the real base LLMs named by the paper on GPUs. Data, language split, benchmarks and "
             "hyper-parameters the paper does not publish are reconstructions (see the suite file), so a verdict "
             "compares the paper's claim with this reconstruction, not with the paper's exact setup."),
}


def suite_file(paper: str, scale: str) -> Path:
    if paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; known: {', '.join(PAPERS)}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")
    return REPO / "suites" / (f"{paper}_paper.yaml" if scale == "full" else f"{paper}_paper_tiny.yaml")


def claims_file(paper: str) -> Path:
    return REPO / "results" / "paper" / f"{paper}.yaml"


def load_paper_suite(paper: str, scale: str, overrides: list[str] | None = None,
                     methods: list[str] | None = None, suite_path: Path | None = None) -> Suite:
    """The paper's suite at `scale`, restricted to `methods` (names or labels) before validation, so a
    suite naming methods that are not registered yet can still run the ones that are."""
    path = suite_path or suite_file(paper, scale)
    data = read_yaml(path)
    if methods:
        kept = [m for m in data.get("methods", []) if m.get("name") in methods or m.get("label") in methods]
        if not kept:
            names = [m.get("label") or m.get("name") for m in data.get("methods", [])]
            raise ConfigError([f"{path}: --method {methods} selects none of the suite's methods {names}"])
        data["methods"] = kept
    try:
        data = apply_overrides(data, overrides or [])
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError([f"{path}: --set: cannot apply override ({err})"]) from err
    suite = suite_from_data(data, str(path))
    if suite.scale != scale:
        raise ConfigError([f"{path}: scale is {suite.scale!r} but --scale {scale} was asked"])
    return suite


def select_runs(suite: Suite, runs: Any) -> Any:
    """The latest finished run of every (model, method, seed) of the suite; ValueError listing what is missing."""
    want = {(m, s.display, str(seed)) for m in suite.models for s in suite.methods for seed in suite.seeds}
    cols = ("tags.polymoo.model", "tags.polymoo.method", "tags.polymoo.seed")
    if len(runs) and all(c in runs.columns for c in cols):
        runs = runs[runs["tags.polymoo.scale"] == suite.scale] if "tags.polymoo.scale" in runs.columns else runs
        keys = list(zip(*(runs[c].astype(str) for c in cols), strict=True))
        runs = runs.assign(_key=keys)
        runs = runs[runs["_key"].isin(want)]
        if "start_time" in runs.columns:
            runs = runs.sort_values("start_time")
        runs = runs.drop_duplicates("_key", keep="last")
        have = set(runs["_key"])
    else:
        have = set()
    missing = sorted(want - have)
    if missing:
        shown = ", ".join(f"{m}/{meth}/seed{s}" for m, meth, s in missing[:8])
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        raise ValueError(f"suite {suite.suite.name!r}: {len(missing)} of {len(want)} runs missing from MLflow "
                         f"(finished, scale {suite.scale}): {shown}{more}; run without --from-mlflow to train them")
    return runs.drop(columns=["_key"])


def _tables(suite: Suite, runs: Any, reference: str) -> dict[str, Any]:
    from harness.leaderboard import aggregate

    tables: dict[str, Any] = {}
    for metric in ("bench", "acc", "loss"):
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
    from harness.evaluate.claims import Measurement
    from harness.models.loading import load_model
    from harness.plots import separability_curves
    from harness.runner import run_dir_for

    stats: dict[str, list[Any]] = {"probe_acc": [], "silhouette": []}
    seed = suite.seeds[0]
    langs = list(suite.languages.all)
    for model_name in suite.models:
        base, tok = load_model(model_name, suite.scale, suite.train.dtype)
        before = separability(base, tok, langs)
        curves = {"before (base)": {"probe_acc": before.probe_acc, "silhouette": before.silhouette}}
        for spec in suite.methods:
            final = run_dir_for(suite, model_name, spec, seed) / "final"
            if not final.exists():
                notes.append(f"separability: no saved model at {final} (train.save_model false?)")
                continue
            model, tok2, _ = load_checkpoint(final, suite.train.dtype)
            after = separability(model, tok2, langs)
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
    if primary.groups == ["seen_mean", "unseen_mean"]:
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


def _replace_dir(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def reproduce(paper: str, scale: str, overrides: list[str] | None = None, methods: list[str] | None = None,
              from_mlflow: bool = False, out_root: Path | None = None, with_separability: bool = True,
              log: bool = True, suite_path: Path | None = None, resume: bool = False) -> Path:
    """Run (or read) the paper's suite at `scale` and write the report; returns the report folder."""
    from harness.evaluate.claims import evaluate_claim, load_claims
    from harness.evaluate.pipeline import check_eval_config
    from harness.evaluate.report import write_report
    from harness.leaderboard import log_files, suite_runs, write_all
    from harness.tracking import experiment_name

    started = time.time()
    claims = load_claims(claims_file(paper))
    suite = load_paper_suite(paper, scale, overrides, methods, suite_path)
    check_eval_config(suite)
    if from_mlflow:
        runs = select_runs(suite, suite_runs(suite))
    else:
        from harness.runner import run_suite

        suite = replace(suite, train=replace(suite.train, save_model=suite.train.save_model or with_separability))
        run_suite(suite, resume=resume)
        runs = select_runs(suite, suite_runs(suite))
    reference = claims.get("reference", "joint_sft")
    tables = _tables(suite, runs, reference)
    out_root = out_root or REPO / "results" / "reproduce"
    final = out_root / f"{paper}_{scale}"
    tmp = out_root / f".{paper}_{scale}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "plots").mkdir(parents=True)
    try:
        notes: list[str] = []
        for metric in ("bench", "acc", "loss"):
            if metric in tables:
                write_all(tables[metric], tmp / "leaderboards", f"{suite.suite.name}_{metric}",
                          f"{suite.suite.name} — eval/{metric} (Δ vs {reference})")
        sep = _separability(suite, tmp, notes) if with_separability else None
        plots = _plots(suite, runs, tables, tmp, notes)
        results = [evaluate_claim(c, tables, reference, scale, claims["paper"].get("scale", "full"), sep)
                   for c in claims["claims"]]
        meta = {"paper": claims["paper"], "scale": scale, "suite": suite.suite.name, "suite_file": suite.source,
                "reference": reference, "source": "MLflow (existing runs)" if from_mlflow else "trained by this command",
                "runs": int(len(runs)), "models": list(suite.models), "methods": [m.display for m in suite.methods],
                "seeds": list(suite.seeds), "config_hashes": sorted(set(runs.get("tags.polymoo.config_hash", []))),
                "run_ids": sorted(runs["run_id"]), "runtime_s": round(time.time() - started, 1),
                "scale_note": SCALE_NOTES[scale], "notes": notes,
                "date": time.strftime("%Y-%m-%d %H:%M:%S"), "tracking_uri": _uri(suite)}
        write_report(tmp, meta, results, tables, [p.relative_to(tmp) for p in plots])
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _replace_dir(tmp, final)
    if log:
        log_files(final, experiment_name(suite), f"reproduce/{paper}/{scale}", suite.tracking.uri,
                  {"polymoo.suite": suite.suite.name, "polymoo.paper": paper, "polymoo.scale": scale},
                  artifact_dir="reproduce")
    return final


def _uri(suite: Suite) -> str:
    from harness.tracking import tracking_uri

    return tracking_uri(suite.tracking.uri)
