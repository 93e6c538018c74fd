"""Launch under torchrun and join the process group (gloo on CPU, NCCL on GPU) with a timeout, so a dead
rank makes the run fail instead of hang."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from dataclasses import dataclass

import torch

from harness.config import Suite
from harness.method import DistInfo


def current_dist(suite: Suite) -> DistInfo:
    """DistInfo of this process; initialises the default process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=suite.distributed.timeout_s))
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ["LOCAL_RANK"]))


LAUNCH_FLAGS = ("--nproc", "--nnodes", "--node-rank", "--rdzv-endpoint", "--rdzv-id")
"""`polymoo run` flags that configure torchrun itself; they are not passed on to the ranks."""


@dataclass(frozen=True)
class Nodes:
    """Multi-node rendezvous (torchrun's c10d backend). One node: ``--standalone``."""

    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None  # host:port of node 0
    rdzv_id: str | None = None  # the job id every node shares (default: $SLURM_JOB_ID, else "polymoo")

    def check(self) -> None:
        if self.nnodes < 1 or not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"--node-rank must be in [0, --nnodes), got node rank {self.node_rank} of {self.nnodes}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"--nnodes {self.nnodes} needs --rdzv-endpoint HOST:PORT (node 0's address), the same "
                             "on every node")

    def torchrun_args(self) -> list[str]:
        if self.nnodes == 1:
            return ["--standalone"]
        job = self.rdzv_id or os.environ.get("SLURM_JOB_ID", "polymoo")
        return [f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={self.rdzv_endpoint}", f"--rdzv-id={job}"]


def torchrun_command(argv: list[str], nproc: int, nodes: Nodes = Nodes()) -> list[str]:
    """``torchrun`` (as ``python -m torch.distributed.run``) running ``polymoo <argv>`` with ``nproc`` processes per
    node."""
    nodes.check()
    return [sys.executable, "-m", "torch.distributed.run", *nodes.torchrun_args(), f"--nproc-per-node={nproc}",
            "-m", "harness", *argv]


def without_launch_flags(argv: list[str]) -> list[str]:
    """``argv`` without the launcher's own flags (``--nproc 8`` and ``--nproc=8`` forms)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in LAUNCH_FLAGS:
            skip = True
        elif not any(arg.startswith(f"{flag}=") for flag in LAUNCH_FLAGS):
            out.append(arg)
    return out


def launch(nproc: int, nodes: Nodes = Nodes(), argv: list[str] | None = None) -> int:
    """Re-run this command (or ``polymoo <argv>``) under torchrun with ``nproc`` processes per node; the exit code is
    torchrun's."""
    args = without_launch_flags(sys.argv[1:] if argv is None else argv)
    return subprocess.call(torchrun_command(args, nproc, nodes))
