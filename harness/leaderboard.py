"""Leaderboards built from the MLflow store alone: one row per (model, method), per-language columns,
seen / unseen averages, mean ± std over seeds and Δ against joint SFT; markdown, CSV and HTML.

`aggregate` is a pure function of a runs table (what `mlflow.search_runs` returns), so it is tested on
synthetic stores with known values.
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
PERF_COLUMNS = {"perf/mean_step_time_s": "step s", "perf/peak_mem_mb": "peak MB",
                "dist/bytes_per_step": "bytes/step", "dist/bytes_ratio_allreduce": "×allreduce"}


@dataclass
class Cell:
    values: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def fmt(self, digits: int = 3) -> str:
        if not self.values:
            return "—"
        if len(self.values) == 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass
class Row:
    model: str
    method: str
    seeds: int
    cells: dict[str, Cell]
    delta_seen: float = math.nan
    delta_unseen: float = math.nan


@dataclass
class Table:
    metric: str
    languages: list[str]
    columns: list[str]  # cell keys in display order
    rows: list[Row]


def _metric_columns(runs: Any, metric: str) -> tuple[list[str], list[str]]:
    prefix = f"metrics.eval/{metric}/"
    langs = sorted(c.removeprefix(prefix) for c in runs.columns if c.startswith(prefix)
                   and not c.endswith(("seen_mean", "unseen_mean")))
    groups = [g for g in ("seen_mean", "unseen_mean") if f"{prefix}{g}" in runs.columns]
    return langs, groups


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
    perf = [c for c in PERF_COLUMNS if f"metrics.{c}" in runs.columns]
    keys = [*langs, *groups, *perf]
    rows: dict[tuple[str, str], Row] = {}
    for _, run in runs.iterrows():
        key = (str(run["tags.polymoo.model"]), str(run["tags.polymoo.method"]))
        row = rows.setdefault(key, Row(key[0], key[1], 0, {k: Cell() for k in keys}))
        row.seeds += 1
        for k in keys:
            col = f"metrics.{k}" if k in perf else f"metrics.eval/{metric}/{k}"
            value = run.get(col)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                row.cells[k].values.append(float(value))
    for (model, _), row in rows.items():
        ref = rows.get((model, reference))
        if ref is not None:
            for group, attr in (("seen_mean", "delta_seen"), ("unseen_mean", "delta_unseen")):
                if group in row.cells and row.cells[group].values and ref.cells[group].values:
                    setattr(row, attr, row.cells[group].mean - ref.cells[group].mean)
    ordered = sorted(rows.values(), key=lambda r: (r.model, r.method != reference, r.method))
    return Table(metric, langs, keys, ordered)


def _header(table: Table) -> list[str]:
    names = [k.replace("_mean", "") if k.endswith("_mean") else PERF_COLUMNS.get(k, k) for k in table.columns]
    return ["model", "method", "seeds", *names, "Δseen", "Δunseen"]


def _cells(table: Table, row: Row) -> list[str]:
    def delta(x: float) -> str:
        return "—" if math.isnan(x) else f"{x:+.3f}"

    return [row.model, row.method, str(row.seeds), *(row.cells[k].fmt() for k in table.columns),
            delta(row.delta_seen), delta(row.delta_unseen)]


def to_markdown(table: Table) -> str:
    head = _header(table)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_cells(table, r)) + " |" for r in table.rows]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["model", "method", "seeds", *(f"{k}_{s}" for k in table.columns for s in ("mean", "std")),
                     "delta_seen", "delta_unseen"])
    for r in table.rows:
        writer.writerow([r.model, r.method, r.seeds, *(v for k in table.columns for v in (r.cells[k].mean, r.cells[k].std)),
                         r.delta_seen, r.delta_unseen])
    return buf.getvalue()


def to_html(table: Table, title: str) -> str:
    """A self-contained page; click a header to sort."""
    head = "".join(f"<th onclick='sortBy({i})'>{html.escape(h)}</th>" for i, h in enumerate(_header(table)))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(table, r)) + "</tr>" for r in table.rows)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px}}
th{{cursor:pointer;background:#eee}}</style></head><body><h1>{html.escape(title)}</h1>
<p>metric: eval/{html.escape(table.metric)}; mean ± std over seeds; Δ against {REFERENCE_METHOD}.</p>
<table id="lb"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<script>let dir=1;function sortBy(c){{const t=document.getElementById('lb').tBodies[0];
const rows=[...t.rows];dir=-dir;rows.sort((a,b)=>{{const x=a.cells[c].innerText,y=b.cells[c].innerText;
const nx=parseFloat(x),ny=parseFloat(y);return (isNaN(nx)||isNaN(ny)?x.localeCompare(y):nx-ny)*dir;}});
rows.forEach(r=>t.appendChild(r));}}</script></body></html>"""


def fetch_runs(experiment: str, uri: str | None = None) -> Any:
    import mlflow

    from harness.tracking import client

    c = client(uri)
    if c.get_experiment_by_name(experiment) is None:
        raise ValueError(f"no MLflow experiment {experiment!r} in {c.tracking_uri}; run the suite first")
    return mlflow.search_runs(experiment_names=[experiment], filter_string="attributes.status = 'FINISHED'",
                              output_format="pandas")


def write_all(table: Table, out_dir: Path, stem: str, title: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / f"{stem}.md", "csv": out_dir / f"{stem}.csv", "html": out_dir / f"{stem}.html"}
    paths["md"].write_text(to_markdown(table))
    paths["csv"].write_text(to_csv(table))
    paths["html"].write_text(to_html(table, title))
    return paths
