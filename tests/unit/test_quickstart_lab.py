"""suites/quickstart_lab.yaml (the quickstart's look at the interference lab, issue 14 item 7) validates and names
what it should: the lab's data source at a conflict well above zero, joint SFT and Bucket-Level MOO (MGDA), 5 seeds,
the same lab and training settings as suites/interference_lab.yaml; and `nox -s quickstart` runs it after the
quickstart and prints its answer-loss leaderboard. Loads the suites only: nothing is trained here."""

from __future__ import annotations

import re
from pathlib import Path

from harness.suite import load_suite

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_lab_suite_names_the_lab_methods_and_seeds():
    suite = load_suite(str(ROOT / "suites" / "quickstart_lab.yaml"), [])
    assert suite.suite.name == "quickstart_lab"
    assert suite.data.source == "interference" and suite.data.conflict >= 0.5
    assert list(suite.data.dissenters) == ["lab3"] and list(suite.languages.seen) == ["lab1", "lab2", "lab3"]
    assert [m.display for m in suite.methods][:2] == ["joint_sft", "bkmoo_mgda"]
    assert {m.display for m in suite.methods} <= {"joint_sft", "bkmoo_mgda", "mgda"}
    assert list(suite.seeds) == [0, 1, 2, 3, 4]
    assert list(suite.models) == ["llama"] and suite.scale == "tiny"


def test_quickstart_lab_uses_the_interference_lab_settings():
    """The quickstart shows the experiment of docs/interference_lab.md, not a cheaper variant of it."""
    lab = load_suite(str(ROOT / "suites" / "interference_lab.yaml"), []).resolved()
    quick = load_suite(str(ROOT / "suites" / "quickstart_lab.yaml"), []).resolved()
    assert quick["data"] == lab["data"]
    assert quick["train"] == lab["train"]
    assert quick.get("init") == lab.get("init")


def test_nox_quickstart_runs_the_lab_after_the_quickstart():
    body = (ROOT / "noxfile.py").read_text().split("def quickstart", 1)[1].split("@nox.session", 1)[0]
    runs = re.findall(r"suites/(\w+)\.yaml", body)
    assert runs.index("quickstart") < runs.index("quickstart_lab")
    assert "answer_loss" in body
