"""The Stateful weighting protocol (harness/moo/weightings/base.py): every registered weighting through one calling
convention, purity of the call, the registry's rules, and checkpoint round trips (torch.save of the state into a
BytesIO and back: continuing gives exactly the coefficients of never stopping)."""

from __future__ import annotations

import io

import pytest
import torch

from harness.moo import gram, weighting
from harness.moo.weightings import (
    STATEFUL_WEIGHTINGS,
    WEIGHTINGS,
    StatefulWeighting,
    as_stateful,
    available_weightings,
    load_state_dict,
    register_weighting,
    state_dict,
    stateful_weighting,
)

F64 = torch.float64
ALL = available_weightings(include_stateful=True)
K = 3


def jacobians(steps: int, k: int = K, seed: int = 0) -> list[torch.Tensor]:
    base = torch.randn(k, 6, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return [base + torch.randn(k, 6, generator=torch.Generator().manual_seed(seed + 1 + t), dtype=F64)
            for t in range(steps)]


def losses_at(t: int, k: int = K) -> torch.Tensor:
    return torch.linspace(2.0, 1.0, k, dtype=F64) * (0.95 + 0.03 * torch.arange(k, dtype=F64)) ** t


def run(w: StatefulWeighting, state, start: int, stop: int) -> tuple[list[torch.Tensor], dict]:
    out = []
    for t, jac in enumerate(jacobians(stop)[start:], start=start):
        c, state = w(gram(jac), losses_at(t), state, generator=torch.Generator().manual_seed(1000 + t))
        out.append(c)
    return out, state


def test_registry_lists():
    assert ALL == sorted(set(WEIGHTINGS) | set(STATEFUL_WEIGHTINGS))
    assert sorted(STATEFUL_WEIGHTINGS) == ["famo", "gradvac"]
    assert not set(WEIGHTINGS) & set(STATEFUL_WEIGHTINGS)


@pytest.mark.parametrize("name", ALL)
def test_one_calling_convention(name):
    w = stateful_weighting(name)
    assert isinstance(w, StatefulWeighting)
    assert as_stateful(w) is w
    state = w.init_state(K)
    assert all(v.dtype == F64 and v.device.type == "cpu" for v in state.values())
    before = {key: v.clone() for key, v in state.items()}
    c, new = w(gram(jacobians(1)[0]), losses_at(0), state, generator=torch.Generator().manual_seed(0))
    assert c.dtype == F64 and c.shape == (K,) and torch.isfinite(c).all()
    assert new.keys() == state.keys() and all(new[key].shape == state[key].shape for key in state)
    assert all(torch.equal(state[key], before[key]) for key in state)  # the call does not mutate its input
    c2, new2 = w(gram(jacobians(1)[0]), losses_at(0), state, generator=torch.Generator().manual_seed(0))
    assert torch.equal(c, c2) and all(torch.equal(new[key], new2[key]) for key in new)


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_adapter_gives_the_plain_numbers(name):
    w = stateful_weighting(name)
    assert not w.needs_losses and w.init_state(K) == {}
    g = gram(jacobians(1, k=4)[0])
    c, state = w(g, None, {}, generator=torch.Generator().manual_seed(5))
    assert state == {}
    assert torch.equal(c, weighting(name)(g, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("name", ["gradvac", "famo"])
@pytest.mark.parametrize("kind", ["zero", "rank1", "huge", "tiny", "one_zero_grad"])
def test_stateful_degenerate_matrices_are_finite(name, kind):
    jac = jacobians(1)[0]
    g = {
        "zero": torch.zeros(K, K, dtype=F64),
        "rank1": gram(jac[:1].expand(K, -1) * torch.arange(1, K + 1, dtype=F64)[:, None]),
        "huge": gram(jac) * 1e30,
        "tiny": gram(jac) * 1e-30,
        "one_zero_grad": gram(torch.cat([jac[:-1], torch.zeros(1, 6, dtype=F64)])),
    }[kind]
    w = stateful_weighting(name, **({"beta": 0.5} if name == "gradvac" else {}))
    state = w.init_state(K)
    for t in range(4):
        c, state = w(g, losses_at(t), state, generator=torch.Generator().manual_seed(t))
        assert torch.isfinite(c).all() and all(torch.isfinite(v).all() for v in state.values())


def test_stateful_names_are_refused_by_the_stateless_builder():
    with pytest.raises(ValueError, match=r"stateful_weighting\('gradvac'\)"):
        weighting("gradvac")
    with pytest.raises(ValueError, match="famo"):
        weighting("famo")


def test_unknown_names_and_options():
    with pytest.raises(ValueError, match="gradvac"):  # the allowed list names the stateful ones too
        stateful_weighting("nope")
    with pytest.raises(ValueError, match="allowed options"):
        stateful_weighting("gradvac", eps=1e-8)
    with pytest.raises(ValueError, match="allowed options"):
        stateful_weighting("mgda", beta=0.1)


def test_register_weighting():
    def factory() -> object:
        return lambda gram, *, generator=None: torch.ones(gram.shape[0], dtype=F64)

    register_weighting("_test_ones", factory)
    try:
        register_weighting("_test_ones", factory)  # same factory again: a no-op (re-import)
        assert "_test_ones" in available_weightings()
        assert torch.equal(weighting("_test_ones")(torch.eye(2)), torch.ones(2, dtype=F64))
        with pytest.raises(ValueError, match="already registered"):
            register_weighting("_test_ones", lambda: None)
        with pytest.raises(ValueError, match="already registered"):
            register_weighting("_test_ones", factory, stateful=True)
    finally:
        WEIGHTINGS.pop("_test_ones")


def _checkpoint(state, as_lists: bool) -> dict:
    saved = state_dict(state)
    if as_lists:
        saved = {key: v.tolist() for key, v in saved.items()}
    buf = io.BytesIO()
    torch.save(saved, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("as_lists", [False, True], ids=["tensors", "lists"])
def test_checkpoint_round_trip_continues_exactly(name, as_lists):
    w = stateful_weighting(name, **({"beta": 0.3} if name == "gradvac" else {}))
    straight, _ = run(w, w.init_state(K), 0, 6)
    first, state = run(w, w.init_state(K), 0, 3)
    resumed = load_state_dict(stateful_weighting(name, **({"beta": 0.3} if name == "gradvac" else {})), K,
                              _checkpoint(state, as_lists))
    second, _ = run(w, resumed, 3, 6)
    for a, b in zip(straight, first + second, strict=True):
        assert torch.equal(a, b)


def test_state_matters():
    """Resuming from a fresh state instead of the saved one gives different numbers (the round trip is not vacuous)."""
    for name in ("gradvac", "famo"):
        w = stateful_weighting(name, **({"beta": 0.3} if name == "gradvac" else {}))
        straight, _ = run(w, w.init_state(K), 0, 5)
        fresh, _ = run(w, w.init_state(K), 3, 5)
        assert not torch.equal(straight[-1], fresh[-1]), name


def test_load_state_dict_checks_keys_and_shapes():
    w = stateful_weighting("gradvac")
    saved = state_dict(w.init_state(3))
    with pytest.raises(ValueError, match="shape"):
        load_state_dict(w, 4, saved)
    with pytest.raises(ValueError, match="keys"):
        load_state_dict(w, 3, {**saved, "extra": torch.zeros(1)})
    with pytest.raises(ValueError, match="keys"):
        load_state_dict(stateful_weighting("famo"), 3, saved)
    assert load_state_dict(stateful_weighting("mean"), 3, {}) == {}


def test_state_dict_is_detached_cpu_float64_copy():
    w = stateful_weighting("famo")
    _, state = w(gram(jacobians(1)[0]), losses_at(0), w.init_state(K))
    saved = state_dict(state)
    assert all(v.device.type == "cpu" and v.dtype == F64 for v in saved.values())
    saved["logits"] += 1.0
    assert not torch.equal(saved["logits"], state["logits"])
