"""Arguments shared by several sub-commands."""

from __future__ import annotations

import argparse
from typing import Any


def suite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("suite", help="suite YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a suite key, e.g. --set train.steps=20 (repeatable)")


def add_node_args(p: argparse.ArgumentParser) -> None:
    """Multi-node launch (torchrun's c10d rendezvous); the same command on every node, with its own --node-rank."""
    p.add_argument("--nnodes", type=int, default=1, help="nodes (torchrun --nnodes); 1: --standalone")
    p.add_argument("--node-rank", type=int, default=0, help="this node's rank, 0..nnodes-1 (e.g. $SLURM_NODEID)")
    p.add_argument("--rdzv-endpoint", default=None, help="HOST:PORT of node 0, the same on every node")
    p.add_argument("--rdzv-id", default=None, help="job id shared by the nodes (default $SLURM_JOB_ID)")


def nodes_of(args: argparse.Namespace) -> Any:
    from harness.distributed.launch import Nodes

    nodes = Nodes(args.nnodes, args.node_rank, args.rdzv_endpoint, args.rdzv_id)
    nodes.check()
    return nodes
