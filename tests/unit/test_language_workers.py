"""The loop engine's side-by-side passes (harness.train.language_workers): the same rows, bit for bit, as the
sequential loop at one thread; used only where that holds; the caller's grad mode and autocast carried over."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.models.loading import load_model
from harness.train.grad_engine import loop_gradients
from harness.train.language_workers import draws_random_numbers, loop_workers, run_side_by_side
from harness.train.sft import token_losses, trainable_parameters
from tests.equivalence.test_grad_engine import _batch


@pytest.fixture
def threads():
    """Run with `n` torch threads, restored afterwards (the policy reads the count)."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_rows_side_by_side_equal_the_sequential_loop_at_one_thread_bit_for_bit(threads):
    model = load_model("llama", "tiny")[0]
    model.train()
    params = [p for _, p in trainable_parameters(model)]
    inputs = _batch(model.config.vocab_size, k=5, b=2, width=20)
    threads(1)
    sequential = loop_gradients(model, inputs, params, token_losses, workers=1)
    threads(2)
    side_by_side = loop_gradients(model, inputs, params, token_losses, workers=2)
    assert torch.equal(side_by_side.rows, sequential.rows)
    assert torch.equal(side_by_side.losses, sequential.losses)
    assert side_by_side.languages == sequential.languages == [0, 1, 2, 3, 4]
    assert torch.get_num_threads() == 2, "the workers' one thread does not leak into the caller"


def test_workers_only_where_the_rows_stay_the_same(threads):
    model = load_model("llama", "tiny")[0]
    model.train()
    cpu = torch.device("cpu")
    threads(2)
    assert loop_workers(model, cpu, 8) == 2
    assert loop_workers(model, cpu, 1) == 1, "one language: nothing to share out"
    assert loop_workers(model, torch.device("meta"), 8) == 1, "only CPU rows"
    threads(1)
    assert loop_workers(model, cpu, 8) == 1, "one torch thread: nothing to share out"
    threads(2)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert loop_workers(model, cpu, 8) == 1, "checkpointing's saved-tensor hooks are per thread"


def test_any_random_draw_in_training_keeps_the_loop_sequential():
    plain = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.0))
    assert not draws_random_numbers(plain.train())
    dropout = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1))
    assert draws_random_numbers(dropout.train())
    assert not draws_random_numbers(dropout.eval()), "eval mode draws nothing"
    attention = nn.Linear(2, 2)
    attention.attention_dropout = 0.1  # how transformers' attention modules keep their dropout rate
    assert draws_random_numbers(nn.Sequential(attention).train())


def test_side_by_side_carries_grad_mode_and_autocast_and_keeps_order():
    def state(i: int) -> tuple[int, bool, bool, torch.dtype]:
        return i, torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        seen = run_side_by_side(2, state, range(6))
    assert seen == [(i, False, True, torch.bfloat16) for i in range(6)]
    assert [s[1:3] for s in run_side_by_side(2, state, range(2))] == [(True, False)] * 2


def test_side_by_side_raises_the_callers_error():
    def fail(i: int) -> int:
        if i == 3:
            raise ValueError("language 3 failed")
        return i

    with pytest.raises(ValueError, match="language 3"):
        run_side_by_side(2, fail, range(5))
