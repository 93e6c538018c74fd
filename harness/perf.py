"""Peak memory: allocator peak on GPU, resident set size on CPU (sampled at each call); the machine a number came
from (the same seed gives other float trajectories on another CPU or thread count)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import psutil
import torch


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; `platform.processor()` is empty there), else what platform says."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """Where a run computes: CPU model, cores, torch's intra-op threads, and the GPU when there is one."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {"cpu": cpu_model(), "cpu_count": str(os.cpu_count()), "torch_threads": str(torch.get_num_threads()),
            "device": device}


class PeakMemory:
    def __init__(self) -> None:
        self._process = psutil.Process()
        self._peak_rss = 0
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float:
        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**20
        self._peak_rss = max(self._peak_rss, self._process.memory_info().rss)
        return self._peak_rss / 2**20
