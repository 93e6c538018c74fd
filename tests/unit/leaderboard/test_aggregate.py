"""Leaderboard aggregation on a synthetic MLflow store with known values: mean, std, Δ against joint SFT,
seen / unseen split, significance over seeds, perf columns, and which runs are left out."""

from __future__ import annotations

import math
import statistics

import pytest

from harness.leaderboard.aggregate import Cell, aggregate, significance
from harness.leaderboard.collect import fetch_runs
from harness.leaderboard.render import to_csv, to_markdown
from harness.tracking import Tracker

EXPERIMENT = "polymoo/synthetic"
SEEN, UNSEEN = ("en", "fr"), ("sw",)
# (model, method) -> per seed: {lang: acc}
VALUES = {
    ("llama", "joint_sft"): [{"en": 0.50, "fr": 0.40, "sw": 0.30}, {"en": 0.52, "fr": 0.42, "sw": 0.28},
                             {"en": 0.48, "fr": 0.44, "sw": 0.32}],
    ("llama", "bkmoo-mgda"): [{"en": 0.56, "fr": 0.46, "sw": 0.31}, {"en": 0.58, "fr": 0.47, "sw": 0.30},
                              {"en": 0.55, "fr": 0.49, "sw": 0.33}],
    ("qwen3", "joint_sft"): [{"en": 0.60, "fr": 0.50, "sw": 0.20}],
    ("qwen3", "pcgrad"): [{"en": 0.62, "fr": 0.49, "sw": 0.25}],
}


def _mean(xs):
    return sum(xs) / len(xs)


def _log_run(c, exp, model, method, seed, accs, *, status="FINISHED", extra_tags=None, perf=None):
    tags = {"polymoo.model": model, "polymoo.method": method, "polymoo.suite": "synthetic", "polymoo.seed": str(seed),
            **(extra_tags or {})}
    run = c.create_run(exp, run_name=f"{model}/{method}/seed{seed}", tags=tags)
    rid = run.info.run_id
    metrics = {f"eval/acc/{lang}": v for lang, v in accs.items()} | {f"eval/loss/{lang}": 5 - v for lang, v in accs.items()}
    metrics["eval/acc/seen_mean"] = _mean([accs[x] for x in SEEN])
    metrics["eval/acc/unseen_mean"] = _mean([accs[x] for x in UNSEEN])
    Tracker(c, rid).log_metrics(metrics | (perf or {}))  # one batch, as the runner logs
    c.set_terminated(rid, status)
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating a store costs seconds); the URI is passed explicitly."""
    from harness.tracking import client, ensure_experiment
    from tests._store import copy_store

    uri = copy_store(tmp_path_factory.mktemp("lb"))
    c = client(uri)
    exp = ensure_experiment(c, EXPERIMENT)
    for (model, method), seeds in VALUES.items():
        for seed, accs in enumerate(seeds):
            perf = {"perf/peak_mem_mb": 100.0 + seed, "perf/mean_step_time_s": 0.5} if method == "bkmoo-mgda" else None
            _log_run(c, exp, model, method, seed, accs, perf=perf)
    # noise that must be ignored: a failed run, a report run, an eval run
    _log_run(c, exp, "llama", "joint_sft", 9, {"en": 0.0, "fr": 0.0, "sw": 0.0}, status="FAILED")
    _log_run(c, exp, "llama", "joint_sft", 8, {"en": 1.0, "fr": 1.0, "sw": 1.0}, extra_tags={"polymoo.kind": "report"})
    # an earlier run of a (model, method, seed) that was run again: superseded by the later one
    import time

    old = _log_run(c, exp, "qwen3", "pcgrad", 0, {"en": 0.0, "fr": 0.0, "sw": 0.0})
    time.sleep(0.01)
    _log_run(c, exp, "qwen3", "pcgrad", 0, VALUES[("qwen3", "pcgrad")][0])
    c.update_run(old, "FINISHED")
    return uri


def _row(table, model, method):
    return next(r for r in table.rows if r.model == model and r.method == method)


def test_aggregate_known_values(store):
    table = aggregate(fetch_runs(EXPERIMENT, store), "acc", language_order=[*SEEN, *UNSEEN])
    assert table.languages == ["en", "fr", "sw"]
    assert table.columns[:5] == ["en", "fr", "sw", "seen_mean", "unseen_mean"]
    ref = _row(table, "llama", "joint_sft")
    assert ref.seeds == 3  # the failed and the report run are left out
    en = [s["en"] for s in VALUES[("llama", "joint_sft")]]
    assert ref.cells["en"].mean == pytest.approx(statistics.fmean(en))
    assert ref.cells["en"].std == pytest.approx(statistics.stdev(en))
    assert ref.cells["en"].sem == pytest.approx(statistics.stdev(en) / math.sqrt(3))
    mo = _row(table, "llama", "bkmoo-mgda")
    seen = lambda rows: [_mean([r[x] for x in SEEN]) for r in rows]  # noqa: E731
    unseen = lambda rows: [_mean([r[x] for x in UNSEEN]) for r in rows]  # noqa: E731
    expected_dseen = _mean(seen(VALUES[("llama", "bkmoo-mgda")])) - _mean(seen(VALUES[("llama", "joint_sft")]))
    expected_dunseen = _mean(unseen(VALUES[("llama", "bkmoo-mgda")])) - _mean(unseen(VALUES[("llama", "joint_sft")]))
    assert mo.delta_seen == pytest.approx(expected_dseen)
    assert mo.delta_unseen == pytest.approx(expected_dunseen)
    # Δ is against the reference of the same model
    pc = _row(table, "qwen3", "pcgrad")
    assert pc.delta_seen == pytest.approx(_mean([0.62, 0.49]) - _mean([0.60, 0.50]))
    assert pc.delta_unseen == pytest.approx(0.05)
    # the reference row has no Δ of its own; reference rows sort first
    assert math.isnan(ref.delta_seen)
    assert [r.method for r in table.rows if r.model == "llama"][0] == "joint_sft"


def test_significance_paired_by_seed(store):
    from scipy import stats

    table = aggregate(fetch_runs(EXPERIMENT, store), "acc")
    mo = _row(table, "llama", "bkmoo-mgda")
    t = mo.tests["seen_mean"]
    assert t.kind == "paired"
    x = [_mean([r[k] for k in SEEN]) for r in VALUES[("llama", "bkmoo-mgda")]]
    y = [_mean([r[k] for k in SEEN]) for r in VALUES[("llama", "joint_sft")]]
    assert t.p == pytest.approx(stats.ttest_rel(x, y).pvalue)
    assert t.significant == (t.p < 0.05)
    # one seed per side: no test
    assert math.isnan(_row(table, "qwen3", "pcgrad").tests["seen_mean"].p)


def test_rerun_supersedes(store):
    runs = fetch_runs(EXPERIMENT, store)
    assert _row(aggregate(runs, "acc"), "qwen3", "pcgrad").seeds == 1
    assert _row(aggregate(fetch_runs(EXPERIMENT, store, latest_only=False), "acc"), "qwen3", "pcgrad").seeds == 3


def test_significance_welch_when_seeds_differ():
    from scipy import stats

    a = Cell([0.5, 0.6, 0.7], ["0", "1", "2"])
    b = Cell([0.4, 0.45, 0.42], ["3", "4", "5"])
    t = significance(a, b)
    assert t.kind == "welch"
    assert t.p == pytest.approx(stats.ttest_ind(a.values, b.values, equal_var=False).pvalue)
    assert t.delta == pytest.approx(0.6 - statistics.fmean(b.values))
    # two seeds: Δ but no test
    t2 = significance(Cell([0.5, 0.6], ["0", "1"]), Cell([0.4, 0.5], ["0", "1"]))
    assert math.isnan(t2.p) and t2.delta == pytest.approx(0.1)
    # identical constant differences: p defined without NaN
    t3 = significance(Cell([0.5, 0.6, 0.7], ["0", "1", "2"]), Cell([0.4, 0.5, 0.6], ["0", "1", "2"]))
    assert t3.p == 0.0


def test_perf_columns_and_other_metric(store):
    table = aggregate(fetch_runs(EXPERIMENT, store), "acc")
    assert "perf/peak_mem_mb" in table.columns and "perf/mean_step_time_s" in table.columns
    mo = _row(table, "llama", "bkmoo-mgda")
    assert mo.cells["perf/peak_mem_mb"].mean == pytest.approx(101.0)
    assert not _row(table, "qwen3", "pcgrad").cells["perf/peak_mem_mb"].values  # not measured: blank, not 0
    loss = aggregate(fetch_runs(EXPERIMENT, store), "loss")
    assert loss.languages == ["en", "fr", "sw"] and loss.groups == []
    assert _row(loss, "llama", "joint_sft").cells["en"].mean == pytest.approx(5 - 0.5)


def test_renderings(store):
    import csv
    import io

    table = aggregate(fetch_runs(EXPERIMENT, store), "acc")
    md = to_markdown(table)
    assert "| model | method | n | en | fr | sw | seen | unseen |" in md  # synthetic runs log no config params
    assert "p(seen)" in md and "(paired)" in md
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    mo = next(r for r in rows if r["method"] == "bkmoo-mgda")
    assert float(mo["seen_mean_mean"]) == pytest.approx(_row(table, "llama", "bkmoo-mgda").cells["seen_mean"].mean)
    assert mo["test_seen"] == "paired"


def test_errors(store):
    with pytest.raises(ValueError, match="no MLflow experiment"):
        fetch_runs("polymoo/absent", store)
    with pytest.raises(ValueError, match="no finished runs"):
        aggregate(None)


def test_suite_runs_keep_only_the_suite_version(tmp_path, make_suite):
    """Runs of an older suite version are not comparable (the version bump says so): they leave the leaderboard."""
    from harness.leaderboard.collect import suite_runs
    from harness.tracking import client, ensure_experiment
    from tests._store import copy_store

    uri = copy_store(tmp_path / "versions")
    c = client(uri)
    exp = ensure_experiment(c, "polymoo/synthetic")
    _log_run(c, exp, "llama", "joint_sft", 0, VALUES[("llama", "joint_sft")][0], extra_tags={"polymoo.suite_version": "2"})
    _log_run(c, exp, "llama", "joint_sft", 1, {"en": 0.0, "fr": 0.0, "sw": 0.0}, extra_tags={"polymoo.suite_version": "1"})
    suite = make_suite(suite={"name": "synthetic", "version": 2}, tracking={"uri": uri, "experiment": "polymoo/synthetic"})
    runs = suite_runs(suite)
    assert list(runs["tags.polymoo.seed"]) == ["0"]
    old = make_suite(suite={"name": "synthetic", "version": 3}, tracking={"uri": uri, "experiment": "polymoo/synthetic"})
    with pytest.raises(ValueError, match="no finished runs of suite 'synthetic' version 3"):
        suite_runs(old)
