"""The one evaluation every method gets, after `train` returns (and `polymoo eval` on a saved checkpoint):
held-out loss / perplexity and multiple-choice scores per language, plus seen / unseen averages.

Metric names (the leaderboard depends only on these): `eval/<metric>/<lang>` and
`eval/<metric>/{seen,unseen}_mean`, for metric in loss, ppl, acc (local tasks), bench and one per lm-eval
task family (see `harness.evaluate.mc`); lm-eval scores carry `<key>/stderr` (lm-eval's standard error over
the items, `eval.bootstrap_iters`) and, for multiple-choice tasks, `<key>/chance`. The raw lm-eval output is
written to `eval_results.json` and logged as an artifact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.config import Suite
from harness.data.sft import LanguageData
from harness.evaluate.heldout import heldout_loss
from harness.evaluate.mc import (
    LOCAL_TASKS,
    accuracies,
    benchmark_scores,
    check_task_languages,
    combine,
    run_lm_eval,
    write_tasks,
)


def group_means(metrics: dict[str, float], seen: tuple[str, ...], unseen: tuple[str, ...]) -> dict[str, float]:
    """eval/<metric>/seen_mean and unseen_mean for every per-language metric family present, with '/stderr'
    (sqrt(Σ se²) / L) and '/chance' (the mean) when every language averaged has them."""
    out: dict[str, float] = {}
    families = {k.split("/")[1] for k in metrics if k.startswith("eval/") and k.count("/") == 2}
    for fam in sorted(families):
        for group, langs in (("seen", seen), ("unseen", unseen)):
            keys = [f"eval/{fam}/{lang}" for lang in langs if f"eval/{fam}/{lang}" in metrics]
            if keys:
                parts = combine([metrics[k] for k in keys], [metrics.get(f"{k}/stderr") for k in keys],
                                [metrics.get(f"{k}/chance") for k in keys])
                out |= {f"eval/{fam}/{group}_mean{suffix}": v for suffix, v in parts.items()}
    return out


def check_eval_config(suite: Suite, extra_tasks: dict[str, str | None] | None = None) -> dict[str, str]:
    """Validate the suite's eval section before anything runs; returns the lm-eval task -> language map.

    Raises ValueError for an unknown local task, or an lm-eval task without a known language.
    """
    unknown = [t for t in suite.eval.tasks if t not in LOCAL_TASKS]
    if unknown:
        raise ValueError(f"{suite.source}: eval.tasks: unknown task(s) {unknown}; polymoo generates "
                         f"{', '.join(LOCAL_TASKS)}; lm-eval's own tasks go in eval.lm_eval_tasks as TASK: LANGUAGE")
    mapping: dict[str, str | None] = {**suite.eval.lm_eval_tasks, **(extra_tasks or {})}
    check_task_languages(mapping)
    return {t: str(lang) for t, lang in mapping.items()}


def evaluate_model(suite: Suite, model: Any, tokenizer: Any, data: LanguageData | None, out_dir: Path,
                   tracker: Any = None, extra_tasks: dict[str, str | None] | None = None) -> dict[str, float]:
    """Evaluate `model` on every language of the suite; returns the metrics (and logs the raw output)."""
    langs = suite.languages
    bench_tasks = check_eval_config(suite, extra_tasks)
    metrics: dict[str, float] = {}
    raw: dict[str, Any] = {}
    if suite.eval.heldout_loss and data is not None:
        metrics |= heldout_loss(model, tokenizer, {lang: data.heldout[lang] for lang in langs.all},
                                suite.train.max_seq_len, suite.eval.batch_size)
    if suite.data.source == "interference" and data is not None:  # the lab's task accuracy (docs/interference_lab.md)
        from harness.data.interference import heldout_accuracy

        metrics |= heldout_accuracy(model, tokenizer, {lang: data.heldout[lang] for lang in langs.all},
                                    suite.train.max_seq_len, suite.data.item_length, suite.eval.batch_size)
    if "babel_mc" in suite.eval.tasks:
        task_dir = out_dir / "lm_eval_tasks"
        mapping = write_tasks(list(langs.all), task_dir, suite.eval.mc_items_per_language)
        results = run_lm_eval(model, tokenizer, list(mapping), task_dir, suite.eval.batch_size, suite.eval.limit,
                              bootstrap_iters=suite.eval.bootstrap_iters)
        raw["babel_mc"] = results["results"]
        metrics |= accuracies(results, mapping)
    if bench_tasks:
        results = run_lm_eval(model, tokenizer, list(bench_tasks), None, suite.eval.batch_size, suite.eval.limit,
                              include_defaults=True, bootstrap_iters=suite.eval.bootstrap_iters)
        raw["lm_eval"] = results["results"]
        raw["lm_eval_languages"] = bench_tasks
        metrics |= benchmark_scores(results, bench_tasks)
    metrics |= group_means(metrics, langs.seen, langs.unseen)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval_results.json").write_text(json.dumps({"metrics": metrics, "lm_eval": raw}, indent=2, default=str))
    if tracker is not None:
        tracker.log_artifact(out_dir / "eval_results.json", "eval")
    return metrics
