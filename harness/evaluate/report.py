"""Reproduction report rendering: report.md (human) and report.json (machine), from claim results."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from harness.evaluate.claims import ClaimResult
from harness.leaderboard import to_markdown


def _value(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {x}" for k, x in v.items())
    return str(v)


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def write_report(out: Path, meta: dict[str, Any], results: list[ClaimResult], tables: dict[str, Any],
                 plots: list[Path]) -> None:
    paper = meta["paper"]
    lines = [
        f"# Reproduction report — {paper.get('name')} (arXiv {paper.get('arxiv')}) at scale `{meta['scale']}`",
        "",
        f"- command: `polymoo reproduce {paper.get('key')} --scale {meta['scale']}`; suite `{meta['suite']}` "
        f"({meta['suite_file']}); runs: {meta['source']}",
        f"- models: {', '.join(meta['models'])}; methods: {', '.join(meta['methods'])}; seeds: "
        f"{', '.join(map(str, meta['seeds']))} ({meta['runs']} runs); reference: `{meta['reference']}`",
        f"- date: {meta['date']}; runtime: {meta['runtime_s']:.0f} s; MLflow: {meta['tracking_uri']}",
        "",
        "## What this scale can and cannot show",
        "",
        meta["scale_note"],
        "",
        "## Claims",
        "",
        "| claim | public value | measured here | scale | verdict |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        measured = r.summary or "—"
        lines.append(f"| **{r.id}**: {r.claim} | {_value(r.value)} {('(' + r.unit + ')') if r.unit and r.value != 'not public' else ''} "
                     f"| {measured} | {meta['scale']} | **{r.verdict}** |")
    lines += ["", "Notes per claim:", ""]
    for r in results:
        if r.note:
            lines.append(f"- `{r.id}`: {r.note}")
    lines += ["", "Verdicts: *reproduced* / *not reproduced* apply the claim's check at the paper's scale; "
              "*not comparable at this scale* reports the value measured here without judging the paper; "
              "*no public value to compare* marks what the paper does not publish (no number is invented); "
              "*not measured* means the runs lack a needed method or metric.", ""]
    for metric in ("bench", "acc", "loss"):
        if metric in tables:
            lines += [f"## Leaderboard — eval/{metric}", "", to_markdown(tables[metric])]
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({p.as_posix()})" for p in plots]
        lines.append("")
    if meta["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in meta["notes"]] + [""]
    (out / "report.md").write_text("\n".join(lines))
    data = {**meta, "claims": [r.as_dict() for r in results], "plots": [p.as_posix() for p in plots]}
    (out / "report.json").write_text(json.dumps(_clean(data), indent=2, default=str))
