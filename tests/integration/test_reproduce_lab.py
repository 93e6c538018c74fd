"""`polymoo reproduce PAPER --scale lab` plumbing on a very small setting: the lab suite is found and checked, trains,
and the report carries the lab verdicts (paired by seed on the worst language's answer loss) next to the paper's
claims, which stay 'not comparable at this scale'. The lab's statistics themselves are docs/interference_lab.md's."""

from __future__ import annotations

import json

import pytest

from harness.reproduce.run import load_paper_suite, reproduce, suite_file
from harness.suite import load_suite
from harness.validate import ConfigError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# 2 methods x 2 seeds x 3 steps on a 4-concept lab: the plumbing, not the statistics
SMALL = ["seeds=[0,1]", "train.steps=3", "train.batch_size_per_language=2", "data.concepts=4",
         "data.max_examples_per_language=16", "train.log_every=1"]


def test_lab_suites_are_tiny_twins_on_the_lab():
    for paper in ("bkmoo", "congrad"):
        suite = load_paper_suite(paper, "lab")
        assert suite.scale == "tiny" and suite.data.source == "interference" and len(suite.seeds) == 5
        assert suite_file(paper, "lab").read_text().startswith(f"# suites/{paper}_paper_lab.yaml — run: polymoo "
                                                                 f"reproduce {paper} --scale lab")
    with pytest.raises(ConfigError, match="interference lab"):
        load_paper_suite("bkmoo", "lab", suite_path=suite_file("bkmoo", "tiny"))


@pytest.mark.parametrize("paper", ["bkmoo", "congrad"])
def test_lab_suites_train_the_interference_lab(paper):
    """The papers' lab claims are tested on the experiment of docs/interference_lab.md, not on a variant of it
    (CONGRAD's train settings are those of its SFT stage: the lab's joint SFT run)."""
    lab = load_suite(str(suite_file(paper, "lab").parent / "interference_lab.yaml"), []).resolved()
    suite = load_paper_suite(paper, "lab")
    resolved = suite.resolved()
    assert resolved["data"] == lab["data"] and resolved["train"] == lab["train"]
    assert resolved.get("init") == lab.get("init") and resolved["seeds"] == lab["seeds"]
    if paper == "congrad":
        from harness.registry import get_method
        from harness.suite import method_options

        preference = [m for m in suite.methods if get_method(m.name).kind == "preference"]
        assert len(preference) == 3 and all(method_options(m).sft_first for m in preference)
        assert "joint_sft" in {m.display for m in suite.methods}  # their common SFT start, as a comparator


def test_lab_report_has_verdicts(tmp_path, monkeypatch):
    from tests._store import copy_store

    monkeypatch.setenv("MLFLOW_TRACKING_URI", copy_store(tmp_path / "store"))
    monkeypatch.setenv("POLYMOO_RESULTS", str(tmp_path / "results"))
    report = reproduce("bkmoo", "lab", [*SMALL, f"output_dir={tmp_path / 'runs'}"], ["joint_sft", "bkmoo-mgda"],
                       out_root=tmp_path / "reproduce", with_separability=False, log=False)
    data = json.loads((report / "report.json").read_text())
    assert data["scale"] == "lab" and data["runs"] == 4
    assert {c["verdict"] for c in data["claims"] if c["id"] == "seen_gain"} <= {"not comparable at this scale",
                                                                                "not measured"}
    lab = {v["id"]: v for v in data["lab_verdicts"]}
    versus_joint = lab["bkmoo_vs_joint_sft"]
    assert [c["method"] for c in versus_joint["comparisons"]] == ["bkmoo-mgda"]
    assert versus_joint["comparisons"][0]["n"] == 2 and versus_joint["verdict"] != "not measured"
    assert lab["bkmoo_vs_global_moo"]["verdict"] == "not measured"  # mgda-global was not run
    assert lab["language_specific_dimensions"]["verdict"] == "not measured"  # separability off
    md = (report / "report.md").read_text()
    assert "## Lab verdicts" in md and "Lab scale runs tiny twins" in md


def test_lab_separability_and_reading_the_runs_back(tmp_path, monkeypatch):
    """With separability (the default): the lab's languages are probed on their parallel held-out items (CLDR names
    none of them), and `--from-mlflow` then finds the runs the first reproduce trained (with their saved models)."""
    from tests._store import copy_store

    monkeypatch.setenv("MLFLOW_TRACKING_URI", copy_store(tmp_path / "store"))
    monkeypatch.setenv("POLYMOO_RESULTS", str(tmp_path / "results"))
    args = ("bkmoo", "lab", [*SMALL, f"output_dir={tmp_path / 'runs'}"], ["joint_sft", "bkmoo-mgda"])
    trained = reproduce(*args, out_root=tmp_path / "reproduce", log=False)
    data = json.loads((trained / "report.json").read_text())
    separability = {v["id"]: v for v in data["lab_verdicts"]}["language_specific_dimensions"]
    assert separability["verdict"] != "not measured"
    assert "parallel held-out items" in (trained / "report.md").read_text()
    assert (trained / "separability_llama3.1-8b.json").exists()
    read = reproduce(*args, from_mlflow=True, out_root=tmp_path / "read", log=False)
    again = json.loads((read / "report.json").read_text())
    assert again["runs"] == 4 and again["lab_verdicts"] == data["lab_verdicts"]
