"""`polymoo analyze interference SUITE`: the interference matrix of a suite's languages (Alastruey et al. 2025, arXiv
2508.02256): train on each language alone and on each pair, with the same steps, batch per language and seeds, and
report for every ordered pair (i, j)

    interference[i][j] = (L_i(trained on {i, j}) - L_i(trained on {i})) / L_i(trained on {i})

where L_i is language i's held-out loss: on the lab (`data.source: interference`) the answer words' loss by default,
where the conflict lives (`eval/answer_loss`, as harness.analysis.lab_report), elsewhere the token mean over the
response (`eval/loss`); `metric` chooses. Positive: adding j hurts i (negative
interference); negative: j helps i (transfer). Values are averaged over the seeds; the diagonal is 0.

Outputs: interference.json (every loss, per seed), interference.md (the table), interference.png (the heatmap), and,
unless `log=False`, one MLflow run with `interference/<i>/<j>` and `interference/loss/<i>/<alone|j>` metrics.
Works on any suite source: the lab (`data.source: interference`) and real languages (chatterbot, json, hub).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import Any

from harness.config import Languages, MethodSpec, Suite


@dataclass
class InterferenceResult:
    languages: list[str]
    method: str
    seeds: list[int]
    alone: dict[str, list[float]] = field(default_factory=dict)  # lang -> loss per seed
    paired: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # lang -> partner -> loss per seed
    metric: str = "loss"  # which held-out loss: eval/<metric>/<lang>

    def matrix(self) -> list[list[float]]:
        """interference[i][j], averaged over seeds (relative change of i's loss when trained with j)."""
        out = []
        for a in self.languages:
            row = []
            for b in self.languages:
                if a == b:
                    row.append(0.0)
                    continue
                rel = [(p - s) / s for p, s in zip(self.paired[a][b], self.alone[a], strict=True)]
                row.append(sum(rel) / len(rel))
            out.append(row)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"languages": self.languages, "method": self.method, "seeds": self.seeds, "metric": f"eval/{self.metric}",
                "alone": self.alone, "paired": self.paired, "interference": self.matrix()}

    def table(self) -> str:
        """Markdown: row = the language measured, column = the partner it was trained with."""
        head = f"| measured \\ with | alone {self.metric} | " + " | ".join(self.languages) + " |"
        lines = [head, "|" + "---|" * (len(self.languages) + 2)]
        for a, row in zip(self.languages, self.matrix(), strict=True):
            alone = sum(self.alone[a]) / len(self.alone[a])
            cells = " | ".join("—" if a == b else f"{v:+.3f}" for b, v in zip(self.languages, row, strict=True))
            lines.append(f"| {a} | {alone:.4f} | {cells} |")
        return "\n".join(lines)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for a, row in zip(self.languages, self.matrix(), strict=True):
            out[f"interference/loss/{a}/alone"] = sum(self.alone[a]) / len(self.alone[a])
            for b, v in zip(self.languages, row, strict=True):
                if a != b:
                    out[f"interference/{a}/{b}"] = v
                    out[f"interference/loss/{a}/{b}"] = sum(self.paired[a][b]) / len(self.paired[a][b])
        return out


def subset_suite(suite: Suite, languages: tuple[str, ...]) -> Suite:
    """The suite trained on `languages` only (all seen). A lab language's data do not depend on its partners."""
    return replace(suite, languages=Languages(seen=languages))


def train_and_evaluate(suite: Suite, model_name: str, spec: MethodSpec, seed: int, run_dir: Path) -> dict[str, float]:
    """Train `spec` on the suite's seen languages with the harness's model, data and seed; held-out loss (and the
    lab's accuracy) per language. No MLflow run: the matrix logs its own summary."""
    from harness.data.sft import load_language_data
    from harness.evaluate.heldout import heldout_loss
    from harness.method import RunContext
    from harness.models.loading import load_model
    from harness.registry import get_method
    from harness.seeding import seed_everything
    from harness.suite import method_options
    from harness.tracking import NullTracker

    seed_everything(seed)
    model, tok = load_model(model_name, suite.scale, suite.train.dtype, suite.train.lora, init=suite.init)
    data = load_language_data(suite.data, suite.languages.seen)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = RunContext(suite=suite, method=spec, model_name=model_name, seed=seed, model=model, tokenizer=tok, data=data,
                     run_dir=run_dir, tracker=NullTracker())
    trained = get_method(spec.name).train(run, method_options(spec)).model
    held = {lang: data.heldout[lang] for lang in suite.languages.seen}
    out = heldout_loss(trained, tok, held, suite.train.max_seq_len, suite.eval.batch_size)
    if suite.data.source == "interference":
        from harness.data.interference import heldout_accuracy

        out |= heldout_accuracy(trained, tok, held, suite.train.max_seq_len, suite.data.item_length,
                                suite.eval.batch_size)
    run.drop_checkpoints()  # the matrix keeps losses (a lab matrix: 280 MB of checkpoints otherwise)
    return out


METRICS = ("loss", "answer_loss")


def default_metric(suite: Suite) -> str:
    return "answer_loss" if suite.data.source == "interference" else "loss"


def interference_matrix(suite: Suite, method: str = "joint_sft", model: str | None = None,
                        seeds: list[int] | None = None, languages: list[str] | None = None,
                        work_dir: Path | None = None, metric: str | None = None) -> InterferenceResult:
    """Train alone and in every pair (K + K(K-1)/2 trainings per seed) and collect the held-out losses."""
    metric = metric or default_metric(suite)
    if metric not in METRICS:
        raise ValueError(f"interference matrix: metric {metric!r}, expected one of {', '.join(METRICS)}")
    if metric == "answer_loss" and suite.data.source != "interference":
        raise ValueError(f"interference matrix: metric answer_loss needs the lab's answer words (data.source: "
                         f"interference); this suite's source is {suite.data.source}: use metric loss")
    langs = list(languages or suite.languages.seen)
    if len(langs) < 2:
        raise ValueError(f"interference matrix: needs at least 2 languages, got {langs}")
    specs = [m for m in suite.methods if method in (m.name, m.display)]
    spec = specs[0] if specs else MethodSpec(name=method)
    model_name = model or suite.models[0]
    seeds = list(seeds if seeds is not None else suite.seeds)
    work_dir = work_dir or Path(suite.output_dir) / suite.suite.name / "interference"
    result = InterferenceResult(languages=langs, method=spec.display, seeds=seeds, metric=metric,
                                alone={a: [] for a in langs}, paired={a: {b: [] for b in langs if b != a} for a in langs})
    for seed in seeds:
        for a in langs:
            loss = train_and_evaluate(subset_suite(suite, (a,)), model_name, spec, seed, work_dir / a / f"seed{seed}")
            result.alone[a].append(loss[f"eval/{metric}/{a}"])
        for a, b in combinations(langs, 2):
            loss = train_and_evaluate(subset_suite(suite, (a, b)), model_name, spec, seed,
                                      work_dir / f"{a}+{b}" / f"seed{seed}")
            result.paired[a][b].append(loss[f"eval/{metric}/{a}"])
            result.paired[b][a].append(loss[f"eval/{metric}/{b}"])
    return result


def write_outputs(result: InterferenceResult, out_dir: Path, title: str = "") -> list[Path]:
    """interference.json, interference.md and the heatmap interference.png under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / "interference.json", out_dir / "interference.md"]
    files[0].write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    files[1].write_text(f"# Interference matrix{': ' + title if title else ''}\n\n"
                        f"method {result.method}, seeds {result.seeds}; cell = relative change of the row language's "
                        f"held-out loss (eval/{result.metric}) when trained with the column language (positive = negative interference)\n\n"
                        f"{result.table()}\n")
    files.append(heatmap(result, out_dir / "interference.png", title))
    return files


def heatmap(result: InterferenceResult, path: Path, title: str = "") -> Path:
    from harness.plots import _plt, _save

    plt = _plt()
    matrix = result.matrix()
    n = len(result.languages)
    bound = max(1e-6, max(abs(v) for row in matrix for v in row))
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.5, 1.1 * n + 1.5))
    im = ax.imshow(matrix, cmap="RdBu_r", vmin=-bound, vmax=bound)
    ax.set_xticks(range(n), result.languages)
    ax.set_yticks(range(n), result.languages)
    ax.set_xlabel("trained together with")
    ax.set_ylabel("language measured")
    for i in range(n):
        for j in range(n):
            dark = abs(matrix[i][j]) > 0.6 * bound  # white on the saturated cells, readable on either end
            ax.text(j, i, "—" if i == j else f"{matrix[i][j]:+.3f}", ha="center", va="center", fontsize=9,
                    color="white" if dark else "black")
    fig.colorbar(im, ax=ax, label=f"relative change of held-out {result.metric} vs alone")
    ax.set_title(title or f"interference ({result.method}, {len(result.seeds)} seeds)")
    return _save(fig, path)


def log_result(suite: Suite, result: InterferenceResult, files: list[Path], model: str) -> str:
    """One MLflow run `interference/<model>/<method>` in the suite's experiment; returns its id."""
    from harness.tracking import git_commit, open_run

    tags = {"polymoo.analysis": "interference", "polymoo.suite": suite.suite.name, "polymoo.model": model,
            "polymoo.method": result.method, "polymoo.config_hash": suite.config_hash(),
            "polymoo.git_commit": git_commit()}
    run_dir = files[0].parent
    tracker = open_run(suite, f"interference/{model}/{result.method}", tags, run_dir, resume=False)
    tracker.log_params({"interference.languages": ",".join(result.languages),
                        "interference.seeds": ",".join(map(str, result.seeds)),
                        "interference.metric": f"eval/{result.metric}"})
    tracker.log_metrics(result.metrics())
    for f in files:
        tracker.log_artifact(f, "interference")
    tracker.finish("FINISHED")
    return tracker.run_id
