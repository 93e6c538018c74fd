"""Multiple-choice accuracy per language through lm-eval: one generated YAML task per language.

Task files are generated (never hand-edited) from the CLDR items, with absolute `data_files`, and
grouped as `polymoo_babel_mc`. The in-memory model is evaluated through lm-eval's `HFLM`, so the numbers
are the ones `lm_eval --model hf --include_path <dir>` gives on the same checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from harness.data.babel_mc import make_items

TASK_PREFIX = "polymoo_babel_mc"


def task_name(lang: str) -> str:
    return f"{TASK_PREFIX}_{lang.replace('-', '_')}"


def write_tasks(languages: list[str], out_dir: Path, n_items: int, seed: int = 0) -> dict[str, str]:
    """Write items and task YAMLs under `out_dir`; returns {task name: language}."""
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
    return mapping


def run_lm_eval(model: Any, tokenizer: Any, tasks: list[str], include_path: Path | None, batch_size: int = 16,
                limit: int | None = None, include_defaults: bool = False) -> dict[str, Any]:
    """Raw lm-eval results for an in-memory model."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    manager = TaskManager(include_path=str(include_path) if include_path else None, include_defaults=include_defaults)
    return lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=limit, log_samples=False,
                                   bootstrap_iters=0, verbosity="ERROR")


def accuracies(results: dict[str, Any], mapping: dict[str, str]) -> dict[str, float]:
    """{'eval/acc/<lang>': acc} from raw lm-eval results."""
    out = {}
    for task, lang in mapping.items():
        row = results["results"].get(task)
        if row is None:
            raise KeyError(f"lm-eval returned no result for task {task!r}")
        acc = row.get("acc,none", row.get("acc"))
        out[f"eval/acc/{lang}"] = float(acc)
    return out
