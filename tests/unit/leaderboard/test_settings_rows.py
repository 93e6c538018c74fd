"""Rows keyed by settings: the same model, method and seed run with two settings are two rows, never merged or
superseded; the table names the keys that differ; Δ is only taken against a reference with the same settings.

The runs are written into a throw-away sqlite MLflow store with the params the runner logs
(`harness.tracking.config_params` of a real suite, the method options, package versions), then read back through
`fetch_runs`, as `polymoo leaderboard` reads them."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from harness.leaderboard.aggregate import aggregate
from harness.leaderboard.collect import fetch_runs
from harness.leaderboard.render import to_csv, to_html, to_markdown
from harness.tracking import Tracker, config_params

EXPERIMENT = "polymoo/settings"
_CLOCK = itertools.count(1_700_000_000_000, 1000)  # explicit, increasing start times: 'latest' never hangs on the clock


def _log(c, exp, suite, method, seed, acc, *, options=None, versions="2.0"):
    """One finished run as the runner records it: tags, config params, the run's method options, metrics."""
    tags = {"polymoo.model": "llama", "polymoo.method": method, "polymoo.seed": str(seed),
            "polymoo.suite": suite.suite.name, "polymoo.config_hash": suite.config_hash()}
    rid = c.create_run(exp, start_time=next(_CLOCK), run_name=f"llama/{method}/seed{seed}", tags=tags).info.run_id
    tracker = Tracker(c, rid)
    tracker.log_params({**config_params(suite), "version.torch": versions, "run.seed": seed, "run.model": "llama",
                        "run.method_options": json.dumps(options or {}, sort_keys=True)})
    tracker.log_metrics({"eval/acc/en": acc, "eval/acc/seen_mean": acc})
    c.set_terminated(rid, "FINISHED")
    return rid


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from harness.suite import suite_from_data
    from harness.tracking import client, ensure_experiment
    from tests._store import copy_store
    from tests.conftest import BASE_SUITE

    base = {**BASE_SUITE, "languages": {"seen": ["en"]}}
    slow = suite_from_data({**base, "train": {**BASE_SUITE["train"], "lr": 1.0e-3}}, "a.yaml")
    fast = suite_from_data({**base, "train": {**BASE_SUITE["train"], "lr": 3.0e-3}}, "b.yaml")
    # the suite-wide config hash differs between `polymoo run` and `polymoo run --seed 1` of the same settings
    one_seed = slow.with_only(seed=1)
    assert one_seed.config_hash() != slow.config_hash()
    c = client(copy_store(tmp_path_factory.mktemp("settings")))
    exp = ensure_experiment(c, EXPERIMENT)
    for seed, (ref, pc) in enumerate([(0.30, 0.40), (0.32, 0.43), (0.34, 0.44)]):
        _log(c, exp, slow if seed != 1 else one_seed, "joint_sft", seed, ref, versions=f"2.{seed}")
        _log(c, exp, slow, "pcgrad", seed, pc, options={"reduction": "sum"})
    _log(c, exp, slow, "pcgrad", 0, 0.0, options={"reduction": "sum"})  # superseded by the rerun below
    _log(c, exp, slow, "pcgrad", 0, 0.40, options={"reduction": "sum"})
    _log(c, exp, fast, "pcgrad", 0, 0.90, options={"reduction": "sum"})  # other lr: a row of its own
    _log(c, exp, slow, "pcgrad", 1, 0.70, options={"reduction": "mean"})  # other method options: a row of its own
    return fetch_runs(EXPERIMENT, c.tracking_uri)


def _rows(table, method):
    return [r for r in table.rows if r.method == method]


def test_two_settings_of_one_model_method_seed_are_two_rows(runs):
    table = aggregate(runs, "acc")
    pcgrad = _rows(table, "pcgrad")
    assert len(pcgrad) == 3, "other settings are never merged into one row"
    by_seeds = sorted((r.seeds, r.cells["en"].mean) for r in pcgrad)
    assert by_seeds == [(1, pytest.approx(0.70)), (1, pytest.approx(0.90)), (3, pytest.approx((0.40 + 0.43 + 0.44) / 3))]
    assert len({r.config for r in pcgrad}) == 3 and all(len(r.config) == 12 for r in pcgrad)
    # seed 0 of the main settings: the rerun with the same settings superseded the earlier one (0.0 is gone)
    main = next(r for r in pcgrad if r.seeds == 3)
    assert main.cells["en"].by_seed()["0"] == pytest.approx(0.40)


def test_package_versions_and_the_suite_wide_hash_do_not_split_rows(runs):
    """joint_sft seeds logged different package versions, and seed 1 was run alone (another suite-wide hash)."""
    ref = _rows(aggregate(runs, "acc"), "joint_sft")
    assert len(ref) == 1 and ref[0].seeds == 3


def test_the_table_names_the_keys_that_differ(runs):
    import csv
    import io

    table = aggregate(runs, "acc")
    assert len(table.notes) == 2
    pcgrad = sorted(_rows(table, "pcgrad"), key=lambda r: r.config)
    differ = table.notes[0]
    assert differ.startswith("llama / pcgrad ran with 3 settings")
    lrs = {r.cells["en"].mean: r.config[:8] for r in pcgrad}
    assert f"train.lr ({', '.join(f'{r.config[:8]}: ' + r.settings['train.lr'] for r in pcgrad)})" in differ
    assert "run.method_options" in differ and lrs[0.90] in differ
    assert "version.torch" not in differ and "data.path" not in differ  # what is equal or not a setting is not named
    assert all(1 in r.marks for r in pcgrad)
    md = to_markdown(table)
    assert "| model | method | config | n | en | seen |" in md
    assert "- †1 llama / pcgrad ran with 3 settings" in md
    for r in pcgrad:
        assert f"| {r.config[:8]} †1" in md
    assert "†1 llama / pcgrad ran with 3 settings" in to_html(table, "t")
    lines = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert {line["config"] for line in lines if line["method"] == "pcgrad"} == {r.config for r in pcgrad}
    assert all(line["notes"].startswith("†1") for line in lines if line["method"] == "pcgrad")


def test_delta_only_against_the_reference_with_the_same_settings(runs):
    table = aggregate(runs, "acc")
    pcgrad = _rows(table, "pcgrad")
    main = next(r for r in pcgrad if r.seeds == 3)
    assert main.delta_seen == pytest.approx((0.10 + 0.11 + 0.10) / 3)  # paired over seeds 0, 1 (run alone) and 2
    assert main.tests["seen_mean"].kind == "paired"
    fast = next(r for r in pcgrad if r.cells["en"].mean == pytest.approx(0.90))
    assert math.isnan(fast.delta_seen), "no joint_sft ran at lr 3e-3: no Δ against one that did not"
    note = table.notes[fast.marks[-1] - 1]
    ref = _rows(table, "joint_sft")[0]
    assert "no joint_sft run with the same settings" in note
    assert f"train.lr ({fast.config[:8]}: 0.003, {ref.config[:8]}: 0.001)" in note
    assert "method_options" not in note, "method options always differ from the reference's: not worth a word"
    mean_opts = next(r for r in pcgrad if r.cells["en"].mean == pytest.approx(0.70))
    assert mean_opts.delta_seen == pytest.approx(0.70 - 0.32), "method options are not suite settings"


def test_runs_without_params_fall_back_to_one_setting():
    import pandas as pd

    runs = pd.DataFrame([{"tags.polymoo.model": "m", "tags.polymoo.method": "joint_sft", "tags.polymoo.seed": "0",
                          "metrics.eval/acc/en": 0.5, "start_time": pd.Timestamp(1, unit="s")}])
    table = aggregate(runs, "acc")
    assert table.rows[0].config == "" and not table.has_configs and not table.notes
    assert "config" not in to_markdown(table).splitlines()[0]
