"""Aggregate: a runs table into a leaderboard table: one row per (model, method, settings), mean ± standard error
over seeds, lm-eval's own standard error over items, the chance level, Δ against joint SFT of the same model and
settings, and its significance over seeds.

`aggregate` is a pure function of a runs table (what `mlflow.search_runs` returns), so it is tested on
synthetic stores with known values.

Rows are keyed by settings (`harness.leaderboard.settings`): runs of one (model, method) with other settings are
separate rows, marked with a footnote that names the keys that differ, and Δ is only taken against a reference
run with the same suite settings.

Uncertainty, two kinds: `± x` is the standard error of the mean over seeds (sample std / √n, n = seeds); `[y]` is
lm-eval's standard error of one run's score over the task's items (`eval/<metric>/<key>/stderr`), averaged over
seeds — what the finite item sample alone would make the score wobble by.

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
from harness.leaderboard.settings import (
    OPTIONS_PARAM,
    SETTINGS_COL,
    SHARED_COL,
    differing,
    run_settings,
    setting_params,
    with_settings,
)

REFERENCE_METHOD = "joint_sft"
MIN_SEEDS_FOR_TEST = 3
ALPHA = 0.05
PERF_COLUMNS = {"perf/mean_step_time_s": "step s", "perf/tokens_per_s": "tok/s", "perf/peak_mem_mb": "peak MB",
                "dist/bytes_per_step": "bytes/step", "dist/bytes_ratio_allreduce": "×allreduce"}
GROUPS = ("seen_mean", "unseen_mean", "seen_worst")
WORST = "seen_worst"
LOWER_IS_BETTER = frozenset({"loss", "ppl", "answer_loss"})  # metric families where the worst language is the largest
SEEN_PARAM = "params.languages.seen"


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)
    seeds: list[str] = field(default_factory=list)
    item_se: list[float] = field(default_factory=list)  # lm-eval's standard error of each run's score, where logged

    def add(self, value: float, seed: str, item_se: float | None = None) -> None:
        self.values.append(value)
        self.seeds.append(seed)
        if item_se is not None:
            self.item_se.append(item_se)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation (n − 1); 0 for a single seed."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def sem(self) -> float:
        """Standard error of the mean over seeds, std / √n; NaN for a single seed (one value says nothing of spread)."""
        return self.std / math.sqrt(self.n) if self.n > 1 else math.nan

    @property
    def item_stderr(self) -> float:
        """lm-eval's standard error over items, mean over the seeds that logged one; NaN when none did."""
        return statistics.fmean(self.item_se) if self.item_se else math.nan

    def by_seed(self) -> dict[str, float]:
        return dict(zip(self.seeds, self.values, strict=True))

    def fmt(self, digits: int = 3, row_n: int | None = None) -> str:
        """'mean ± se' over seeds, then '[item se]' where lm-eval gave one, then '(n=k)' when fewer seeds than the
        row's `row_n` hold this value."""
        if not self.values:
            return "—"
        text = _num(self.mean, digits) if self.n == 1 else f"{_num(self.mean, digits)} ± {_num(self.sem, digits)}"
        if self.item_se:
            text += f" [{_num(self.item_stderr, digits)}]"
        if row_n is not None and self.n != row_n:
            text += f" (n={self.n})"
        return text


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
    config: str = ""  # settings hash (suite settings + method options), 12 hex digits; '' when runs logged none
    shared: str = ""  # hash of the suite settings alone: Δ is taken against the reference with the same one
    settings: dict[str, str] = field(default_factory=dict)
    marks: list[int] = field(default_factory=list)  # footnote numbers (Table.notes[i - 1])

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
    chance: dict[str, float] = field(default_factory=dict)  # cell key -> chance level (multiple-choice scores)
    notes: list[str] = field(default_factory=list)  # footnotes: settings that differ, Δ not taken

    @property
    def groups(self) -> list[str]:
        return [g for g in GROUPS if g in self.columns]

    @property
    def has_tests(self) -> bool:
        return any(not math.isnan(t.p) for r in self.rows for t in r.tests.values())

    @property
    def has_item_se(self) -> bool:
        return any(c.item_se for r in self.rows for c in r.cells.values())

    @property
    def has_configs(self) -> bool:
        return any(r.config for r in self.rows)


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
    """Language and group columns of `metric` (not their '<key>/stderr' and '<key>/chance' companions)."""
    prefix = f"metrics.eval/{metric}/"
    langs = sorted(c.removeprefix(prefix) for c in runs.columns if c.startswith(prefix) and "/" not in c.removeprefix(prefix)
                   and not c.endswith(GROUPS) and runs[c].notna().any())
    groups = [g for g in GROUPS if f"{prefix}{g}" in runs.columns and runs[f"{prefix}{g}"].notna().any()]
    return langs, groups


def _seen_languages(param: Any) -> list[str]:
    """The seen languages a run logged as its `languages.seen` param ("['en', 'fr']"); [] when it logged none."""
    if _missing(param):
        return []
    return [x.strip(" '\"") for x in str(param).strip("[]").split(",") if x.strip(" '\"")]


def with_worst(runs: Any, metric: str) -> Any:
    """Add `metrics.eval/<metric>/seen_worst`: per run, its worst seen language's value (the largest loss, the
    smallest score), the interference lab's statistic (docs/interference_lab.md); NaN where a run names fewer than
    2 seen languages or lacks one's value. Runs without the `languages.seen` param are returned unchanged."""
    if SEEN_PARAM not in runs.columns:
        return runs
    pick = max if metric in LOWER_IS_BETTER else min

    def worst(run: Any) -> float:
        values = [_value(run, f"metrics.eval/{metric}/{lang}") for lang in _seen_languages(run[SEEN_PARAM])]
        return pick(values) if len(values) >= 2 and None not in values else math.nan  # type: ignore[type-var]

    out = runs.copy()
    out[f"metrics.eval/{metric}/{WORST}"] = [worst(run) for _, run in runs.iterrows()]
    return out


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


def _value(run: Any, key: str) -> float | None:
    value = run.get(key)
    return None if _missing(value) else float(value)


RowKey = tuple[str, str, str]  # (model, method + world suffix, settings hash)


def _rows(runs: Any, metric: str, keys: list[str], perf: list[str]) -> tuple[dict[RowKey, Row], dict[str, float]]:
    """Rows by (model, method + world suffix, settings hash), and the mean chance level of every cell key."""
    rows: dict[RowKey, Row] = {}
    chances: dict[str, list[float]] = {}
    by_world = len(_world_sizes(runs)) > 1
    params = setting_params(runs.columns)
    for i, (_, run) in enumerate(runs.iterrows()):
        method, suffix = _method_name(run, by_world)
        key = (str(run["tags.polymoo.model"]), method + suffix, str(run[SETTINGS_COL]))
        seed = run.get("tags.polymoo.seed")
        seed = f"#{i}" if _missing(seed) else str(seed)
        if key not in rows:
            rows[key] = Row(key[0], key[1], 0, {k: Cell() for k in keys}, config=key[2],
                            shared=str(run[SHARED_COL]), settings=run_settings(run, params))
        row = rows[key]
        row.seeds += 1
        for k in keys:
            name = f"metrics.{k}" if k in perf else f"metrics.eval/{metric}/{k}"
            value = _value(run, name)
            if value is not None:
                row.cells[k].add(value, seed, None if k in perf else _value(run, f"{name}/stderr"))
            chance = None if k in perf else _value(run, f"{name}/chance")
            if chance is not None:
                chances.setdefault(k, []).append(chance)
    return rows, {k: statistics.fmean(v) for k, v in chances.items()}


def _base(method: str) -> tuple[str, str]:
    """'bkmoo (N=2)' -> ('bkmoo', ' (N=2)')."""
    name, sep, world = method.partition(" (N=")
    return name, (sep + world if sep else "")


def _compare(rows: dict[RowKey, Row], groups: list[str], reference: str, notes: list[str]) -> None:
    """Δ and significance of every row against the reference row of the same model, world size and suite settings;
    a note (and no Δ) where the reference ran only with other settings."""
    for row in rows.values():
        method, suffix = _base(row.method)
        if method == reference:
            continue
        refs = [r for r in rows.values() if r.model == row.model and r.method == reference + suffix]
        same = [r for r in refs if r.shared == row.shared]
        if refs and not same:
            mine, theirs = ({k: v for k, v in r.settings.items() if k != OPTIONS_PARAM} for r in (row, refs[0]))
            notes.append(f"{row.model} / {row.method} [{row.config[:8]}]: no {reference} run with the same settings, "
                         f"so no Δ; its settings differ from {reference}'s in "
                         f"{_keys(differing([mine, theirs]), [row.config[:8], refs[0].config[:8]])}")
            row.marks.append(len(notes))
        if same:
            for group in groups:
                if row.cells[group].values and same[0].cells[group].values:
                    row.tests[group] = significance(row.cells[group], same[0].cells[group])


def _keys(diff: dict[str, list[str]], labels: list[str], shown: int = 4) -> str:
    """'train.lr (a1b2c3d4: 0.001, e5f6a7b8: 0.003), ...' for the first `shown` keys that differ."""
    parts = [f"{k} ({', '.join(f'{lab}: {v}' for lab, v in zip(labels, values, strict=True))})"
             for k, values in list(diff.items())[:shown]]
    more = f" and {len(diff) - shown} more keys" if len(diff) > shown else ""
    return (", ".join(parts) + more) if parts else "keys not logged as params"


def _settings_notes(rows: dict[RowKey, Row], notes: list[str]) -> None:
    """One footnote per (model, method) that ran with several settings, naming the keys that differ."""
    by_method: dict[tuple[str, str], list[Row]] = {}
    for row in rows.values():
        by_method.setdefault((row.model, row.method), []).append(row)
    for (model, method), group in sorted(by_method.items()):
        if len(group) < 2:
            continue
        group.sort(key=lambda r: r.config)
        hashes = ", ".join(r.config[:8] for r in group)
        notes.append(f"{model} / {method} ran with {len(group)} settings ({hashes}), shown as separate rows; they "
                     f"differ in {_keys(differing([r.settings for r in group]), [r.config[:8] for r in group])}")
        for row in group:
            row.marks.append(len(notes))


def aggregate(runs: Any, metric: str = "acc", reference: str = REFERENCE_METHOD,
              language_order: Sequence[str] | None = None) -> Table:
    """Aggregate a runs DataFrame (columns `tags.polymoo.*`, `params.*`, `metrics.*`) into a leaderboard table."""
    if runs is not None and len(runs):
        runs = with_worst(runs, metric)
    langs, groups = _check_runs(runs, metric)
    if language_order:
        langs = [lang for lang in language_order if lang in langs] + [lang for lang in langs if lang not in language_order]
    perf = [c for c in PERF_COLUMNS if f"metrics.{c}" in runs.columns and runs[f"metrics.{c}"].notna().any()]
    keys = [*langs, *groups, *perf]
    rows, chance = _rows(with_settings(runs), metric, keys, perf)
    notes: list[str] = []
    _settings_notes(rows, notes)
    _compare(rows, groups, reference, notes)

    def order(r: Row) -> tuple:
        method, suffix = _base(r.method)
        return r.model, suffix, method != reference, method, r.config

    return Table(metric, langs, keys, sorted(rows.values(), key=order), reference, chance, notes)
