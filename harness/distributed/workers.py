"""Local multi-process helpers (gloo on CPU) for tests and benchmarks: spawn N ranks, tiny models.

`spawn(fn, nproc, *args)` starts N processes with `torch.multiprocessing` (spawn context; the caller needs the
`__main__` guard when run as a script), initialises a gloo process group with a timeout and calls `fn(rank, world,
*args)`. Results travel through files.
"""

from __future__ import annotations

import datetime
import os
import socket
from typing import Any

import torch
import torch.distributed as dist


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn, world: int, port: int, timeout_s: float, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)  # as torchrun's OMP_NUM_THREADS=1: deterministic and no oversubscription
    torch.use_deterministic_algorithms(True, warn_only=True)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    try:
        fn(rank, world, *args)
    finally:
        dist.destroy_process_group()


def spawn(fn, nproc: int, *args: Any, timeout_s: float = 120) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_entry, args=(fn, nproc, free_port(), timeout_s, args), nprocs=nproc, join=True)


# -- tiny models ------------------------------------------------------------------------------------------------


def micro_llama(seed: int = 0, vocab: int = 64, hidden: int = 32, layers: int = 2, intermediate: int = 64,
                dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A random-init Llama (HF class, so DDP's bucket rebuild meets the real norm/attention order), ~25k params."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4, max_position_embeddings=128,
                      tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg).to(dtype)
    return model
