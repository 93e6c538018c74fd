"""Seeds: one global seeding per run, and named generators for every piece of algorithmic randomness.

`generator(seed, purpose, step, bucket)` is a pure function of its arguments, so every rank draws the same
PCGrad order, projection or filter sample without touching the global RNG.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(seed: int, purpose: str, *keys: int | str) -> int:
    text = "/".join([str(seed), purpose, *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def generator(seed: int, purpose: str, *keys: int | str, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, purpose, *keys))
    return g
