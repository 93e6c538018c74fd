"""Aggregate: a runs table into a leaderboard table: group by (model, method), mean ± std over seeds, Δ against
joint SFT of the same model and its significance over seeds.

`aggregate` is a pure function of a runs table (what `mlflow.search_runs` returns), so it is tested on
synthetic stores with known values.

Significance: with ≥ 3 seeds on both sides, a two-sided t-test of the seen / unseen mean against the
reference method of the same model — paired by seed when ≥ 3 seeds are shared (same seed = same data
order and init, so pairing removes that variance), Welch's unequal-variance test otherwise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.leaderboard.collect import WORLD_TAG

REFERENCE_METHOD = "joint_sft"
MIN_SEEDS_FOR_TEST = 3
ALPHA = 0.05
PERF_COLUMNS = {"perf/mean_step_time_s": "step s", "perf/tokens_per_s": "tok/s", "perf/peak_mem_mb": "peak MB",
                "dist/bytes_per_step": "bytes/step", "dist/bytes_ratio_allreduce": "×allreduce"}
GROUPS = ("seen_mean", "unseen_mean")


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)

    def add(self, value: float, seed: str) -> None:
        self.values.append(value)
        self.seeds.append(seed)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (n − 1); 0 for a single seed."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def by_seed(self) -> dict[str, float]:
        return dict(zip(self.seeds, self.values, strict=True))

    def fmt(self, digits: int = 3) -> str:
        if not self.values:
            return "—"
        if len(self.values) == 1:
            return _num(self.mean, digits)
        return f"{_num(self.mean, digits)} ± {_num(self.std, digits)}"


def _num(x: float, digits: int) -> str:
    if abs(x) >= 10 ** 5:
        return f"{x:.3g}"
    return f"{x:.{digits}f}"


@dataclass
class SigTest:
    """Δ against the reference and its significance (p is NaN when fewer than 3 seeds on a side)."""

    delta: float = math.nan
    p: float = math.nan
    kind: str = ""  # "paired" | "welch" | ""

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p) and self.p < ALPHA


@dataclass
class Row:
    model: str
    method: str
    seeds: int
    cells: dict[str, Cell]
    tests: dict[str, SigTest] = field(default_factory=dict)  # group ('seen_mean'...) -> SigTest

    @property
    def delta_seen(self) -> float:
        return self.tests.get("seen_mean", SigTest()).delta

    @property
    def delta_unseen(self) -> float:
        return self.tests.get("unseen_mean", SigTest()).delta


@dataclass
class Table:
    metric: str
    languages: list[str]
    columns: list[str]  # cell keys in display order
    rows: list[Row]
    reference: str = REFERENCE_METHOD

    @property
    def groups(self) -> list[str]:
        return [g for g in GROUPS if g in self.columns]

    @property
    def has_tests(self) -> bool:
        return any(not math.isnan(t.p) for r in self.rows for t in r.tests.values())


def significance(a: Cell, ref: Cell) -> SigTest:
    """Δ = mean(a) − mean(ref) and a two-sided t-test when both have ≥ 3 seeds (paired by seed if possible)."""
    out = SigTest(delta=a.mean - ref.mean if a.values and ref.values else math.nan)
    if len(a.values) < MIN_SEEDS_FOR_TEST or len(ref.values) < MIN_SEEDS_FOR_TEST:
        return out
    from scipy import stats

    pa, pr = a.by_seed(), ref.by_seed()
    common = sorted(set(pa) & set(pr))
    if len(common) >= MIN_SEEDS_FOR_TEST:
        x, y = [pa[s] for s in common], [pr[s] for s in common]
        diffs = [u - v for u, v in zip(x, y, strict=True)]
        out.kind = "paired"
        if max(diffs) == min(diffs):  # zero variance of the differences: t undefined
            out.p = 1.0 if diffs[0] == 0 else 0.0
        else:
            out.p = float(stats.ttest_rel(x, y).pvalue)
    else:
        out.kind = "welch"
        if statistics.pvariance(a.values) == 0 and statistics.pvariance(ref.values) == 0:
            out.p = 1.0 if a.mean == ref.mean else 0.0
        else:
            out.p = float(stats.ttest_ind(a.values, ref.values, equal_var=False).pvalue)
    return out


def _metric_columns(runs: Any, metric: str) -> tuple[list[str], list[str]]:
    prefix = f"metrics.eval/{metric}/"
    langs = sorted(c.removeprefix(prefix) for c in runs.columns if c.startswith(prefix)
                   and not c.endswith(GROUPS) and runs[c].notna().any())
    groups = [g for g in GROUPS if f"{prefix}{g}" in runs.columns and runs[f"{prefix}{g}"].notna().any()]
    return langs, groups


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _world_sizes(runs: Any) -> set[str]:
    return set(runs[WORLD_TAG].dropna().astype(str)) if WORLD_TAG in runs.columns else set()


def _method_name(run: Any, by_world: bool) -> tuple[str, str]:
    """(method, world suffix) of a row: runs of one method at several world sizes (`--nproc 2` and `--nproc 4`) are
    separate rows, each compared with the reference at the same world size."""
    method, world = str(run["tags.polymoo.method"]), run.get(WORLD_TAG)
    return method, (f" (N={world})" if by_world and not _missing(world) and str(world) != "1" else "")


def _check_runs(runs: Any, metric: str) -> tuple[list[str], list[str]]:
    """The table's language and group columns; ValueError when `runs` cannot make a leaderboard."""
    if runs is None or len(runs) == 0:
        raise ValueError("no finished runs to aggregate")
    for col in ("tags.polymoo.model", "tags.polymoo.method"):
        if col not in runs.columns:
            raise ValueError(f"runs lack column {col!r}: not polymoo runs?")
    langs, groups = _metric_columns(runs, metric)
    if not langs and not groups:
        raise ValueError(f"runs hold no eval/{metric}/<language> metrics")
    return langs, groups


def aggregate(runs: Any, metric: str = "acc", reference: str = REFERENCE_METHOD,
              language_order: Sequence[str] | None = None) -> Table:
    """Aggregate a runs DataFrame (columns `tags.polymoo.*`, `metrics.*`) into a leaderboard table."""
    langs, groups = _check_runs(runs, metric)
    if language_order:
        langs = [lang for lang in language_order if lang in langs] + [lang for lang in langs if lang not in language_order]
    perf = [c for c in PERF_COLUMNS if f"metrics.{c}" in runs.columns and runs[f"metrics.{c}"].notna().any()]
    keys = [*langs, *groups, *perf]
    rows: dict[tuple[str, str], Row] = {}
    by_world = len(_world_sizes(runs)) > 1
    names: dict[tuple[str, str], tuple[str, str]] = {}  # row key -> (method, world suffix)
    for i, (_, run) in enumerate(runs.iterrows()):
        method, suffix = _method_name(run, by_world)
        key = (str(run["tags.polymoo.model"]), method + suffix)
        names[key] = (method, suffix)
        seed = run.get("tags.polymoo.seed")
        seed = f"#{i}" if _missing(seed) else str(seed)
        row = rows.setdefault(key, Row(key[0], key[1], 0, {k: Cell() for k in keys}))
        row.seeds += 1
        for k in keys:
            value = run.get(f"metrics.{k}" if k in perf else f"metrics.eval/{metric}/{k}")
            if not _missing(value):
                row.cells[k].add(float(value), seed)
    for (model, name), row in rows.items():
        ref = rows.get((model, reference + names[(model, name)][1]))
        if ref is None or ref is row:
            continue
        for group in groups:
            if row.cells[group].values and ref.cells[group].values:
                row.tests[group] = significance(row.cells[group], ref.cells[group])

    def order(r: Row) -> tuple:
        method, suffix = names[(r.model, r.method)]
        return r.model, suffix, method != reference, method

    ordered = sorted(rows.values(), key=order)
    return Table(metric, langs, keys, ordered, reference)
