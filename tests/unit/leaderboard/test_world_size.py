"""Runs of one suite at several world sizes (`--nproc 2`, `--nproc 4`) are separate rows, each with its own Δ."""

from __future__ import annotations

import pytest

from harness.leaderboard.aggregate import aggregate
from harness.leaderboard.collect import latest_per_seed


def _run(method: str, world: str, acc: float, start: int) -> dict:
    import pandas as pd  # pandas is imported by the tests, not at collection

    return {"tags.polymoo.model": "llama", "tags.polymoo.method": method, "tags.polymoo.seed": "0",
            "tags.polymoo.world_size": world, "metrics.eval/acc/en": acc, "metrics.eval/acc/seen_mean": acc,
            "start_time": pd.Timestamp(start, unit="s")}


def test_world_sizes_are_rows_with_their_own_reference():
    import pandas as pd

    runs = pd.DataFrame([_run("joint_sft", "2", 0.20, 1), _run("bkmoo", "2", 0.30, 2),
                         _run("joint_sft", "4", 0.40, 3), _run("bkmoo", "4", 0.45, 4)])
    runs = latest_per_seed(runs)
    assert len(runs) == 4, "a run at another world size is not a rerun"
    table = aggregate(runs, "acc")
    names = [r.method for r in table.rows]
    assert names == ["joint_sft (N=2)", "bkmoo (N=2)", "joint_sft (N=4)", "bkmoo (N=4)"]
    deltas = {r.method: r.tests["seen_mean"].delta for r in table.rows if "seen_mean" in r.tests}
    assert deltas["bkmoo (N=2)"] == pytest.approx(0.10) and deltas["bkmoo (N=4)"] == pytest.approx(0.05)


def test_single_world_size_keeps_plain_names():
    import pandas as pd

    runs = pd.DataFrame([_run("joint_sft", "1", 0.2, 1), _run("bkmoo", "1", 0.3, 2)])
    assert [r.method for r in aggregate(runs, "acc").rows] == ["joint_sft", "bkmoo"]
