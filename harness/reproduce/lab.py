"""Lab verdicts: a paper's mechanism claims tested on the interference lab (`polymoo reproduce PAPER --scale lab`).

The paper's own figures are about 8B models and stay "not comparable" on tiny twins. What the lab can test, with
power, is the mechanism each claim rests on: does the method change the worst language's held-out loss against its
comparator, in which direction, and is that beyond seed noise. Claims live in `results/paper/<paper>_lab.yaml`:

    reference: joint_sft
    alpha: 0.01
    claims:
      - {id: bkmoo_vs_joint, claim: "...", methods: ["bkmoo*"], versus: joint_sft, expect: lower}
      - {id: separability, claim: "...", kind: separability, expect: higher}

Statistic per run: the largest `eval/answer_loss/<lang>` over the seen languages (the worst language on the lab's
answer words, docs/interference_lab.md). Each method is compared with `versus`, paired by seed (harness.analysis.stats).
Verdicts: `holds on the lab` (p < alpha in the claim's direction), `contradicted on the lab` (p < alpha against it),
`no difference at alpha`, `not measured` (the runs lack the method or metric). Separability claims (one seed, no
test) report their direction only: `holds on the lab` / `contradicted on the lab` by sign.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.analysis.stats import paired_test

HOLDS = "holds on the lab"
CONTRADICTED = "contradicted on the lab"
NO_DIFFERENCE = "no difference at alpha"
NOT_MEASURED = "not measured"
DIRECTIONS = ("lower", "higher")


@dataclass
class LabComparison:
    method: str
    versus: str
    n: int
    mean_diff: float  # method − versus (worst-language answer loss; separability: after − before)
    se_diff: float = math.nan
    p_t: float = math.nan
    p_wilcoxon: float = math.nan


@dataclass
class LabVerdict:
    id: str
    claim: str
    expect: str
    verdict: str
    comparisons: list[LabComparison] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lab_claims_file(paper: str) -> Path:
    from harness.reproduce.run import REPO

    return REPO / "results" / "paper" / f"{paper}_lab.yaml"


def load_lab_claims(path: Path) -> dict[str, Any]:
    """Read and check a lab claims file; ValueError naming the entry and key for any problem."""
    if not path.exists():
        raise FileNotFoundError(f"lab claims file {path} not found")
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list):
        raise ValueError(f"{path}: expected keys reference, alpha, claims (a list)")
    problems = []
    for i, c in enumerate(data["claims"]):
        kind = c.get("kind", "paired")
        needed = ("id", "claim", "expect") + (("methods", "versus") if kind == "paired" else ())
        problems += [f"claims[{i}]: missing {k!r}" for k in needed if k not in c]
        if c.get("expect") not in DIRECTIONS:
            problems.append(f"claims[{i}].expect: expected one of {DIRECTIONS}, got {c.get('expect')!r}")
        if kind not in ("paired", "separability"):
            problems.append(f"claims[{i}].kind: expected paired or separability, got {kind!r}")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return data


def worst_answer_loss(runs: Any, languages: tuple[str, ...]) -> dict[str, dict[int, float]]:
    """method label -> seed -> the largest eval/answer_loss over `languages`, from an MLflow runs frame."""
    cols = [f"metrics.eval/answer_loss/{x}" for x in languages]
    out: dict[str, dict[int, float]] = {}
    if not len(runs) or any(c not in runs.columns for c in cols):
        return out
    for _, row in runs.iterrows():
        values = [row[c] for c in cols]
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            continue
        out.setdefault(str(row["tags.polymoo.method"]), {})[int(row["tags.polymoo.seed"])] = float(max(values))
    return out


def _verdict(diffs: list[LabComparison], expect: str, alpha: float) -> str:
    sign = -1.0 if expect == "lower" else 1.0
    significant = [c for c in diffs if c.p_t < alpha]
    if significant and all(sign * c.mean_diff > 0 for c in significant):
        return HOLDS
    if significant and all(sign * c.mean_diff < 0 for c in significant):
        return CONTRADICTED
    if significant:
        return f"mixed at alpha ({len(significant)} of {len(diffs)} significant, in both directions)"
    return NO_DIFFERENCE


def paired_claim(claim: dict[str, Any], stat: dict[str, dict[int, float]], alpha: float) -> LabVerdict:
    res = LabVerdict(claim["id"], claim["claim"], claim["expect"], NOT_MEASURED)
    base = stat.get(claim["versus"], {})
    for label in sorted(stat):
        if label == claim["versus"] or not any(fnmatch.fnmatchcase(label, p) for p in claim["methods"]):
            continue
        seeds = sorted(set(stat[label]) & set(base))
        if len(seeds) < 2:
            continue
        t = paired_test([stat[label][s] for s in seeds], [base[s] for s in seeds])
        res.comparisons.append(LabComparison(label, claim["versus"], t.n, t.mean_diff, t.se_diff, t.p_t, t.p_wilcoxon))
    if not res.comparisons:
        res.note = f"the runs lack methods {claim['methods']} or {claim['versus']!r} with ≥ 2 shared seeds"
        return res
    res.verdict = _verdict(res.comparisons, claim["expect"], alpha)
    return res


def separability_claim(claim: dict[str, Any], measured: list[Any]) -> LabVerdict:
    res = LabVerdict(claim["id"], claim["claim"], claim["expect"], NOT_MEASURED)
    res.comparisons = [LabComparison(m.method, "base model", m.seeds, m.value) for m in measured]
    if not res.comparisons:
        res.note = "no saved models to probe (separability off, or train.save_model false)"
        return res
    sign = 1.0 if claim["expect"] == "higher" else -1.0
    ups = [sign * c.mean_diff > 0 for c in res.comparisons]
    res.verdict = HOLDS if all(ups) else CONTRADICTED if not any(ups) else "mixed"
    res.note = "one seed per method and no test: the direction only"
    return res


def evaluate_lab_claims(claims: dict[str, Any], runs: Any, languages: tuple[str, ...],
                        separability: dict[str, list[Any]] | None = None) -> list[LabVerdict]:
    stat = worst_answer_loss(runs, languages)
    alpha = float(claims.get("alpha", 0.01))
    out = []
    for c in claims["claims"]:
        if c.get("kind", "paired") == "separability":
            out.append(separability_claim(c, (separability or {}).get(c.get("statistic", "probe_acc"), [])))
        else:
            out.append(paired_claim(c, stat, alpha))
    return out


def lab_markdown(verdicts: list[LabVerdict], alpha: float) -> list[str]:
    lines = ["## Lab verdicts (mechanism claims on the interference lab)", "",
             f"Statistic: the worst seen language's held-out answer loss per run (lower is better), each method "
             f"minus its comparator paired by seed; paired t-test, alpha {alpha}. Separability: after − before.", "",
             "| claim | expected | method vs comparator: Δ ± s.e. (n, p_t) | verdict |", "|---|---|---|---|"]
    for v in verdicts:
        cells = "; ".join(
            f"{c.method} vs {c.versus}: {c.mean_diff:+.4f}" + ("" if math.isnan(c.se_diff) else
                                                              f" ± {c.se_diff:.4f} (n={c.n}, p={c.p_t:.2g})")
            for c in v.comparisons) or "—"
        lines.append(f"| **{v.id}**: {v.claim} | {v.expect} | {cells} | **{v.verdict}** |")
    notes = [f"- `{v.id}`: {v.note}" for v in verdicts if v.note]
    return lines + ([""] + notes if notes else []) + [""]
