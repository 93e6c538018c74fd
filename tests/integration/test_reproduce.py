"""`polymoo reproduce` end to end on tiny twins: trains a restricted paper suite, writes the report (claims,
verdicts, leaderboards, plots), re-reads existing runs with --from-mlflow, and refuses clearly — writing
nothing — when the runs a suite needs are missing."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.reproduce.run import reproduce, suite_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# small enough for CI on 2 cores: 1 model x 2 methods x 2 seeds, 2 steps
SMALL = ["models=[llama3.1-8b]", "seeds=[0,1]", "train.steps=2", "languages.seen=[en,fr]", "languages.unseen=[nl]",
         "eval.mc_items_per_language=6", "data.max_examples_per_language=24"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One store and one training pass for the module (the other tests read it)."""
    from tests._store import copy_store

    root = tmp_path_factory.mktemp("repro")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", copy_store(root / "store"))
    mp.setenv("POLYMOO_RESULTS", str(root / "results"))
    overrides = [*SMALL, f"output_dir={root / 'runs'}"]
    report = reproduce("bkmoo", "tiny", overrides, ["joint_sft", "bkmoo-mgda"], out_root=root / "reproduce")
    yield root, overrides, report
    mp.undo()


def test_report_contents(env):
    root, _, report = env
    data = json.loads((report / "report.json").read_text())
    assert data["scale"] == "tiny" and data["runs"] == 4 and data["source"] == "trained by this command"
    verdicts = {c["id"]: c["verdict"] for c in data["claims"]}
    # quality claims are measured but never judged at tiny scale
    assert verdicts["seen_gain"] == verdicts["unseen_gain"] == "not comparable at this scale"
    seen = next(c for c in data["claims"] if c["id"] == "seen_gain")
    assert seen["measured"][0]["method"] == "bkmoo-mgda" and seen["measured"][0]["versus"] == "joint_sft"
    assert verdicts["memory"] == "not measured"  # mgda-global was not run
    assert verdicts["per_model_scores"] == "no public value to compare"
    assert verdicts["language_specific_dimensions"] == "not comparable at this scale"
    md = (report / "report.md").read_text()
    assert "What this scale can and cannot show" in md and "+1.6" not in md.split("## Claims")[0]
    for plot in ("scores.png", "training_curves.png", "pareto_seen_unseen.png", "separability_llama3.1-8b.png",
                 "conflict_bkmoo-mgda.png"):
        assert (report / "plots" / plot).exists(), plot
    assert (report / "leaderboards" / "bkmoo_paper_tiny_acc.html").exists()


def test_from_mlflow_rereads_runs(env):
    root, overrides, report = env
    out = reproduce("bkmoo", "tiny", overrides, ["joint_sft"], from_mlflow=True, out_root=root / "reproduce2",
                    with_separability=False)
    data = json.loads((out / "report.json").read_text())
    assert data["source"] == "MLflow (existing runs)" and data["runs"] == 2
    assert {c["verdict"] for c in data["claims"] if c["id"] == "seen_gain"} == {"not measured"}


def test_missing_runs_clear_error_nothing_overwritten(env, capsys):
    root, overrides, report = env
    before = (report / "report.json").read_bytes()
    args = ["reproduce", "bkmoo", "--scale", "tiny", "--from-mlflow", "--out", str(root / "reproduce")]
    args += [x for o in overrides for x in ("--set", o)] + ["--method", "joint_sft", "--method", "mgda-global"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "runs missing from MLflow" in err and "llama3.1-8b/mgda-global/seed0" in err
    assert (report / "report.json").read_bytes() == before
    assert not list((root / "reproduce").glob(".*partial"))


def test_unknown_method_fails_before_training(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(suite_file("bkmoo", "tiny").read_text()
                     .replace("{name: joint_sft}", "{name: joint_sft_typo}"))
    from harness.validate import ConfigError

    with pytest.raises(ConfigError, match="unknown method 'joint_sft_typo'"):
        reproduce("bkmoo", "tiny", suite_path=suite, out_root=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_suite_never_run_is_a_clear_error(env, capsys):
    root, _, _ = env
    out = root / "reproduce-congrad"
    assert main(["reproduce", "congrad", "--scale", "tiny", "--from-mlflow", "--out", str(out)]) == 2
    assert "no MLflow experiment 'polymoo/congrad_paper_tiny'" in capsys.readouterr().err
    assert not out.exists()
