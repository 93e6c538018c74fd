"""The ``loop`` engine's per-language passes on the CPU, run side by side in worker threads of one torch thread each.

Why: on a CPU with several cores, one small pass per language parallelises badly inside each operator (OpenMP's fork
and join around tensors of b rows costs as much as the work), while joint SFT's one large pass parallelises well. On
the project's 2 cores (tiny llama twin, K = 8, 4 rows × 64 tokens a language; ``results/bench/grad_engine.md``) the
sequential loop took 1.33× joint's forward/backward, two single-threaded workers 1.16× (the GIL serialises the
Python between operators, so two workers do not halve it).

Same numbers: every pass runs its operators on one thread, so each language's row is bit-identical to the sequential
loop at one thread (``tests/unit/test_language_workers.py``), whatever the process's thread count, and rows are
written into disjoint slices. The workers are used only where that holds and nothing else changes:

* the rows live on the CPU and torch may use more than one thread (else there is nothing to share out);
* no module draws random numbers in training (dropout with p > 0, attention dropout): the draws of two threads from
  the one generator would interleave in no fixed order;
* no gradient checkpointing: its saved-tensor hooks and RNG stashing are per thread.

Each worker runs with the caller's grad mode and CPU autocast state (both are thread-local in torch). Peak memory
holds the activations of up to :data:`MAX_WORKERS` languages at once instead of one (still fewer than joint's K).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import TypeVar

import torch
from torch import nn

R = TypeVar("R")

MAX_WORKERS = 2
"""Most languages in flight at once: measured at 2 (the project's cores); more workers contend for the GIL and each
holds one language's activations."""


def draws_random_numbers(model: nn.Module) -> bool:
    """Whether a training forward of ``model`` draws from the RNG: dropout modules with p > 0, or an attention
    dropout probability (transformers keeps it as ``attention_dropout`` on the attention modules) above 0."""
    if not model.training:
        return False
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return True
        rate = getattr(m, "attention_dropout", 0.0)
        if isinstance(rate, (int, float)) and rate > 0:
            return True
    return False


def checkpoints_activations(model: nn.Module) -> bool:
    """Whether transformers' activation (gradient) checkpointing is on (its name before transformers 5.x as fallback)."""
    flag = getattr(model, "is_activation_checkpointing", None)
    return bool(getattr(model, "is_gradient_checkpointing", False) if flag is None else flag)


def loop_workers(model: nn.Module, device: torch.device, languages: int) -> int:
    """How many languages' passes run at once: 1 (sequential) unless every condition of the module docstring holds."""
    if device.type != "cpu" or languages < 2 or torch.get_num_threads() < 2:
        return 1
    if checkpoints_activations(model) or draws_random_numbers(model):
        return 1
    return min(MAX_WORKERS, torch.get_num_threads(), languages)


@lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    """One pool per worker count for the process (a fresh pool per step cost 2-5 ms of thread start-up)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="polymoo-language",
                              initializer=torch.set_num_threads, initargs=(1,))


def run_side_by_side(workers: int, fn: Callable[..., R], *columns: Iterable) -> list[R]:
    """``[fn(*args) for args in zip(*columns)]``, the calls spread over ``workers`` single-threaded threads, each
    with the caller's grad mode and CPU autocast state; results in input order, the first error raised."""
    grad = torch.is_grad_enabled()
    autocast, autocast_dtype = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")

    def call(args: Sequence) -> R:
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=autocast_dtype, enabled=autocast):
            return fn(*args)

    return list(_pool(workers).map(call, zip(*columns, strict=True)))
