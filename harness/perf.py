"""Peak memory: allocator peak on GPU, resident set size on CPU (sampled at each call)."""

from __future__ import annotations

import psutil
import torch


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
