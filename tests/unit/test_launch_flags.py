"""Launching under torchrun: one node (`--standalone`) or several (c10d rendezvous), the launcher's own flags kept
from the ranks, clear refusals, and `polymoo reproduce` training a multi-process suite through torchrun."""

from __future__ import annotations

import sys

import pytest
import yaml

from harness.cli import main
from harness.distributed.launch import Nodes, torchrun_command, without_launch_flags


def test_one_node_is_standalone_and_several_use_a_rendezvous(monkeypatch):
    assert torchrun_command(["run", "s.yaml"], 8)[3:] == ["--standalone", "--nproc-per-node=8", "-m", "harness",
                                                          "run", "s.yaml"]
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    cmd = torchrun_command(["run", "s.yaml"], 8, Nodes(nnodes=2, node_rank=1, rdzv_endpoint="node0:29500"))
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[3:9] == ["--nnodes=2", "--node-rank=1", "--rdzv-backend=c10d", "--rdzv-endpoint=node0:29500",
                        "--rdzv-id=4242", "--nproc-per-node=8"]


def test_launch_flags_stay_with_the_launcher():
    argv = ["run", "s.yaml", "--nproc", "8", "--nnodes=2", "--node-rank", "1", "--rdzv-endpoint", "h:1",
            "--set", "train.steps=3", "--rdzv-id=x"]
    assert without_launch_flags(argv) == ["run", "s.yaml", "--set", "train.steps=3"]


@pytest.mark.parametrize(("nodes", "message"), [(Nodes(nnodes=2), "needs --rdzv-endpoint"),
                                                (Nodes(nnodes=2, node_rank=2, rdzv_endpoint="h:1"), "--node-rank")])
def test_bad_node_settings_are_refused(nodes, message):
    with pytest.raises(ValueError, match=message):
        nodes.check()


def test_cli_refuses_several_nodes_without_an_endpoint(capsys):
    code = main(["run", "suites/distributed.yaml", "--nnodes", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "needs --rdzv-endpoint HOST:PORT" in err and "Traceback" not in err


def test_reproduce_launches_a_multiprocess_suite_through_torchrun(monkeypatch):
    import harness.distributed.launch as launch_module
    from harness.reproduce.run import launch_suite, load_paper_suite

    suite = load_paper_suite("bkmoo", "tiny", ["distributed.nproc=2"], ["joint_sft"])
    seen = {}

    def fake_launch(nproc, nodes=Nodes(), argv=None):
        seen["nproc"], seen["argv"] = nproc, argv
        seen["suite"] = yaml.safe_load(open(argv[1]).read())
        return 0

    monkeypatch.setattr(launch_module, "launch", fake_launch)
    launch_suite(suite, resume=True)
    assert seen["nproc"] == 2 and seen["argv"][0] == "run" and seen["argv"][2:] == ["--no-leaderboard", "--resume"]
    from harness.suite import suite_from_data

    assert suite_from_data(seen["suite"]).config_hash() == suite.config_hash()  # read back by its settings
    monkeypatch.setattr(launch_module, "launch", lambda *a, **k: 1)
    with pytest.raises(RuntimeError, match="exited with 1.*--resume"):
        launch_suite(suite, resume=False)
