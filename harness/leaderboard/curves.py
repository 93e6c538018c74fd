"""Training curves against the reference: each method's per-step training loss minus joint SFT's, paired by model,
seed, world size and suite settings, then averaged over seeds with a standard-error band.

`delta_curves` is pure: runs come in as `RunCurves` (what `run_curves` reads from MLflow), so the pairing and
the averaging are tested on synthetic series; `harness.plots.delta_curves` draws the result. A run is paired only with the reference run of the same model, seed,
world size and suite settings (`harness.leaderboard.settings`); a method without such a reference has no curve.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.plots import ALL_PANEL as ALL

Series = list[tuple[int, float]]  # (step, value)
Band = list[tuple[int, float, float, int]]  # (step, mean over seeds, standard error (NaN for one seed), seeds)


@dataclass(frozen=True)
class RunCurves:
    model: str
    method: str  # with the world-size suffix when several world sizes are shown (as in the leaderboard)
    seed: str
    shared: str = ""  # suite-settings hash (what must match the reference's)
    config: str = ""  # settings hash (suite settings + method options)
    series: Mapping[str, Series] = field(default_factory=dict)  # language -> train/loss/<language> over steps


def difference(a: Series, b: Series) -> Series:
    """a − b on the steps both have."""
    other = dict(b)
    return [(step, value - other[step]) for step, value in a if step in other]


def language_mean(series: Mapping[str, Series]) -> Series:
    """Mean over languages, step by step, on the steps every language has."""
    if not series:
        return []
    by_lang = [dict(s) for s in series.values()]
    steps = sorted(set.intersection(*(set(d) for d in by_lang)))
    return [(s, statistics.fmean(d[s] for d in by_lang)) for s in steps]


def band(per_seed: Sequence[Series]) -> Band:
    """Mean over seeds and its standard error (std / √n), on the steps every seed has."""
    if not per_seed:
        return []
    by_seed = [dict(s) for s in per_seed]
    steps = sorted(set.intersection(*(set(d) for d in by_seed)))
    out: Band = []
    for step in steps:
        values = [d[step] for d in by_seed]
        se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
        out.append((step, statistics.fmean(values), se, len(values)))
    return out


def _label(run: RunCurves, several_models: bool, several_configs: bool) -> str:
    text = run.method + (f" ({run.model})" if several_models else "")
    return text + (f" [{run.config[:8]}]" if several_configs else "")


def delta_curves(runs: Sequence[RunCurves], reference: str = "joint_sft") -> dict[str, dict[str, Band]]:
    """{label: {language or ALL: band of (loss − reference's loss)}} for every method with a paired reference run.

    The ALL panel is the per-step mean over the languages of the pair of runs, differenced then averaged over seeds.
    """
    refs = {(r.model, r.method, r.seed, r.shared): r for r in runs if r.method.split(" (N=")[0] == reference}
    several_models = len({r.model for r in runs}) > 1
    configs: dict[tuple[str, str], set[str]] = {}
    for r in runs:
        configs.setdefault((r.model, r.method), set()).add(r.config)
    diffs: dict[str, dict[str, list[Series]]] = {}
    for run in runs:
        method, sep, world = run.method.partition(" (N=")
        if method == reference:
            continue
        ref = refs.get((run.model, reference + sep + world, run.seed, run.shared))
        if ref is None:
            continue
        langs = sorted(set(run.series) & set(ref.series))
        if not langs:
            continue
        per = diffs.setdefault(_label(run, several_models, len(configs[(run.model, run.method)]) > 1), {})
        for lang in langs:
            per.setdefault(lang, []).append(difference(run.series[lang], ref.series[lang]))
        mine, theirs = ({k: s.series[k] for k in langs} for s in (run, ref))
        per.setdefault(ALL, []).append(difference(language_mean(mine), language_mean(theirs)))
    return {label: {lang: band(series) for lang, series in per.items()} for label, per in sorted(diffs.items())}


def run_curves(runs: Any, prefix: str = "train/loss/", uri: str | None = None) -> list[RunCurves]:
    """One `RunCurves` per run of a runs table: its `<prefix><language>` histories with
    the model, method (world-size suffix as in the leaderboard), seed and settings hashes that pair it."""
    from harness.leaderboard.settings import SETTINGS_COL, SHARED_COL, with_settings
    from harness.tracking import client

    if len(runs) == 0:
        return []
    runs = with_settings(runs)
    c = client(uri)
    keys = [col.removeprefix("metrics.") for col in runs.columns
            if col.startswith(f"metrics.{prefix}") and runs[col].notna().any()]
    tag = "tags.polymoo.world_size"
    world = runs[tag].astype(str) if tag in runs.columns else None
    several = world is not None and runs[tag].dropna().astype(str).nunique() > 1
    out = []
    for i, (_, run) in enumerate(runs.iterrows()):
        series = {}
        for key in keys:
            hist = c.get_metric_history(run["run_id"], key)
            if hist:
                series[key.removeprefix(prefix)] = sorted((m.step, m.value) for m in hist)
        suffix = f" (N={world.iloc[i]})" if several and world.iloc[i] not in ("1", "nan", "None") else ""
        out.append(RunCurves(str(run["tags.polymoo.model"]), str(run["tags.polymoo.method"]) + suffix,
                             str(run.get("tags.polymoo.seed")), str(run[SHARED_COL]), str(run[SETTINGS_COL]), series))
    return out
