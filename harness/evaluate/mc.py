"""Multiple-choice evaluation through lm-eval: generated local tasks (one YAML per language, grouped) and
lm-eval's own multilingual tasks, each mapped to a language.

Local tasks are generated (never hand-edited) from the CLDR items, with absolute `data_files`, one
`polymoo_babel_mc_<lang>.yaml` per language plus the group file `_polymoo_babel_mc.yaml` (the layout of
lm-eval's `tasks/belebele/`). The in-memory model is evaluated through lm-eval's `HFLM`, so the numbers are
the ones `lm_eval --model hf --model_args pretrained=<checkpoint> --include_path <dir>` gives on the same
checkpoint (tested in tests/evaluate/test_lm_eval_parity.py).

Metric names: the local task gives `eval/acc/<lang>`; an lm-eval task `T` mapped to language `L` gives
`eval/<family>/<L>` where `family` is the part of `T` before the first `_` (`xcopa_sw` -> `eval/xcopa/sw`),
and `eval/bench/<L>` is the mean over the lm-eval tasks measured for `L`. Next to every score `<key>`:

- `<key>/stderr`: lm-eval's standard error of that score over the task's items (`bootstrap_iters` > 0: a closed
  form for means such as acc, lm-eval's bootstrap for f1 / bleu-like metrics); averages of several tasks or
  languages combine them as independent: sqrt(Σ se²) / m;
- `<key>/chance`: the chance level of a multiple-choice task, the mean over its items of 1 / number of choices
  (from lm-eval's logged samples); absent for generation tasks (exact match has no chance level).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from harness.data.babel_mc import make_items

TASK_PREFIX = "polymoo_babel_mc"
LOCAL_TASKS = ("babel_mc",)  # eval.tasks entries polymoo generates itself
BOOTSTRAP_ITERS = 100  # the default of eval.bootstrap_iters; 0 turns lm-eval's standard errors off
SCORE_KEYS = ("acc,none", "acc", "exact_match,strict-match", "exact_match,flexible-extract", "exact_match,none",
              "f1,none")


def task_name(lang: str) -> str:
    return f"{TASK_PREFIX}_{lang.replace('-', '_')}"


def task_family(task: str) -> str:
    """'xcopa_sw' -> 'xcopa'; 'belebele_swh_Latn' -> 'belebele'; 'mgsm_direct_sw' -> 'mgsm'."""
    return task.split("_", 1)[0]


def write_tasks(languages: list[str], out_dir: Path, n_items: int, seed: int = 0) -> dict[str, str]:
    """Write items, one task YAML per language and the group YAML under `out_dir`; returns {task: language}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mapping = {}
    for lang in languages:
        items = make_items(lang, n_items, seed=seed)
        data_file = (out_dir / f"{task_name(lang)}.jsonl").resolve()
        data_file.write_text("".join(json.dumps(i.as_record(), ensure_ascii=False) + "\n" for i in items), encoding="utf-8")
        task = {
            "task": task_name(lang), "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data_file)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{query}}",
            "doc_to_choice": "{{choices}}", "doc_to_target": "{{gold}}", "target_delimiter": " ",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1, "language": lang},
        }
        (out_dir / f"{task_name(lang)}.yaml").write_text(yaml.safe_dump(task, sort_keys=False, allow_unicode=True))
        mapping[task_name(lang)] = lang
    group = {"group": TASK_PREFIX, "task": list(mapping),
             "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": True}],
             "metadata": {"version": 1}}
    (out_dir / f"_{TASK_PREFIX}.yaml").write_text(yaml.safe_dump(group, sort_keys=False))
    return mapping


def check_task_languages(tasks: Mapping[str, str | None], known: frozenset[str] | None = None) -> None:
    """Raise ValueError naming every lm-eval task without a (known) language."""
    from harness.languages import KNOWN_LANGUAGES

    known = known or KNOWN_LANGUAGES
    bad = [t for t, lang in tasks.items() if not lang]
    if bad:
        raise ValueError(f"lm-eval task(s) {bad} have no language mapping: give each as TASK=LANG (e.g. "
                         f"--task xcopa_sw=sw) or in the suite's eval.lm_eval_tasks; seen/unseen averages need it")
    unknown = {t: lang for t, lang in tasks.items() if lang not in known}
    if unknown:
        raise ValueError(f"lm-eval task(s) mapped to unknown languages: {unknown}; known: {', '.join(sorted(known))}")


def run_lm_eval(model: Any, tokenizer: Any, tasks: list[str], include_path: Path | None, batch_size: int = 16,
                limit: int | None = None, include_defaults: bool = False,
                bootstrap_iters: int = BOOTSTRAP_ITERS) -> dict[str, Any]:
    """Raw lm-eval results for an in-memory model, with lm-eval's standard errors (`bootstrap_iters` > 0) and its
    per-item samples (which give each multiple-choice task's number of choices, hence its chance level)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    manager = TaskManager(include_path=str(include_path) if include_path else None, include_defaults=include_defaults)
    missing = [t for t in tasks if t not in manager.all_tasks]
    if missing:
        where = f"{include_path} and lm-eval's task registry" if include_defaults else str(include_path)
        raise ValueError(f"lm-eval does not know task(s) {missing} (looked in {where})")
    return lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, log_samples=True,
                                   bootstrap_iters=bootstrap_iters, verbosity="ERROR")


def _score_key(row: Mapping[str, Any], task: str) -> str:
    for key in SCORE_KEYS:
        if isinstance(row.get(key), (int, float)):
            return key
    raise KeyError(f"lm-eval result for {task!r} has none of the scores {SCORE_KEYS}; keys: {sorted(row)}")


def primary_score(row: Mapping[str, Any], task: str) -> float:
    """The task's headline score: acc where it exists, else exact match / f1."""
    return float(row[_score_key(row, task)])


def primary_stderr(row: Mapping[str, Any], task: str) -> float | None:
    """lm-eval's standard error of the headline score (`acc,none` -> `acc_stderr,none`); None when lm-eval gave
    none ('N/A': bootstrap_iters=0, or a single item)."""
    metric, _, filt = _score_key(row, task).partition(",")
    value = row.get(f"{metric}_stderr,{filt}" if filt else f"{metric}_stderr")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def chance_level(results: Mapping[str, Any], task: str) -> float | None:
    """Mean over the task's items of 1 / number of choices, for a multiple-choice task whose samples lm-eval logged
    (one loglikelihood request per choice); None for generation tasks, for tasks scoring mutual information (two
    requests per choice) and when no samples were logged."""
    config = results.get("configs", {}).get(task, {})
    metrics = {m.get("metric") for m in config.get("metric_list", []) if isinstance(m, Mapping)}
    samples = results.get("samples", {}).get(task)
    if config.get("output_type") != "multiple_choice" or "acc_mutual_info" in metrics or not samples:
        return None
    return sum(1.0 / len(s["arguments"]) for s in samples) / len(samples)


def combine(values: list[float], stderrs: list[float | None], chances: list[float | None]) -> dict[str, float]:
    """The mean of m scores (tasks or languages), its standard error sqrt(Σ se²) / m as independent item samples,
    and the mean chance level; a part missing from any input is left out ({'': mean, '/stderr': ..., '/chance': ...})."""
    out = {"": sum(values) / len(values)}
    if stderrs and all(s is not None for s in stderrs):
        out["/stderr"] = math.sqrt(sum(s * s for s in stderrs)) / len(stderrs)  # type: ignore[operator]
    if chances and all(c is not None for c in chances):
        out["/chance"] = sum(chances) / len(chances)  # type: ignore[arg-type]
    return out


def _task_scores(results: dict[str, Any], task: str) -> tuple[float, float | None, float | None]:
    """(score, its standard error, chance level) of one task."""
    row = results["results"].get(task)
    if row is None:
        raise KeyError(f"lm-eval returned no result for task {task!r}")
    return primary_score(row, task), primary_stderr(row, task), chance_level(results, task)


def _combined(parts: dict[str, list[tuple[float, float | None, float | None]]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, scores in parts.items():
        values, stderrs, chances = (list(x) for x in zip(*scores, strict=True))
        out |= {key + suffix: v for suffix, v in combine(values, stderrs, chances).items()}
    return out


def accuracies(results: dict[str, Any], mapping: dict[str, str]) -> dict[str, float]:
    """{'eval/acc/<lang>': acc, with '/stderr' and '/chance' next to it} from raw lm-eval results of the local tasks."""
    return _combined({f"eval/acc/{lang}": [_task_scores(results, task)] for task, lang in mapping.items()})


def benchmark_scores(results: dict[str, Any], mapping: dict[str, str]) -> dict[str, float]:
    """{'eval/<family>/<lang>': score, 'eval/bench/<lang>': mean over the language's tasks} for lm-eval's own tasks,
    each with '/stderr' and '/chance' next to it where known (several tasks of one family and language: their mean)."""
    parts: dict[str, list[tuple[float, float | None, float | None]]] = {}
    for task, lang in mapping.items():
        scores = _task_scores(results, task)
        parts.setdefault(f"eval/{task_family(task)}/{lang}", []).append(scores)
        parts.setdefault(f"eval/bench/{lang}", []).append(scores)
    return _combined(parts)
