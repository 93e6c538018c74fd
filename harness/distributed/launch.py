"""Launch under torchrun and join the process group (gloo on CPU, NCCL on GPU) with a timeout, so a dead
rank makes the run fail instead of hang."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys

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


def torchrun_command(argv: list[str], nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "harness", *argv]


def launch(nproc: int) -> int:
    """Re-run this command under torchrun with `nproc` processes; the exit code is torchrun's."""
    argv = [a for a in sys.argv[1:] if not a.startswith("--nproc")]
    if "--nproc" in sys.argv[1:]:
        i = sys.argv[1:].index("--nproc")
        argv = sys.argv[1:][:i] + sys.argv[1:][i + 2:]
    return subprocess.call(torchrun_command(argv, nproc))
