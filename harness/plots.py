"""Plots from leaderboard tables and MLflow metric histories (matplotlib, Agg; saved as PNG files).

- `score_bars`: per-language scores, one bar per method, one panel per model (error bars: std over seeds);
- `training_curves`: `train/loss/<lang>` over steps, one panel per language, one line per method (mean over seeds);
- `pareto_scatter`: two languages' scores, one point per (model, method), the Pareto front drawn;
- `conflict_heatmap`: `moo/cos/<a>-<b>` over training (language pairs × steps); returns None when no run logged it;
- `separability_curves`: probe accuracy and silhouette per layer, before / after fine-tuning.

Every function takes plain data (no MLflow), returns the written path (or None when there is nothing to
draw) and never raises on missing series. `histories_from_mlflow` fetches the series.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Series = list[tuple[int, float]]  # (step, value)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def score_bars(table: Any, path: Path, title: str | None = None) -> Path | None:
    """Grouped bars: x = languages then seen / unseen means; one bar per method; one panel per model."""
    keys = [*table.languages, *table.groups]
    if not keys or not table.rows:
        return None
    plt = _plt()
    models = sorted({r.model for r in table.rows})
    fig, axes = plt.subplots(len(models), 1, figsize=(max(6, 0.9 * len(keys) + 2), 3.2 * len(models)), squeeze=False)
    for ax, model in zip(axes[:, 0], models, strict=True):
        rows = [r for r in table.rows if r.model == model]
        width = 0.8 / max(len(rows), 1)
        for i, r in enumerate(rows):
            xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(keys))]
            ys = [r.cells[k].mean for k in keys]
            errs = [r.cells[k].std for k in keys]
            ax.bar(xs, [0 if math.isnan(y) else y for y in ys], width, yerr=errs, capsize=2, label=r.method)
        ax.set_xticks(range(len(keys)), [k.replace("_mean", "") for k in keys], rotation=30)
        ax.axvline(len(table.languages) - 0.5, color="grey", lw=0.8, ls=":")
        ax.set_ylabel(f"eval/{table.metric}")
        ax.set_title(f"{model}")
        ax.legend(fontsize=7, ncol=min(len(rows), 4))
    fig.suptitle(title or f"per-language eval/{table.metric}")
    fig.tight_layout()
    return _save(fig, path)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point dominates (higher is better on both axes)."""
    front = []
    for i, (x, y) in enumerate(points):
        if math.isnan(x) or math.isnan(y):
            continue
        dominated = any((u >= x and v >= y) and (u > x or v > y) for j, (u, v) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def pareto_scatter(table: Any, lang_a: str, lang_b: str, path: Path) -> Path | None:
    """Scores on `lang_a` vs `lang_b` (any cell key: a language or seen_mean / unseen_mean)."""
    rows = [r for r in table.rows if lang_a in r.cells and lang_b in r.cells]
    points = [(r.cells[lang_a].mean, r.cells[lang_b].mean) for r in rows]
    if not any(not (math.isnan(x) or math.isnan(y)) for x, y in points):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for r, (x, y) in zip(rows, points, strict=True):
        ax.errorbar(x, y, xerr=r.cells[lang_a].std, yerr=r.cells[lang_b].std, fmt="o", capsize=2)
        ax.annotate(f"{r.method} ({r.model})", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = sorted(pareto_front(points), key=lambda i: points[i][0])
    if len(front) > 1:
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "k--", lw=0.8, label="Pareto front")
        ax.legend(fontsize=7)
    ax.set_xlabel(f"eval/{table.metric}/{lang_a}")
    ax.set_ylabel(f"eval/{table.metric}/{lang_b}")
    ax.set_title(f"{lang_a} vs {lang_b} across methods")
    fig.tight_layout()
    return _save(fig, path)


def mean_series(series: Sequence[Series]) -> Series:
    """Mean over seeds, step by step (steps present in every series)."""
    if not series:
        return []
    by_step: list[dict[int, float]] = [dict(s) for s in series]
    steps = sorted(set.intersection(*(set(d) for d in by_step)))
    return [(s, sum(d[s] for d in by_step) / len(by_step)) for s in steps]


def training_curves(histories: Mapping[str, Mapping[str, Sequence[Series]]], path: Path,
                    title: str = "training loss per language") -> Path | None:
    """histories: {method label: {language: [series per seed]}} -> one panel per language."""
    langs = sorted({lang for per in histories.values() for lang, s in per.items() if any(s)})
    if not langs:
        return None
    plt = _plt()
    cols = min(3, len(langs))
    nrows = math.ceil(len(langs) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 2.8 * nrows), squeeze=False)
    for ax, lang in zip(axes.flat, langs, strict=False):
        for label, per in histories.items():
            curve = mean_series([s for s in per.get(lang, []) if s])
            if curve:
                ax.plot([s for s, _ in curve], [v for _, v in curve], label=label, lw=1.2)
        ax.set_title(lang)
        ax.set_xlabel("step")
        ax.set_ylabel("train/loss")
    for ax in list(axes.flat)[len(langs):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def conflict_heatmap(cos: Mapping[str, Series], path: Path, title: str = "gradient cosine between languages") -> Path | None:
    """cos: {'<a>-<b>': [(step, cosine), ...]} -> heatmap (pairs × steps, red = conflict). None if empty."""
    pairs = sorted(k for k, s in cos.items() if s)
    if not pairs:
        return None
    plt = _plt()
    import numpy as np

    steps = sorted({step for k in pairs for step, _ in cos[k]})
    index = {s: i for i, s in enumerate(steps)}
    grid = np.full((len(pairs), len(steps)), np.nan)
    for r, k in enumerate(pairs):
        for step, v in cos[k]:
            grid[r, index[step]] = v
    fig, ax = plt.subplots(figsize=(max(5, 0.12 * len(steps) + 3), 0.35 * len(pairs) + 1.5))
    im = ax.imshow(grid, aspect="auto", cmap="RdBu", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_yticks(range(len(pairs)), pairs, fontsize=7)
    ticks = list(range(0, len(steps), max(1, len(steps) // 10)))
    ax.set_xticks(ticks, [str(steps[i]) for i in ticks])
    ax.set_xlabel("step")
    fig.colorbar(im, ax=ax, label="cos(g_a, g_b)")
    frac = float(np.nanmean(grid < 0)) if np.isfinite(grid).any() else math.nan
    ax.set_title(f"{title} (conflicting: {frac:.0%} of entries)")
    fig.tight_layout()
    return _save(fig, path)


def separability_curves(results: Mapping[str, Mapping[str, Sequence[float]]], path: Path,
                        chance: float | None = None, title: str = "language separability per layer") -> Path | None:
    """results: {'before': {'probe_acc': [...per layer], 'silhouette': [...]}, 'after': {...}}."""
    if not results:
        return None
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for label, res in results.items():
        a1.plot(range(len(res["probe_acc"])), res["probe_acc"], marker="o", label=label)
        a2.plot(range(len(res["silhouette"])), res["silhouette"], marker="o", label=label)
    if chance is not None:
        a1.axhline(chance, color="grey", ls=":", label="chance")
    a1.set_title("linear probe: language-ID accuracy")
    a2.set_title("silhouette (cosine) of language clusters")
    from matplotlib.ticker import MaxNLocator

    for ax in (a1, a2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer (0 = embeddings)")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


# -- MLflow -------------------------------------------------------------------------------------------------------
def histories_from_mlflow(runs: Any, prefix: str, uri: str | None = None) -> dict[str, dict[str, list[Series]]]:
    """{method label: {suffix: [series per run]}} for every metric key `<prefix><suffix>` of the runs.

    `runs` is a search_runs DataFrame; metric keys are read from its `metrics.*` columns (keys never logged
    by any run are simply absent).
    """
    from harness.tracking import client

    c = client(uri)
    keys = [col.removeprefix("metrics.") for col in runs.columns
            if col.startswith(f"metrics.{prefix}") and runs[col].notna().any()]
    out: dict[str, dict[str, list[Series]]] = {}
    for _, run in runs.iterrows():
        label = f"{run['tags.polymoo.method']}" + (f" ({run['tags.polymoo.model']})"
                                                    if runs["tags.polymoo.model"].nunique() > 1 else "")
        per = out.setdefault(label, {})
        for key in keys:
            hist = c.get_metric_history(run["run_id"], key)
            if hist:
                per.setdefault(key.removeprefix(prefix), []).append(sorted((m.step, m.value) for m in hist))
    return out
