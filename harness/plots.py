"""Plots from leaderboard tables and MLflow metric histories (matplotlib, Agg; saved as PNG files).

- `score_bars`: per-language scores, one bar per method, one panel per model (error bars: standard error over
  seeds; the chance level of multiple-choice scores drawn as a dashed line);
- `training_curves`: `train/loss/<lang>` over steps, one panel per language, one line per method (mean over seeds);
- `delta_curves`: each method's training loss minus joint SFT's (same model, seed and settings), mean over seeds
  with a standard-error band (`harness.leaderboard.curves`);
- `pareto_scatter`: two languages' scores, one numbered point per leaderboard row, the Pareto front drawn, the
  numbers spread so that none overprints another (`spread_labels`) and named in a legend;
- `conflict_heatmap`: `moo/cos/<a>-<b>` over training (language pairs × steps); returns None when no run logged it;
- `separability_curves`: probe accuracy and silhouette per layer, before / after fine-tuning.

Every function takes plain data (no MLflow), returns the written path (or None when there is nothing to
draw) and never raises on missing series. `histories_from_mlflow` fetches the series
(`harness.leaderboard.curves.run_curves` those of the Δ curves).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Series = list[tuple[int, float]]  # (step, value)
ALL_PANEL = "all languages (mean)"  # the delta_curves panel drawn first


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
            errs = [0.0 if math.isnan(r.cells[k].sem) else r.cells[k].sem for k in keys]
            ax.bar(xs, [0 if math.isnan(y) else y for y in ys], width, yerr=errs, capsize=2,
                   label=r.method + (f" [{r.config[:8]}]" if r.marks else ""))
        _chance_steps(ax, [table.chance.get(k) for k in keys])
        ax.set_xticks(range(len(keys)), [k.replace("_mean", "") for k in keys], rotation=30)
        ax.axvline(len(table.languages) - 0.5, color="grey", lw=0.8, ls=":")
        ax.set_ylabel(f"eval/{table.metric}")
        ax.set_title(f"{model}")
        ax.legend(fontsize=7, ncol=min(len(rows), 4))
    fig.suptitle(title or f"per-language eval/{table.metric} (error bars: standard error over seeds)")
    fig.tight_layout()
    return _save(fig, path)


def _chance_steps(ax: Any, chance: Sequence[float | None]) -> None:
    """A dashed segment at the chance level over each x position that has one (labelled once)."""
    labelled = False
    for j, level in enumerate(chance):
        if level is not None:
            ax.hlines(level, j - 0.45, j + 0.45, colors="k", linestyles="--", lw=1.0, zorder=3,
                      label=None if labelled else "chance")
            labelled = True


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


def _initial_centres(anchors: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]],
                     offset: tuple[float, float], gap: float) -> list[list[float]]:
    """Each box up-right of its anchor; boxes whose anchors (nearly) coincide with earlier ones stacked below those,
    in order, so a cluster of equal scores reads as a numbered column."""
    pos: list[list[float]] = []
    for i, ((x, y), (w, h)) in enumerate(zip(anchors, sizes, strict=True)):
        k = sum(1 for j in range(i) if abs(anchors[j][0] - x) < w and abs(anchors[j][1] - y) < h)
        pos.append([x + offset[0] + w / 2, y + offset[1] + h / 2 - k * (h + gap)])
    return pos


def spread_labels(anchors: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]],
                  offset: tuple[float, float] = (4.0, 4.0), gap: float = 1.0, iters: int = 400) -> list[tuple[float, float]]:
    """Centres for label boxes (display units: pixels) near their anchors such that no two boxes overlap.

    Boxes start up-right of their anchors (clusters stacked, `_initial_centres`); overlapping pairs are pushed
    apart, vertically unless a sideways move is much shorter (coincident centres: the later one down), until none
    overlap. If that has not converged after `iters` sweeps, the boxes are stacked in one column right of the
    anchors, sorted by anchor height.
    """
    pos = _initial_centres(anchors, sizes, offset, gap)
    for _ in range(iters):
        moved = False
        for i in range(len(pos)):
            for j in range(i + 1, len(pos)):
                dx, dy = pos[j][0] - pos[i][0], pos[j][1] - pos[i][1]
                ox = (sizes[i][0] + sizes[j][0]) / 2 + gap - abs(dx)
                oy = (sizes[i][1] + sizes[j][1]) / 2 + gap - abs(dy)
                if ox <= 0 or oy <= 0:
                    continue
                moved = True
                axis, over, d = (1, oy, dy) if oy <= 2 * ox else (0, ox, dx)
                sign = (1.0 if d > 0 else -1.0) if d != 0 else -1.0  # coincident: j goes down (or left)
                pos[i][axis] -= sign * (over / 2 + 0.01)
                pos[j][axis] += sign * (over / 2 + 0.01)
        if not moved:
            return [(x, y) for x, y in pos]
    x0 = max((x for x, _ in anchors), default=0.0) + offset[0] + max((w for w, _ in sizes), default=0.0) / 2
    order = sorted(range(len(pos)), key=lambda k: anchors[k][1])
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(pos)
    y = min((a[1] for a in anchors), default=0.0)
    for k in order:
        out[k] = (x0, y + sizes[k][1] / 2)
        y += sizes[k][1] + gap
    return out


def place_labels(ax: Any, points: Sequence[tuple[float, float]], texts: Sequence[str]) -> list[Any]:
    """Write `texts` next to `points` (data coordinates) with `spread_labels`, a thin leader line from a label
    that had to move to its point; returns the text artists."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    anchors = [tuple(ax.transData.transform(p)) for p in points]
    artists = [ax.text(0, 0, t, fontsize=7, ha="center", va="center", zorder=5,
                       bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "0.6", "lw": 0.5}) for t in texts]
    sizes = []
    for a in artists:
        box = a.get_window_extent(renderer)
        sizes.append((box.width, box.height))
    centres = spread_labels(anchors, sizes, offset=(3.0, 3.0), gap=1.5)
    inverse = ax.transData.inverted()
    for a, (cx, cy), (ax0, ay0), (w, h) in zip(artists, centres, anchors, sizes, strict=True):
        a.set_position(inverse.transform((cx, cy)))
        if math.hypot(cx - ax0, cy - ay0) > max(w, h) + 4:
            ax.annotate("", xy=inverse.transform((ax0, ay0)), xytext=inverse.transform((cx, cy)),
                        arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5"}, zorder=4)
    return artists


def pareto_scatter(table: Any, lang_a: str, lang_b: str, path: Path) -> Path | None:
    """Scores on `lang_a` vs `lang_b` (any cell key: a language or seen_mean / unseen_mean): one numbered point per
    row (error bars: standard error over seeds), the numbers named in a legend beside the axes, the chance level
    of either axis drawn where known."""
    rows = [r for r in table.rows if lang_a in r.cells and lang_b in r.cells]
    points = [(r.cells[lang_a].mean, r.cells[lang_b].mean) for r in rows]
    keep = [i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))]
    if not keep:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for n, i in enumerate(keep, 1):
        r, (x, y) = rows[i], points[i]
        sem = [0.0 if math.isnan(v) else v for v in (r.cells[lang_a].sem, r.cells[lang_b].sem)]
        name = f"{n}: {r.method} ({r.model})" + (f" [{r.config[:8]}]" if r.marks else "")
        ax.errorbar(x, y, xerr=sem[0], yerr=sem[1], fmt="o", ms=4, capsize=2, label=name)
    front = sorted(pareto_front([points[i] for i in keep]), key=lambda k: points[keep[k]][0])
    if len(front) > 1:
        ax.plot([points[keep[k]][0] for k in front], [points[keep[k]][1] for k in front], "k--", lw=0.8,
                label="Pareto front")
    chance = getattr(table, "chance", {})
    if lang_a in chance:
        ax.axvline(chance[lang_a], color="grey", ls=":", lw=0.9, label=f"chance ({lang_a})")
    if lang_b in chance:
        ax.axhline(chance[lang_b], color="grey", ls="-.", lw=0.9, label=f"chance ({lang_b})")
    ax.set_xlabel(f"eval/{table.metric}/{lang_a}")
    ax.set_ylabel(f"eval/{table.metric}/{lang_b}")
    ax.set_title(f"{lang_a} vs {lang_b} across methods")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.tight_layout()
    place_labels(ax, [points[i] for i in keep], [str(n) for n in range(1, len(keep) + 1)])
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


def delta_curves(deltas: Mapping[str, Mapping[str, Sequence[tuple[int, float, float, int]]]], path: Path,
                 reference: str = "joint_sft", title: str | None = None) -> Path | None:
    """deltas: {method label: {language or 'all languages (mean)': [(step, mean Δ, se, seeds), ...]}} (from
    `harness.leaderboard.curves.delta_curves`) -> one panel per language, the mean over languages first; a line per
    method with a ± standard-error band over seeds; 0 = the reference. None when there is nothing to draw."""
    panels = sorted({p for per in deltas.values() for p, b in per.items() if b}, key=lambda p: (p != ALL_PANEL, p))
    if not panels:
        return None
    plt = _plt()
    cols = min(3, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 2.9 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        ax.axhline(0.0, color="k", lw=0.8, label=reference)
        for label, per in deltas.items():
            b = per.get(panel) or []
            if not b:
                continue
            steps = [s for s, *_ in b]
            mean = [m for _, m, _, _ in b]
            se = [0.0 if math.isnan(e) else e for _, _, e, _ in b]
            (line,) = ax.plot(steps, mean, lw=1.2, label=f"{label} (n={max(n for *_, n in b)})")
            ax.fill_between(steps, [m - e for m, e in zip(mean, se, strict=True)],
                            [m + e for m, e in zip(mean, se, strict=True)], color=line.get_color(), alpha=0.2, lw=0)
        ax.set_title(panel)
        ax.set_xlabel("step")
        ax.set_ylabel(f"Δ train/loss vs {reference}")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title or f"training loss minus {reference}'s (same model, seed, settings): mean ± s.e. over seeds")
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

