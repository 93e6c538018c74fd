"""Claims: a paper's public claims (results/paper/<paper>.yaml) measured against leaderboard tables, with a verdict.

Verdicts:
- `reproduced` / `not reproduced`: the claim's check (`expect`) at the claim's own scale;
- `not comparable at this scale`: measured at another scale (e.g. tiny twins for a claim about 8B models):
  the value is reported with its direction and significance, but no verdict on the paper is drawn;
- `no public value to compare`: the paper does not make this value public (nothing is invented);
- `not measured`: the runs lack the methods or metrics the claim needs.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.leaderboard.aggregate import Table, significance

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_COMPARABLE = "not comparable at this scale"
NO_PUBLIC_VALUE = "no public value to compare"
NOT_MEASURED = "not measured"
MEASURE_KINDS = ("delta", "ratio", "separability")


@dataclass
class Measurement:
    model: str
    method: str
    value: float
    versus: str = ""
    p: float = math.nan
    seeds: int = 0


@dataclass
class ClaimResult:
    id: str
    claim: str
    public: bool
    value: Any
    unit: str
    verdict: str
    measured: list[Measurement] = field(default_factory=list)
    summary: str = ""
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_claims(path: Path) -> dict[str, Any]:
    """Read and check a claims file; ValueError naming the entry and key for any problem."""
    if not path.exists():
        raise FileNotFoundError(f"claims file {path} not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: malformed YAML: {err}") from err
    problems = []
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list) or "paper" not in data:
        raise ValueError(f"{path}: expected keys paper, reference, claims (a list)")
    for i, c in enumerate(data["claims"]):
        for key in ("id", "claim", "public", "value"):
            if key not in c:
                problems.append(f"claims[{i}]: missing {key!r}")
        if c.get("value") == "not public" and c.get("public") is True and "expect" in c \
                and "direction" not in c.get("expect", {}):
            problems.append(f"claims[{i}] ({c.get('id')}): a value that is not public can only have a direction check")
        if isinstance(c.get("value"), (int, float, dict)) and not c.get("public"):
            problems.append(f"claims[{i}] ({c.get('id')}): a numeric value must be public (public: true)")
        kind = (c.get("measure") or {}).get("kind")
        if kind is not None and kind not in MEASURE_KINDS:
            problems.append(f"claims[{i}].measure.kind: expected one of {MEASURE_KINDS}, got {kind!r}")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return data


def _match(label: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(label, p) for p in patterns)


def measure_delta(table: Table, measure: dict[str, Any], reference: str) -> list[Measurement]:
    group = measure["group"]
    scale = 100.0 if measure.get("points") and table.metric not in ("loss", "ppl") else 1.0
    out: list[Measurement] = []
    for model in sorted({r.model for r in table.rows}):
        rows = {r.method: r for r in table.rows if r.model == model}
        candidates = [r for label, r in rows.items() if _match(label, measure["methods"])]
        per_model = []
        for versus in measure.get("versus", [reference]):
            ref = rows.get(versus)
            if ref is None or group not in ref.cells:
                continue
            for r in candidates:
                if group not in r.cells or not r.cells[group].values:
                    continue
                t = significance(r.cells[group], ref.cells[group])
                per_model.append(Measurement(model, r.method, t.delta * scale, versus, t.p, len(r.cells[group].values)))
        if measure.get("select", "each") == "best" and per_model:
            per_model = [max(per_model, key=lambda m: m.value)]
        out += per_model
    return out


def measure_ratio(table: Table, measure: dict[str, Any]) -> list[Measurement]:
    metric = measure["metric"]
    out = []
    for model in sorted({r.model for r in table.rows}):
        rows = [r for r in table.rows if r.model == model]
        refs = [r for r in rows if _match(r.method, [measure["reference"]]) and metric in r.cells and r.cells[metric].values]
        for r in rows:
            if _match(r.method, measure["methods"]) and metric in r.cells and r.cells[metric].values and refs:
                out.append(Measurement(model, r.method, r.cells[metric].mean / refs[0].cells[metric].mean,
                                       refs[0].method, math.nan, len(r.cells[metric].values)))
    return out


def check(expect: dict[str, Any], value: Any, values: list[float]) -> bool:
    tol = float(expect.get("tolerance", 0.0))
    if "direction" in expect:
        return {"positive": all(v > 0 for v in values), "non_negative": all(v >= -tol for v in values),
                "non_positive": all(v <= tol for v in values), "negative": all(v < 0 for v in values)}[expect["direction"]]
    if expect.get("range"):
        return all(value["min"] - tol <= v <= value["max"] + tol for v in values)
    if expect.get("best_near_max"):
        return abs(max(values) - value["max"]) <= tol and all(v >= -tol for v in values)
    if "near" in expect:
        return all(abs(v - expect["near"]) <= tol for v in values)
    raise ValueError(f"unknown expect {expect}")


def _summary(ms: list[Measurement], unit_points: bool, signed: bool = True) -> str:
    parts = []
    for m in ms:
        p = "" if math.isnan(m.p) else f", p={m.p:.3f}"
        vs = (" vs " if signed else " / ") + m.versus if m.versus else ""
        value = f"{m.value:+.3f}" if signed else f"{m.value:.3f}"
        parts.append(f"{m.model}: {m.method}{vs} {value}{' pts' if unit_points else ''} (n={m.seeds}{p})")
    return "; ".join(parts)


def evaluate_claim(claim: dict[str, Any], tables: dict[str, Table], reference: str, scale: str, paper_scale: str,
                   separability: dict[str, list[Measurement]] | None = None) -> ClaimResult:
    res = ClaimResult(claim["id"], claim["claim"], bool(claim["public"]), claim["value"], claim.get("unit", ""), "")
    measure = claim.get("measure")
    if not measure:
        res.verdict = NO_PUBLIC_VALUE if claim["value"] == "not public" else NOT_MEASURED
        res.note = "the paper does not publish this; polymoo records its own choice in the suite" \
            if claim["value"] == "not public" else "no measure defined"
        return res
    kind = measure["kind"]
    if kind == "delta":
        metric = measure.get("metric", "primary")
        table = tables.get(metric)
        res.measured = measure_delta(table, measure, reference) if table else []
    elif kind == "ratio":
        res.measured = measure_ratio(tables["perf"], measure) if "perf" in tables else []
    else:
        res.measured = list((separability or {}).get(measure.get("statistic", "probe_acc"), []))
    res.summary = _summary(res.measured, bool(measure.get("points")), signed=kind != "ratio")
    if not res.measured:
        res.verdict = NOT_MEASURED
        wanted = measure.get("methods", [])
        res.note = (f"the runs lack the methods or metrics this claim needs (methods {wanted}, "
                    f"versus {measure.get('versus', measure.get('reference', reference))})")
        return res
    values = [m.value for m in res.measured]
    expect = claim.get("expect", {})
    holds = check(expect, claim["value"], values) if expect else None
    if scale != paper_scale:
        res.verdict = NOT_COMPARABLE
        if kind == "ratio":
            shape = f"ratio at this scale: {min(values):.3f}–{max(values):.3f}"
        else:
            shape = "direction at this scale: " + (
                "positive" if all(v > 0 for v in values) else "negative" if all(v < 0 for v in values) else "mixed")
        res.note = (f"measured on {scale} models, the claim is about {paper_scale}-scale models; {shape}"
                    + ("" if holds is None else f"; the claim's check would {'pass' if holds else 'fail'} on these "
                                                f"numbers, which says nothing about the paper"))
        return res
    if claim["value"] == "not public" and "direction" not in expect:
        res.verdict = NO_PUBLIC_VALUE
        return res
    res.verdict = REPRODUCED if holds else NOT_REPRODUCED
    return res
