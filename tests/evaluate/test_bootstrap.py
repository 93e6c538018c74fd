"""lm-eval's standard errors and chance levels next to every score: read from lm-eval's results, combined over tasks
and languages as independent item samples (sqrt(Σ se²) / m), and the eval.bootstrap_iters key."""

from __future__ import annotations

import math

import pytest

from harness.evaluate.mc import accuracies, benchmark_scores, chance_level, combine, primary_stderr
from harness.evaluate.pipeline import group_means


def _mc(n_choices: list[int], metrics=("acc",)) -> dict:
    return {"output_type": "multiple_choice", "metric_list": [{"metric": m} for m in metrics]}, \
        [{"arguments": [("q", f" c{i}") for i in range(k)]} for k in n_choices]


def _results() -> dict:
    xcopa, xcopa_samples = _mc([2, 2, 2])
    xnli, xnli_samples = _mc([3, 3])
    bel, bel_samples = _mc([4, 4, 4, 4])
    return {
        "results": {"xcopa_sw": {"acc,none": 0.6, "acc_stderr,none": 0.05},
                    "xnli_sw": {"acc,none": 0.4, "acc_stderr,none": 0.04},
                    "belebele_swh_Latn": {"acc,none": 0.3, "acc_stderr,none": 0.03},
                    "mgsm_direct_sw": {"exact_match,strict-match": 0.1, "exact_match_stderr,strict-match": 0.02}},
        "configs": {"xcopa_sw": xcopa, "xnli_sw": xnli, "belebele_swh_Latn": bel,
                    "mgsm_direct_sw": {"output_type": "generate_until"}},
        "samples": {"xcopa_sw": xcopa_samples, "xnli_sw": xnli_samples, "belebele_swh_Latn": bel_samples,
                    "mgsm_direct_sw": [{"arguments": [("q", {})]}]},
    }


def test_primary_stderr_follows_the_headline_score():
    assert primary_stderr({"acc,none": 0.5, "acc_stderr,none": 0.1}, "t") == 0.1
    assert primary_stderr({"exact_match,strict-match": 0.2, "exact_match_stderr,strict-match": 0.04}, "t") == 0.04
    assert primary_stderr({"acc": 0.5, "acc_stderr": 0.07}, "t") == 0.07
    assert primary_stderr({"acc,none": 0.5, "acc_stderr,none": "N/A"}, "t") is None  # bootstrap_iters=0
    assert primary_stderr({"acc,none": 0.5}, "t") is None


def test_chance_level_from_the_number_of_choices():
    results = _results()
    assert chance_level(results, "xcopa_sw") == pytest.approx(0.5)
    assert chance_level(results, "xnli_sw") == pytest.approx(1 / 3)
    mixed, samples = _mc([2, 4])
    assert chance_level({"configs": {"t": mixed}, "samples": {"t": samples}}, "t") == pytest.approx((0.5 + 0.25) / 2)
    assert chance_level(results, "mgsm_direct_sw") is None  # generation: no chance level
    mi, samples = _mc([2, 2], metrics=("acc", "acc_mutual_info"))  # two requests per choice: not counted
    assert chance_level({"configs": {"t": mi}, "samples": {"t": samples}}, "t") is None
    assert chance_level({"configs": results["configs"]}, "xcopa_sw") is None  # no samples logged


def test_benchmark_scores_carry_stderr_and_chance():
    out = benchmark_scores(_results(), {"xcopa_sw": "sw", "xnli_sw": "sw", "belebele_swh_Latn": "sw",
                                        "mgsm_direct_sw": "sw"})
    assert out["eval/xcopa/sw/stderr"] == 0.05 and out["eval/xcopa/sw/chance"] == 0.5
    assert out["eval/mgsm/sw/stderr"] == 0.02 and "eval/mgsm/sw/chance" not in out
    assert out["eval/bench/sw"] == pytest.approx((0.6 + 0.4 + 0.3 + 0.1) / 4)
    assert out["eval/bench/sw/stderr"] == pytest.approx(math.sqrt(0.05**2 + 0.04**2 + 0.03**2 + 0.02**2) / 4)
    assert "eval/bench/sw/chance" not in out, "a mean with a generation task has no chance level"
    mc_only = benchmark_scores(_results(), {"xcopa_sw": "sw", "xnli_sw": "sw"})
    assert mc_only["eval/bench/sw/chance"] == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_two_tasks_of_one_family_and_language_are_averaged():
    results = _results()
    results["results"]["xcopa_sw2"] = {"acc,none": 0.8, "acc_stderr,none": 0.06}
    results["configs"]["xcopa_sw2"], results["samples"]["xcopa_sw2"] = _mc([2])
    out = benchmark_scores(results, {"xcopa_sw": "sw", "xcopa_sw2": "sw"})
    assert out["eval/xcopa/sw"] == pytest.approx(0.7)
    assert out["eval/xcopa/sw/stderr"] == pytest.approx(math.sqrt(0.05**2 + 0.06**2) / 2)


def test_local_accuracies_and_group_means():
    results = {"results": {"t_en": {"acc,none": 0.5, "acc_stderr,none": 0.08},
                           "t_fr": {"acc,none": 0.3, "acc_stderr,none": 0.06},
                           "t_sw": {"acc,none": 0.2, "acc_stderr,none": "N/A"}},
               "configs": {t: _mc([4])[0] for t in ("t_en", "t_fr", "t_sw")},
               "samples": {t: _mc([4, 4])[1] for t in ("t_en", "t_fr", "t_sw")}}
    m = accuracies(results, {"t_en": "en", "t_fr": "fr", "t_sw": "sw"})
    assert m["eval/acc/en/stderr"] == 0.08 and m["eval/acc/en/chance"] == 0.25 and "eval/acc/sw/stderr" not in m
    out = group_means(m, ("en", "fr"), ("sw",))
    assert out["eval/acc/seen_mean"] == pytest.approx(0.4)
    assert out["eval/acc/seen_mean/stderr"] == pytest.approx(math.sqrt(0.08**2 + 0.06**2) / 2)
    assert out["eval/acc/seen_mean/chance"] == pytest.approx(0.25)
    assert "eval/acc/unseen_mean/stderr" not in out and out["eval/acc/unseen_mean/chance"] == 0.25
    assert combine([1.0], [None], [None]) == {"": 1.0}


def test_bootstrap_iters_key(make_suite):
    suite = make_suite()
    assert suite.eval.bootstrap_iters == 100
    assert "bootstrap_iters" not in suite.resolved()["eval"], "the default leaves every existing config hash as it was"
    assert make_suite(eval={"bootstrap_iters": 0}).resolved()["eval"]["bootstrap_iters"] == 0
    with pytest.raises(ValueError, match="bootstrap_iters"):
        make_suite(eval={"bootstrap_iters": -1})
