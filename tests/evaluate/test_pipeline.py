"""Evaluation pipeline pieces: metric names, seen/unseen means, lm-eval task families and language mapping errors."""

from __future__ import annotations

import pytest
import yaml

from harness.evaluate.mc import benchmark_scores, primary_score, task_family, write_tasks
from harness.evaluate.pipeline import check_eval_config, group_means


def test_group_means_per_family():
    m = {"eval/acc/en": 0.5, "eval/acc/fr": 0.3, "eval/acc/sw": 0.2, "eval/loss/en": 2.0}
    out = group_means(m, ("en", "fr"), ("sw",))
    assert out == {"eval/acc/seen_mean": pytest.approx(0.4), "eval/acc/unseen_mean": pytest.approx(0.2),
                   "eval/loss/seen_mean": pytest.approx(2.0)}


@pytest.mark.parametrize(("task", "family"), [("xcopa_sw", "xcopa"), ("belebele_swh_Latn", "belebele"),
                                              ("mgsm_direct_sw", "mgsm"), ("xnli", "xnli")])
def test_task_family(task, family):
    assert task_family(task) == family


def test_benchmark_scores_map_tasks_to_languages():
    results = {"results": {"xcopa_sw": {"acc,none": 0.6}, "xnli_sw": {"acc,none": 0.4},
                           "xnli_en": {"acc,none": 0.8}, "mgsm_direct_sw": {"exact_match,strict-match": 0.1}}}
    mapping = {"xcopa_sw": "sw", "xnli_sw": "sw", "xnli_en": "en", "mgsm_direct_sw": "sw"}
    out = benchmark_scores(results, mapping)
    assert out["eval/xcopa/sw"] == 0.6 and out["eval/xnli/en"] == 0.8 and out["eval/mgsm/sw"] == 0.1
    assert out["eval/bench/sw"] == pytest.approx((0.6 + 0.4 + 0.1) / 3)
    assert group_means(out, ("en",), ("sw",))["eval/bench/unseen_mean"] == pytest.approx(out["eval/bench/sw"])
    with pytest.raises(KeyError, match="no result for task 'xcopa_tr'"):
        benchmark_scores(results, {"xcopa_tr": "tr"})
    with pytest.raises(KeyError, match="none of the scores"):
        primary_score({"bleu,none": 3.0}, "t")


def test_write_tasks_layout(tmp_path):
    mapping = write_tasks(["en", "zh-hant"], tmp_path, n_items=5)
    assert mapping == {"polymoo_babel_mc_en": "en", "polymoo_babel_mc_zh_hant": "zh-hant"}
    group = yaml.safe_load((tmp_path / "_polymoo_babel_mc.yaml").read_text())
    assert group["group"] == "polymoo_babel_mc" and group["task"] == list(mapping)
    task = yaml.safe_load((tmp_path / "polymoo_babel_mc_en.yaml").read_text())
    assert task["metadata"]["language"] == "en"
    assert task["dataset_kwargs"]["data_files"]["test"].startswith("/")  # absolute, as lm-eval needs


def test_eval_config_errors(make_suite):
    with pytest.raises(ValueError, match=r"eval.tasks\[1\]: unknown task 'bogus'"):  # refused with the suite
        make_suite(eval={"tasks": ["babel_mc", "bogus"]})
    suite = make_suite(eval={"tasks": [], "lm_eval_tasks": {"xcopa_sw": "sw"}})
    assert check_eval_config(suite) == {"xcopa_sw": "sw"}
    with pytest.raises(ValueError, match="no language mapping"):
        check_eval_config(suite, {"xcopa_tr": None})
    with pytest.raises(ValueError, match="unknown languages"):
        check_eval_config(suite, {"xcopa_xx": "xx"})
