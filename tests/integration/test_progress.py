"""Progress a person can follow: `polymoo run` prints a header before each run (``run 2/2: llama · joint_sft ·
seed 1``), the loss and per-language losses in the progress bar, and one summary line per finished run with its key
metrics and its duration; stdout keeps the results table."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import BASE_SUITE

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_run_prints_a_header_per_language_losses_and_a_summary_per_run(tmp_store, tmp_path, capsys):
    from harness.cli import main

    data = {**BASE_SUITE, "output_dir": str(tmp_path / "runs"), "seeds": [0, 1],
            "eval": {"heldout_loss": True, "tasks": []}}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["run", str(path), "--set", "train.steps=2", "--no-leaderboard"]) == 0
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("[polymoo] run ")]
    assert lines[0] == "[polymoo] run 1/2: llama · joint_sft · seed 0"
    assert re.fullmatch(r"\[polymoo\] run 1/2 FINISHED in \d+\.\d s: eval/loss/seen_mean \d+\.\d{4} · "
                        r"eval/loss/unseen_mean \d+\.\d{4} · train/final_loss \d+\.\d{4}", lines[1]), lines[1]
    assert lines[2] == "[polymoo] run 2/2: llama · joint_sft · seed 1"
    assert lines[3].startswith("[polymoo] run 2/2 FINISHED in ")
    assert len(lines) == 4
    assert re.search(r"loss=\d+\.\d{3}, en=\d+\.\d{3}, fr=\d+\.\d{3}, de=\d+\.\d{3}", err), "per-language losses"
    assert "seed 0: FINISHED" in out and "[polymoo]" not in out
