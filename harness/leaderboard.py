"""Leaderboards built from the MLflow store alone: one row per (model, method), per-language columns,
seen / unseen averages, mean ± std over seeds, Δ against joint SFT with a significance test over seeds,
and the communication / step-time / memory columns where they were measured; markdown, CSV and a
self-contained sortable HTML page, written under `results/leaderboards/` and logged to MLflow.

`aggregate` is a pure function of a runs table (what `mlflow.search_runs` returns), so it is tested on
synthetic stores with known values.

Significance: with ≥ 3 seeds on both sides, a two-sided t-test of the seen / unseen mean against the
reference method of the same model — paired by seed when ≥ 3 seeds are shared (same seed = same data
order and init, so pairing removes that variance), Welch's unequal-variance test otherwise.
"""

from __future__ import annotations

import html
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def aggregate(runs: Any, metric: str = "acc", reference: str = REFERENCE_METHOD,
              language_order: Sequence[str] | None = None) -> Table:
    """Aggregate a runs DataFrame (columns `tags.polymoo.*`, `metrics.*`) into a leaderboard table."""
    if runs is None or len(runs) == 0:
        raise ValueError("no finished runs to aggregate")
    for col in ("tags.polymoo.model", "tags.polymoo.method"):
        if col not in runs.columns:
            raise ValueError(f"runs lack column {col!r}: not polymoo runs?")
    langs, groups = _metric_columns(runs, metric)
    if not langs and not groups:
        raise ValueError(f"runs hold no eval/{metric}/<language> metrics")
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


# -- rendering ------------------------------------------------------------------------------------------------
def _header(table: Table) -> list[str]:
    names = [k.replace("_mean", "") if k.endswith("_mean") else PERF_COLUMNS.get(k, k) for k in table.columns]
    extra = []
    for g in table.groups:
        extra.append(f"Δ{g.replace('_mean', '')}")
        if table.has_tests:
            extra.append(f"p({g.replace('_mean', '')})")
    return ["model", "method", "seeds", *names, *extra]


def _delta(t: SigTest | None) -> str:
    if t is None or math.isnan(t.delta):
        return "—"
    return f"{t.delta:+.3f}{'*' if t.significant else ''}"


def _p(t: SigTest | None) -> str:
    if t is None or math.isnan(t.p):
        return "—"
    return f"{t.p:.3f}" + (" (paired)" if t.kind == "paired" else " (welch)")


def _cells(table: Table, row: Row) -> list[str]:
    out = [row.model, row.method, str(row.seeds), *(row.cells[k].fmt() for k in table.columns)]
    for g in table.groups:
        out.append(_delta(row.tests.get(g)))
        if table.has_tests:
            out.append(_p(row.tests.get(g)))
    return out


def _legend(table: Table) -> str:
    text = (f"metric eval/{table.metric}; mean ± sample std over seeds; Δ = mean − mean of {table.reference} "
            f"(same model)")
    if table.has_tests:
        text += (f"; p: two-sided t-test over seeds (paired by seed where ≥ {MIN_SEEDS_FOR_TEST} shared, else Welch); "
                 f"* p < {ALPHA}")
    return text + "."


def to_markdown(table: Table) -> str:
    head = _header(table)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_cells(table, r)) + " |" for r in table.rows]
    return "\n".join(lines) + "\n\n" + _legend(table) + "\n"


def to_csv(table: Table) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    head = ["model", "method", "seeds", *(f"{k}_{s}" for k in table.columns for s in ("mean", "std"))]
    head += [f"{c}_{g.replace('_mean', '')}" for g in table.groups for c in ("delta", "p", "test")]
    writer.writerow(head)
    for r in table.rows:
        line: list[Any] = [r.model, r.method, r.seeds]
        line += [v for k in table.columns for v in (r.cells[k].mean, r.cells[k].std)]
        for g in table.groups:
            t = r.tests.get(g, SigTest())
            line += [t.delta, t.p, t.kind]
        writer.writerow(line)
    return buf.getvalue()


def _sort_key(text: str) -> str:
    try:
        return repr(float(text.split(" ")[0].rstrip("*")))
    except ValueError:
        return ""


def to_html(table: Table, title: str) -> str:
    """A self-contained page (no external resources); click a header to sort (numbers numerically, blanks last)."""
    head = "".join(f"<th onclick='sortBy({i})' title='sort'>{html.escape(h)}</th>" for i, h in enumerate(_header(table)))
    body = ""
    for r in table.rows:
        cells = _cells(table, r)
        body += "<tr>" + "".join(
            f"<td data-v='{html.escape(_sort_key(c))}'{' class=sig' if c.endswith('*') else ''}>{html.escape(c)}</td>"
            for c in cells) + "</tr>\n"
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}}td:nth-child(-n+2){{text-align:left}}
th{{cursor:pointer;background:#eee;position:sticky;top:0}}th:hover{{background:#ddd}}td.sig{{font-weight:bold}}
tr:nth-child(even){{background:#fafafa}}</style></head><body><h1>{html.escape(title)}</h1>
<p>{html.escape(_legend(table))}</p>
<table id="lb"><thead><tr>{head}</tr></thead><tbody>
{body}</tbody></table>
<script>let col=-1,dir=1;function sortBy(c){{const t=document.getElementById('lb').tBodies[0];
dir=(c===col)?-dir:1;col=c;const rows=[...t.rows];rows.sort((a,b)=>{{
const x=a.cells[c].dataset.v,y=b.cells[c].dataset.v;
if(x!==''&&y!=='')return (parseFloat(x)-parseFloat(y))*dir;if(x!=='')return -1;if(y!=='')return 1;
return a.cells[c].innerText.localeCompare(b.cells[c].innerText)*dir;}});rows.forEach(r=>t.appendChild(r));}}
</script></body></html>
"""


# -- MLflow -------------------------------------------------------------------------------------------------------
WORLD_TAG = "tags.polymoo.world_size"


def _world_sizes(runs: Any) -> set[str]:
    return set(runs[WORLD_TAG].dropna().astype(str)) if WORLD_TAG in runs.columns else set()


def _method_name(run: Any, by_world: bool) -> tuple[str, str]:
    """(method, world suffix) of a row: runs of one method at several world sizes (`--nproc 2` and `--nproc 4`) are
    separate rows, each compared with the reference at the same world size."""
    method, world = str(run["tags.polymoo.method"]), run.get(WORLD_TAG)
    return method, (f" (N={world})" if by_world and not _missing(world) and str(world) != "1" else "")


def latest_per_seed(runs: Any) -> Any:
    """Keep the latest run of every (model, method, seed, world size): a rerun supersedes, it does not add a seed."""
    cols = ["tags.polymoo.model", "tags.polymoo.method", "tags.polymoo.seed"]
    if WORLD_TAG in runs.columns:
        cols.append(WORLD_TAG)
    if len(runs) == 0 or not all(c in runs.columns for c in cols) or "start_time" not in runs.columns:
        return runs
    return runs.sort_values("start_time").drop_duplicates(cols, keep="last").sort_index()


def fetch_runs(experiment: str, uri: str | None = None, latest_only: bool = True) -> Any:
    """Finished training runs of an experiment (runs tagged `polymoo.kind`, e.g. reports, are left out; with
    `latest_only`, the latest run of every (model, method, seed))."""
    import mlflow

    from harness.tracking import client

    c = client(uri)
    if c.get_experiment_by_name(experiment) is None:
        raise ValueError(f"no MLflow experiment {experiment!r} in {c.tracking_uri}; run the suite first")
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'",
                              output_format="pandas")
    if len(runs) and "tags.polymoo.kind" in runs.columns:
        runs = runs[runs["tags.polymoo.kind"].isna()]
    if len(runs) and "tags.polymoo.model" in runs.columns:
        runs = runs[runs["tags.polymoo.model"].notna()]
    return latest_per_seed(runs) if latest_only else runs


def write_all(table: Table, out_dir: Path, stem: str, title: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / f"{stem}.md", "csv": out_dir / f"{stem}.csv", "html": out_dir / f"{stem}.html"}
    paths["md"].write_text(f"# {title}\n\n" + to_markdown(table))
    paths["csv"].write_text(to_csv(table))
    paths["html"].write_text(to_html(table, title))
    return paths


def log_files(paths: dict[str, Path] | list[Path] | Path, experiment: str, run_name: str, uri: str | None = None,
              tags: dict[str, str] | None = None, artifact_dir: str = "leaderboard") -> str:
    """Log files (or a whole folder) as artifacts of a fresh run in `<experiment>/reports`, an experiment of
    its own so reports never mix with the training runs a leaderboard reads."""
    from harness.tracking import Tracker, client, ensure_experiment

    c = client(uri)
    exp = ensure_experiment(c, f"{experiment}/reports")
    run = c.create_run(exp, run_name=run_name, tags={"polymoo.kind": "report", **(tags or {})})
    tracker = Tracker(c, run.info.run_id)
    if isinstance(paths, Path):
        c.log_artifacts(run.info.run_id, str(paths), artifact_dir)
    else:
        for p in (paths.values() if isinstance(paths, dict) else paths):
            tracker.log_artifact(p, artifact_dir)
    tracker.finish("FINISHED")
    return run.info.run_id


def suite_runs(suite: Any) -> Any:
    """The finished training runs of `suite`: its experiment, its name and its `suite.version` (runs of an older
    version, whose numbers the version bump says are not comparable, are left out), the latest per seed."""
    from harness.tracking import experiment_name

    runs = fetch_runs(experiment_name(suite), suite.tracking.uri, latest_only=False)
    if len(runs) and "tags.polymoo.suite" in runs.columns:
        runs = runs[runs["tags.polymoo.suite"] == suite.suite.name]
    if len(runs) and "tags.polymoo.suite_version" in runs.columns:
        runs = runs[runs["tags.polymoo.suite_version"].astype(str) == str(suite.suite.version)]
    if len(runs) == 0:
        raise ValueError(f"no finished runs of suite {suite.suite.name!r} version {suite.suite.version} in MLflow; "
                         "run it first")
    return latest_per_seed(runs)


def publish(suite: Any, metric: str = "acc", out_dir: Path = Path("results/leaderboards"), log: bool = True,
            runs: Any = None) -> tuple[Table, dict[str, Path]]:
    """Aggregate a suite's runs, write md/csv/html under `out_dir` and log them to MLflow."""
    from harness.tracking import experiment_name

    runs = suite_runs(suite) if runs is None else runs
    table = aggregate(runs, metric, language_order=suite.languages.all)
    title = f"polymoo leaderboard — {suite.suite.name} (eval/{metric})"
    paths = write_all(table, out_dir, f"{suite.suite.name}_{metric}", title)
    if log:
        log_files(paths, experiment_name(suite), f"leaderboard/{metric}", suite.tracking.uri,
                  {"polymoo.suite": suite.suite.name})
    return table, paths
