"""Render a leaderboard table: markdown, CSV, a self-contained sortable HTML page, and the console (`render`);
`write_all` writes the three files."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from harness.leaderboard.aggregate import ALPHA, MIN_SEEDS_FOR_TEST, PERF_COLUMNS, WORST, Row, SigTest, Table


def _header(table: Table) -> list[str]:
    names = [k.replace("_mean", "") if k.endswith("_mean") else PERF_COLUMNS.get(k, k) for k in table.columns]
    extra = []
    for g in table.groups:
        extra.append(f"Δ{g.replace('_mean', '')}")
        if table.has_tests:
            extra.append(f"p({g.replace('_mean', '')})")
    return ["model", "method", *(["config"] if table.has_configs else []), "n", *names, *extra]


def _delta(t: SigTest | None) -> str:
    if t is None or math.isnan(t.delta):
        return "—"
    return f"{t.delta:+.3f}{'*' if t.significant else ''}"


def _p(t: SigTest | None) -> str:
    if t is None or math.isnan(t.p):
        return "—"
    return f"{t.p:.3f}" + (" (paired)" if t.kind == "paired" else " (welch)")


def _config(row: Row) -> list[str]:
    return [row.config[:8] + "".join(f" †{m}" for m in row.marks)]


def _cells(table: Table, row: Row) -> list[str]:
    out = [row.model, row.method, *(_config(row) if table.has_configs else []), str(row.seeds),
           *(row.cells[k].fmt(row_n=row.seeds) for k in table.columns)]
    for g in table.groups:
        out.append(_delta(row.tests.get(g)))
        if table.has_tests:
            out.append(_p(row.tests.get(g)))
    return out


def _chance_cells(table: Table) -> list[str] | None:
    """The chance-level line (multiple-choice scores only), or None when no cell has one."""
    if not table.chance:
        return None
    before = 1 + int(table.has_configs)  # config, n
    after = len(_header(table)) - 2 - before - len(table.columns)  # Δ and p columns
    return ["chance", "1 / choices", *([""] * before),
            *(f"{table.chance[k]:.3f}" if k in table.chance else "" for k in table.columns), *([""] * after)]


def _legend(table: Table) -> str:
    text = (f"metric eval/{table.metric}; n = seeds; mean ± standard error over seeds (std / √n; a single seed shows "
            f"no ±); Δ = mean − mean of {table.reference} (same model and settings)")
    if WORST in table.groups:
        text += ("; seen_worst: per run, its worst seen language (the largest loss, the smallest score), then mean ± "
                 "standard error over seeds")
    if table.has_item_se:
        text += "; [x]: lm-eval's standard error of one run's score over the task's items, mean over seeds"
    if table.chance:
        text += "; chance: the score of guessing uniformly among a multiple-choice task's choices"
    if table.has_configs:
        text += ("; config: hash of the run's settings (its resolved suite without models / methods / seeds, and its "
                 "method's options): runs with other settings are separate rows, never merged or superseded")
    if table.has_tests:
        text += (f"; p: two-sided t-test over seeds (paired by seed where ≥ {MIN_SEEDS_FOR_TEST} shared, else Welch); "
                 f"* p < {ALPHA}")
    return text + "."


def _notes(table: Table) -> list[str]:
    return [f"†{i} {note}." for i, note in enumerate(table.notes, 1)]


def to_markdown(table: Table) -> str:
    head = _header(table)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(_cells(table, r)) + " |" for r in table.rows]
    chance = _chance_cells(table)
    if chance:
        lines.append("| " + " | ".join(chance) + " |")
    text = "\n".join(lines) + "\n\n" + _legend(table) + "\n"
    return text + ("\n" + "\n".join(f"- {n}" for n in _notes(table)) + "\n" if table.notes else "")


def to_csv(table: Table) -> str:
    """One line per row: per cell mean, std, sem (over seeds), n and lm-eval's item stderr, then chance per cell
    (the same on every line), the config hash and the footnotes of the row."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    stats = ("mean", "std", "sem", "n", "item_se")
    head = ["model", "method", "config", "seeds", *(f"{k}_{s}" for k in table.columns for s in stats)]
    head += [f"{k}_chance" for k in table.columns if k in table.chance]
    head += [f"{c}_{g.replace('_mean', '')}" for g in table.groups for c in ("delta", "p", "test")]
    writer.writerow([*head, "notes"])
    for r in table.rows:
        line: list[Any] = [r.model, r.method, r.config, r.seeds]
        line += [v for k in table.columns for v in (r.cells[k].mean, r.cells[k].std, r.cells[k].sem, r.cells[k].n,
                                                    r.cells[k].item_stderr)]
        line += [table.chance[k] for k in table.columns if k in table.chance]
        for g in table.groups:
            t = r.tests.get(g, SigTest())
            line += [t.delta, t.p, t.kind]
        writer.writerow([*line, " ".join(_notes(table)[m - 1] for m in r.marks)])
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
    chance = _chance_cells(table)
    foot = ("<tfoot><tr class=chance>" + "".join(f"<td>{html.escape(c)}</td>" for c in chance) + "</tr></tfoot>"
            if chance else "")
    notes = "".join(f"<p class=note>{html.escape(n)}</p>" for n in _notes(table))
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}}td:nth-child(-n+2){{text-align:left}}
th{{cursor:pointer;background:#eee;position:sticky;top:0}}th:hover{{background:#ddd}}td.sig{{font-weight:bold}}
tr:nth-child(even){{background:#fafafa}}tr.chance td{{color:#666;font-style:italic;border-top:2px solid #999}}
p.note{{font-size:90%;margin:.3em 0}}</style></head><body><h1>{html.escape(title)}</h1>
<p>{html.escape(_legend(table))}</p>
<table id="lb"><thead><tr>{head}</tr></thead><tbody>
{body}</tbody>{foot}</table>
{notes}
<script>let col=-1,dir=1;function sortBy(c){{const t=document.getElementById('lb').tBodies[0];
dir=(c===col)?-dir:1;col=c;const rows=[...t.rows];rows.sort((a,b)=>{{
const x=a.cells[c].dataset.v,y=b.cells[c].dataset.v;
if(x!==''&&y!=='')return (parseFloat(x)-parseFloat(y))*dir;if(x!=='')return -1;if(y!=='')return 1;
return a.cells[c].innerText.localeCompare(b.cells[c].innerText)*dir;}});rows.forEach(r=>t.appendChild(r));}}
</script></body></html>
"""


def render(table: Table, fmt: str, title: str) -> str:
    """The table as text for the console in `fmt` (md, csv or html; anything else: html, as the CLI always did)."""
    if fmt == "md":
        return to_markdown(table)
    if fmt == "csv":
        return to_csv(table)
    return to_html(table, title)


def write_all(table: Table, out_dir: Path, stem: str, title: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / f"{stem}.md", "csv": out_dir / f"{stem}.csv", "html": out_dir / f"{stem}.html"}
    paths["md"].write_text(f"# {title}\n\n" + to_markdown(table))
    paths["csv"].write_text(to_csv(table))
    paths["html"].write_text(to_html(table, title))
    return paths
