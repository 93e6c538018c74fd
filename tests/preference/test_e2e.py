"""End to end through the harness runner on the tiny llama twin with the offline prompts: one full iteration of
congrad, self_rewarding and random_filter lands FINISHED in MLflow with the expected metrics and artifacts."""

from __future__ import annotations

import math

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

LOOP = {"iterations": 1, "prompts_per_language": 2, "responses_per_prompt": 3, "max_new_tokens": 6,
        "judge": "reference", "dpo_batch_size": 6, "win_rate_prompts_per_language": 1}


def _run(make_suite, name, options, **suite_overrides):
    from harness.config import MethodSpec
    from harness.runner import run_one
    from harness.tracking import client

    suite = make_suite(methods=[{"name": name, "options": options}],
                       eval={"heldout_loss": True, "tasks": []}, **suite_overrides)
    result = run_one(suite, "llama", MethodSpec(name=name, options=options), 0)
    c = client()
    run = c.get_run(result.run_id)
    return result, run, c


def _artifacts(c, run_id, path):
    return {a.path for a in c.list_artifacts(run_id, path)}


def test_congrad_one_iteration(tmp_store, make_suite):
    options = {**LOOP, "compression": "sparse", "rank": 64, "keep_ratio": 0.5}
    result, run, c = _run(make_suite, "congrad", options)
    assert run.info.status == "FINISHED" and result.status == "FINISHED"
    m = run.data.metrics
    for lang in ("en", "fr", "de"):
        assert m[f"pref/parse_rate/{lang}"] == 1.0  # the reference judge always scores
        assert f"congrad/kept_fraction/{lang}" in m and f"pref/pairs/{lang}" in m
        assert m[f"pref/kept/{lang}"] <= m[f"pref/pairs/{lang}"]
    assert 0 < m["congrad/kept_fraction"] <= 1
    assert m["congrad/mem/saving_ratio"] > 10  # full fine-tuning: 1.3M parameters -> 64 dims (+ projection block)
    assert m["congrad/mem/compressed_mb"] < m["congrad/mem/full_per_sample_grad_mb"]
    assert m["dpo/steps"] >= 1 and "dpo/final_reward_margin" in m and "dpo/loss" in m
    assert any(k.startswith("dpo/reward_margin/") for k in m)
    assert 0 <= m["pref/win_rate_vs_init"] <= 1
    assert m["perf/gen_tokens_per_s"] > 0 and "perf/congrad_pairs_per_s" in m
    assert math.isfinite(m["eval/loss/en"]) and "eval/loss/nl" in m  # the harness evaluated seen and unseen
    assert {"pref/iter1/judge_scores.png", "pref/iter1/pairs.json", "pref/iter1/report.json"} <= \
        _artifacts(c, run.info.run_id, "pref/iter1")
    assert "congrad/iter1/alignment_scores.png" in _artifacts(c, run.info.run_id, "congrad/iter1")


def test_self_rewarding_lora_two_iterations_with_intermediate_eval(tmp_store, make_suite):
    options = {**LOOP, "iterations": 2}
    result, run, c = _run(make_suite, "self_rewarding", options,
                          train={"lora": {"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}})
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    assert m["pref/kept"] == m["pref/pairs"]  # no filter
    assert "iter1/eval/loss/en" in m and "iter1/eval/loss/nl" in m  # evaluation after the intermediate iteration
    assert "iter2/pref/pairs" in m and "iter1/pref/pairs" in m
    history = c.get_metric_history(run.info.run_id, "pref/pairs")
    assert {1, 2} <= {h.step for h in history}  # one value per iteration (the runner re-logs the summary at train.steps)


def test_random_filter_one_iteration(tmp_store, make_suite):
    options = {**LOOP, "keep_ratio": 0.5}
    result, run, c = _run(make_suite, "random_filter", options)
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for lang in ("en", "fr", "de"):
        n = m[f"pref/pairs/{lang}"]
        assert m[f"pref/kept/{lang}"] == (0 if n == 0 else max(1, math.ceil(0.5 * n - 1e-9)))


def test_self_judge_on_a_random_model_reports_instead_of_crashing(tmp_store, make_suite):
    options = {**LOOP, "judge": "self", "judge_max_new_tokens": 6, "scorer": "jvp", "score": "dot",
               "compression": "none", "win_rate_prompts_per_language": 0}
    with pytest.warns(RuntimeWarning, match="no preference pairs"):
        result, run, c = _run(make_suite, "congrad", options)
    assert run.info.status == "FINISHED"
    m = run.data.metrics
    for lang in ("en", "fr", "de"):
        assert m[f"pref/parse_rate/{lang}"] < 1  # a random twin does not write "Score: N"
        assert m[f"pref/judge_unparseable/{lang}"] + m[f"pref/judge_out_of_range/{lang}"] + \
            m[f"pref/judge_empty/{lang}"] + m[f"pref/judge_ok/{lang}"] + m[f"pref/judge_recovered/{lang}"] == 6
    if m["pref/pairs"] == 0:
        assert m["dpo/skipped"] == 1
        assert all(m[f"pref/language_without_pairs/{lang}"] == 1 for lang in ("en", "fr", "de"))
