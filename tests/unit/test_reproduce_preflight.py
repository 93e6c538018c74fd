"""`polymoo reproduce` checks its suite before training, as `polymoo run` does: the full-scale suite without its data
file is refused (exit 2) naming the file and the command that builds it, with nothing loaded."""

from __future__ import annotations

from harness.cli import main


def test_reproduce_full_scale_refuses_missing_data_before_training(capsys):
    code = main(["reproduce", "congrad", "--scale", "full"])
    text = capsys.readouterr().err
    assert code == 2 and "Traceback" not in text
    assert "data/congrad_prompts.jsonl" in text and "polymoo data prepare congrad_prompts" in text
    assert "nothing was loaded" in text
