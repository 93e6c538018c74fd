"""The one evaluation every method gets, after `train` returns: held-out loss and MC accuracy per language,
plus seen / unseen averages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.config import Suite
from harness.data.sft import LanguageData
from harness.evaluate.heldout import heldout_loss
from harness.evaluate.mc import accuracies, run_lm_eval, write_tasks


def group_means(metrics: dict[str, float], seen: tuple[str, ...], unseen: tuple[str, ...]) -> dict[str, float]:
    """eval/<metric>/seen_mean and unseen_mean for every per-language metric family present."""
    out: dict[str, float] = {}
    families = {k.split("/")[1] for k in metrics if k.startswith("eval/") and k.count("/") == 2}
    for fam in sorted(families):
        for group, langs in (("seen", seen), ("unseen", unseen)):
            values = [metrics[f"eval/{fam}/{lang}"] for lang in langs if f"eval/{fam}/{lang}" in metrics]
            if values:
                out[f"eval/{fam}/{group}_mean"] = sum(values) / len(values)
    return out


def evaluate_model(suite: Suite, model: Any, tokenizer: Any, data: LanguageData, out_dir: Path,
                   tracker: Any = None) -> dict[str, float]:
    langs = suite.languages
    metrics: dict[str, float] = {}
    raw: dict[str, Any] = {}
    if suite.eval.heldout_loss:
        metrics |= heldout_loss(model, tokenizer, {lang: data.heldout[lang] for lang in langs.all},
                                suite.train.max_seq_len, suite.eval.batch_size)
    if "babel_mc" in suite.eval.tasks:
        mapping = write_tasks(list(langs.all), out_dir / "lm_eval_tasks", suite.eval.mc_items_per_language)
        results = run_lm_eval(model, tokenizer, list(mapping), out_dir / "lm_eval_tasks", suite.eval.batch_size,
                              suite.eval.limit)
        raw["babel_mc"] = results["results"]
        metrics |= accuracies(results, mapping)
    if suite.eval.lm_eval_tasks:
        mapping = dict(suite.eval.lm_eval_tasks)
        results = run_lm_eval(model, tokenizer, list(mapping), None, suite.eval.batch_size, suite.eval.limit,
                              include_defaults=True)
        raw["lm_eval"] = results["results"]
        metrics |= accuracies(results, mapping)
    metrics |= group_means(metrics, langs.seen, langs.unseen)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval_results.json").write_text(json.dumps({"metrics": metrics, "lm_eval": raw}, indent=2, default=str))
    if tracker is not None:
        tracker.log_artifact(out_dir / "eval_results.json", "eval")
    return metrics
