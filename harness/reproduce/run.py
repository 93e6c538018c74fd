"""Run: the paper's suite at a scale, launched (trained) or read back from MLflow, then the report.

Scales. Each paper has three suites: `suites/<paper>_paper.yaml` (scale full: the real base LLMs, GPUs, torchrun),
`suites/<paper>_paper_tiny.yaml` (scale tiny: tiny twins, offline data, CPU, a few minutes; the same methods and seeds
as full, a test keeps them identical) and `suites/<paper>_paper_lab.yaml` (scale lab: tiny twins on the interference
lab, `data.source: interference`, 5 seeds; its suite says `scale: tiny` and adds the lab's comparators; verdicts on the
papers' mechanism claims from `results/paper/<paper>_lab.yaml`, harness.reproduce.lab). Standalone
files rather than an `include:` because the tiny twin must *remove* full-scale sections (lm-eval's hub tasks,
the data path) and one-level `include:` can only add or replace keys.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.config import Suite
from harness.suite import apply_overrides, read_yaml, suite_from_data
from harness.validate import ConfigError

REPO = Path(__file__).resolve().parents[2]
PAPERS = ("bkmoo", "congrad")
SCALES = ("tiny", "lab", "full")
SUITE_SCALE = {"tiny": "tiny", "lab": "tiny", "full": "full"}  # the lab runs tiny twins on the interference lab


def suite_file(paper: str, scale: str) -> Path:
    if paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; known: {', '.join(PAPERS)}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}")
    return REPO / "suites" / (f"{paper}_paper.yaml" if scale == "full" else f"{paper}_paper_{scale}.yaml")


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
    if suite.scale != SUITE_SCALE[scale]:
        raise ConfigError([f"{path}: scale is {suite.scale!r} but --scale {scale} needs {SUITE_SCALE[scale]!r}"])
    if (scale == "lab") != (suite.data.source == "interference"):
        raise ConfigError([f"{path}: --scale lab runs the interference lab (data.source interference) and only it; "
                           f"this suite's data.source is {suite.data.source!r}"])
    return suite


def with_suite_settings(suite: Suite, runs: Any) -> Any:
    """The runs whose logged settings are the suite's as it stands (`tracking.config_params`): a run made with other
    settings (another `--set`, an edited suite) is never read back as this suite's. A key the suite leaves at its
    default is absent from its params (`config._ADDED_LATER`), so a run that logged it ran another value. A setting a
    run did not log (a key added to the schema later) does not exclude it, nor does one that decides only where a run
    is written or which files it leaves (`tracking.NOT_RESULT_SETTINGS`: `reproduce` saves the final models when
    separability needs them; `polymoo run` may not have)."""
    from harness.tracking import NOT_RESULT_SETTINGS, config_params

    wanted = config_params(suite)
    for column in runs.columns:
        key = str(column).removeprefix("params.")
        if key == column or key.startswith(("version.", "run.", *NOT_RESULT_SETTINGS)):
            continue
        logged = runs[column]
        keep = logged.isna() | (logged.astype(str) == wanted[key]) if key in wanted else logged.isna()
        runs = runs[keep]
    return runs


def select_runs(suite: Suite, runs: Any) -> Any:
    """The latest finished run of every (model, method, seed) of the suite made with its current settings;
    ValueError listing what is missing."""
    want = {(m, s.display, str(seed)) for m in suite.models for s in suite.methods for seed in suite.seeds}
    cols = ("tags.polymoo.model", "tags.polymoo.method", "tags.polymoo.seed")
    if len(runs) and all(c in runs.columns for c in cols):
        runs = runs[runs["tags.polymoo.scale"] == suite.scale] if "tags.polymoo.scale" in runs.columns else runs
        runs = with_suite_settings(suite, runs)
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
                         f"(finished, scale {suite.scale}, with the suite's current settings): {shown}{more}; run without "
                         "--from-mlflow to train them")
    return runs.drop(columns=["_key"])


def run_or_read(suite: Suite, from_mlflow: bool, resume: bool, with_separability: bool) -> tuple[Suite, Any]:
    """Train the suite (saving the final models when separability needs them) unless `from_mlflow`, then read
    its runs back; returns the suite as run and one finished run per (model, method, seed)."""
    from harness.leaderboard.collect import suite_runs

    if not from_mlflow:
        suite = replace(suite, train=replace(suite.train, save_model=suite.train.save_model or with_separability))
        if suite.distributed.nproc > 1 and "LOCAL_RANK" not in os.environ:
            launch_suite(suite, resume)
        else:
            from harness.runner import run_suite

            run_suite(suite, resume=resume)
    return suite, select_runs(suite, suite_runs(suite))


def launch_suite(suite: Suite, resume: bool) -> None:
    """Train the suite under torchrun with its `distributed.nproc` processes (one node): the resolved suite is
    written to a temporary YAML and run by `polymoo run` on every rank, so the runs carry the suite's config hash and
    are read back from MLflow by `select_runs`. Several nodes: run `polymoo run SUITE --nnodes ...` on each node,
    then `polymoo reproduce PAPER --scale full --from-mlflow` (docs/distributed.md)."""
    import tempfile

    import yaml

    from harness.distributed.launch import launch

    with tempfile.TemporaryDirectory(prefix="polymoo-reproduce-") as tmp:
        path = Path(tmp) / f"{suite.suite.name}.yaml"
        path.write_text(yaml.safe_dump(suite.resolved(), sort_keys=False, allow_unicode=True))
        code = launch(suite.distributed.nproc, argv=["run", str(path), "--no-leaderboard",
                                                     *(["--resume"] if resume else [])])
    if code != 0:
        raise RuntimeError(f"torchrun with {suite.distributed.nproc} processes exited with {code} while training "
                           f"suite {suite.suite.name!r}; finished runs are kept: rerun with --resume")


def reproduce(paper: str, scale: str, overrides: list[str] | None = None, methods: list[str] | None = None,
              from_mlflow: bool = False, out_root: Path | None = None, with_separability: bool = True,
              log: bool = True, suite_path: Path | None = None, resume: bool = False) -> Path:
    """Run (or read) the paper's suite at `scale` and write the report; returns the report folder."""
    from harness.evaluate.pipeline import check_eval_config
    from harness.leaderboard.publish import log_files
    from harness.reproduce.claims import load_claims
    from harness.reproduce.report import build_report
    from harness.tracking import experiment_name

    started = time.time()
    claims = load_claims(claims_file(paper))
    suite = load_paper_suite(paper, scale, overrides, methods, suite_path)
    check_eval_config(suite)
    suite, runs = run_or_read(suite, from_mlflow, resume, with_separability)
    final = build_report(out_root or REPO / "results" / "reproduce", paper, scale, suite, runs, claims,
                         from_mlflow=from_mlflow, with_separability=with_separability, started=started)
    if log:
        log_files(final, experiment_name(suite), f"reproduce/{paper}/{scale}", suite.tracking.uri,
                  {"polymoo.suite": suite.suite.name, "polymoo.paper": paper, "polymoo.scale": scale},
                  artifact_dir="reproduce")
    return final
