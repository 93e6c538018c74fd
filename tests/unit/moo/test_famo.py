"""FAMO (harness/moo/weightings/famo.py): golden values on the DESIGN.md matrix with a fixed loss sequence,
properties, and a cross-check against torchjd 0.18's torchjd.scalarization.FAMO (the official algorithm) to 1e-12."""

from __future__ import annotations

import pytest
import torch

from harness.moo import combine, gram
from harness.moo.weightings import stateful_weighting

F64 = torch.float64
J = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=F64)

# losses given at each step, coefficients, direction, logits after the step (defaults lr=0.025, weight_decay=1e-3)
GOLDEN = [
    ((2.0, 1.0), (1 / 3, 2 / 3), (2.666667, 1.0, 1.0), (0.0, 0.0)),
    ((1.5, 0.9), (0.363356, 0.636644), (2.366436, 1.0, 1.0), (-0.025000, 0.025000)),
    ((1.2, 0.85), (0.390631, 0.609369), (2.093690, 1.0, 1.0), (-0.049910, 0.049910)),
]


def test_golden_three_steps():
    w = stateful_weighting("famo")
    state = w.init_state(2)
    for losses, weights, direction, logits in GOLDEN:
        c, state = w(gram(J), losses, state)
        torch.testing.assert_close(c, torch.tensor(weights, dtype=F64), atol=1e-6, rtol=0)
        torch.testing.assert_close(combine(J, c), torch.tensor(direction, dtype=F64), atol=1e-6, rtol=0)
        torch.testing.assert_close(state["logits"], torch.tensor(logits, dtype=F64), atol=1e-6, rtol=0)


def test_needs_losses():
    w = stateful_weighting("famo")
    assert w.needs_losses
    with pytest.raises(ValueError, match="famo"):
        w(gram(J), None, w.init_state(2))


def test_wrong_number_of_losses():
    w = stateful_weighting("famo")
    with pytest.raises(ValueError, match="famo"):
        w(gram(J), [1.0, 2.0, 3.0], w.init_state(2))


@pytest.mark.parametrize(("option", "value"), [("lr", -1.0), ("weight_decay", -1e-3), ("lr", "fast")])
def test_bad_options(option, value):
    with pytest.raises(ValueError, match=option):
        stateful_weighting("famo", **{option: value})


def losses_sequence(k: int, steps: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    rates = torch.rand(k, generator=gen, dtype=F64) * 0.2
    noise = 1 + 0.05 * torch.randn(steps, k, generator=gen, dtype=F64)
    return (2.0 + torch.rand(k, generator=gen, dtype=F64)) * torch.exp(-rates * torch.arange(steps)[:, None]) * noise


@pytest.mark.parametrize("k", [2, 4])
def test_coefficients_are_convex_and_ignore_the_gram(k):
    w = stateful_weighting("famo")
    state = w.init_state(k)
    for step, losses in enumerate(losses_sequence(k, 6, k)):
        g = gram(torch.randn(k, 5, generator=torch.Generator().manual_seed(step), dtype=F64))
        c, new = w(g, losses, state)
        c2, _ = w(torch.zeros(k, k, dtype=F64), losses, state)
        assert torch.equal(c, c2)
        assert torch.all(c > 0) and abs(float(c.sum()) - 1.0) < 1e-14
        state = new


def test_slow_task_gains_weight():
    """Task 0's loss falls fast, task 1's not at all: FAMO moves the weight (softmax of the logits) to task 1."""
    w = stateful_weighting("famo")
    state = w.init_state(2)
    for t in range(20):
        _, state = w(gram(J), [2.0 * 0.9**t, 2.0], state)
    z = torch.softmax(state["logits"], 0)
    assert z[1] > 0.6 > 0.4 > z[0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0])
def test_bad_losses_leave_state_unchanged(bad):
    w = stateful_weighting("famo")
    _, state = w(gram(J), [2.0, 1.0], w.init_state(2))
    _, state = w(gram(J), [1.5, 1.1], state)
    c, new = w(gram(J), [bad, 1.0], state)
    assert torch.isfinite(c).all()
    torch.testing.assert_close(c, torch.softmax(state["logits"], 0), atol=0, rtol=0)
    for key in state:
        assert torch.equal(new[key], state[key]), key


@pytest.fixture(scope="module")
def torchjd_famo():
    return pytest.importorskip("torchjd.scalarization").FAMO


@pytest.mark.parametrize("k", [2, 3, 6])
@pytest.mark.parametrize(("lr", "weight_decay"), [(0.025, 1e-3), (0.3, 1e-5)])
def test_torchjd_famo(k, lr, weight_decay, torchjd_famo):
    """torchjd's FAMO scalarizes the losses; its gradient w.r.t. the losses is FAMO's coefficient vector. Our call t
    uses the losses of call t as the 'after' losses of step t-1: call torchjd's update with them, then scalarize."""
    theirs = torchjd_famo(k, lr=lr, weight_decay=weight_decay).to(F64)
    ours = stateful_weighting("famo", lr=lr, weight_decay=weight_decay)
    state = ours.init_state(k)
    g = torch.eye(k, dtype=F64)
    for step, losses in enumerate(losses_sequence(k, 8, 10 + k)):
        if step:
            theirs.update(losses)
        values = losses.clone().requires_grad_(True)
        (coeffs,) = torch.autograd.grad(theirs(values), values)
        c, state = ours(g, losses, state)
        torch.testing.assert_close(c, coeffs, atol=1e-12, rtol=0)
        torch.testing.assert_close(state["logits"], theirs._w.detach(), atol=1e-12, rtol=0)
