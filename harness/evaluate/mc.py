"""Multiple-choice evaluation through lm-eval: generated local tasks (one YAML per language, grouped) and
lm-eval's own multilingual tasks, each mapped to a language.

Local tasks are generated (never hand-edited) from the CLDR items, with absolute `data_files`, one
`polymoo_babel_mc_<lang>.yaml` per language plus the group file `_polymoo_babel_mc.yaml` (the layout of
lm-eval's `tasks/belebele/`). The in-memory model is evaluated through lm-eval's `HFLM`, so the numbers are
the ones `lm_eval --model hf --model_args pretrained=<checkpoint> --include_path <dir>` gives on the same
checkpoint (tested in tests/evaluate/test_lm_eval_parity.py).

Metric names: the local task gives `eval/acc/<lang>`; an lm-eval task `T` mapped to language `L` gives
`eval/<family>/<L>` where `family` is the part of `T` before the first `_` (`xcopa_sw` -> `eval/xcopa/sw`),
and `eval/bench/<L>` is the mean over the lm-eval families measured for `L`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from harness.data.babel_mc import make_items

TASK_PREFIX = "polymoo_babel_mc"
LOCAL_TASKS = ("babel_mc",)  # eval.tasks entries polymoo generates itself
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
                limit: int | None = None, include_defaults: bool = False) -> dict[str, Any]:
    """Raw lm-eval results for an in-memory model."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    manager = TaskManager(include_path=str(include_path) if include_path else None, include_defaults=include_defaults)
    missing = [t for t in tasks if t not in manager.all_tasks]
    if missing:
        where = f"{include_path} and lm-eval's task registry" if include_defaults else str(include_path)
        raise ValueError(f"lm-eval does not know task(s) {missing} (looked in {where})")
    return lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, log_samples=False,
                                   bootstrap_iters=0, verbosity="ERROR")


def primary_score(row: Mapping[str, Any], task: str) -> float:
    """The task's headline score: acc where it exists, else exact match / f1."""
    for key in SCORE_KEYS:
        if isinstance(row.get(key), (int, float)):
            return float(row[key])
    raise KeyError(f"lm-eval result for {task!r} has none of the scores {SCORE_KEYS}; keys: {sorted(row)}")


def accuracies(results: dict[str, Any], mapping: dict[str, str]) -> dict[str, float]:
    """{'eval/acc/<lang>': acc} from raw lm-eval results of the local tasks."""
    out = {}
    for task, lang in mapping.items():
        row = results["results"].get(task)
        if row is None:
            raise KeyError(f"lm-eval returned no result for task {task!r}")
        out[f"eval/acc/{lang}"] = primary_score(row, task)
    return out


def benchmark_scores(results: dict[str, Any], mapping: dict[str, str]) -> dict[str, float]:
    """{'eval/<family>/<lang>': score, 'eval/bench/<lang>': mean over families} for lm-eval's own tasks."""
    out: dict[str, float] = {}
    per_lang: dict[str, list[float]] = {}
    for task, lang in mapping.items():
        row = results["results"].get(task)
        if row is None:
            raise KeyError(f"lm-eval returned no result for task {task!r}")
        score = primary_score(row, task)
        key = f"eval/{task_family(task)}/{lang}"
        if key in out:  # two tasks of one family for one language: average them
            out[key] = (out[key] + score) / 2
        else:
            out[key] = score
        per_lang.setdefault(lang, []).append(score)
    for lang, values in per_lang.items():
        out[f"eval/bench/{lang}"] = sum(values) / len(values)
    return out
