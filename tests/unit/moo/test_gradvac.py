"""GradVac (harness/moo/weightings/gradvac.py): golden values on the DESIGN.md matrix, a vector-space reference of
the paper's Algorithm 1, properties, and a cross-check against torchjd's GradVacWeighting (eps=0, same orders)."""

from __future__ import annotations

import pytest
import torch

from harness.moo import combine, gram, weighting
from harness.moo.weightings import stateful_weighting
from harness.moo.weightings.base import visit_orders

F64 = torch.float64
J = torch.tensor([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]], dtype=F64)

# three steps on the same G with the default beta = 0.01: coefficients, direction, phi_hat_12 (= phi_hat_21) after
GOLDEN = [
    ((2.222222, 1.578947), (0.584795, 3.801170, 3.801170), -0.00841191),  # step 1 = PCGrad (phi_hat = 0)
    ((2.215613, 1.575817), (0.592448, 3.791430, 3.791430), -0.01673970),
    ((2.209068, 1.572717), (0.600026, 3.781785, 3.781785), -0.02498421),
]


def random_jacobian(k: int, p: int, seed: int) -> torch.Tensor:
    return torch.randn(k, p, generator=torch.Generator().manual_seed(seed), dtype=F64)


def run(w, grams, seeds, state=None):
    state = w.init_state(grams[0].shape[0]) if state is None else state
    out = []
    for g, seed in zip(grams, seeds, strict=True):
        c, state = w(g, None, state, generator=torch.Generator().manual_seed(seed))
        out.append(c)
    return out, state


def test_golden_three_steps():
    w = stateful_weighting("gradvac")
    state = w.init_state(2)
    for weights, direction, phi in GOLDEN:
        c, state = w(gram(J), None, state)
        torch.testing.assert_close(c, torch.tensor(weights, dtype=F64), atol=1e-6, rtol=0)
        torch.testing.assert_close(combine(J, c), torch.tensor(direction, dtype=F64), atol=1e-6, rtol=0)
        torch.testing.assert_close(state["phi_hat"], torch.tensor([[0.0, phi], [phi, 0.0]], dtype=F64),
                                   atol=1e-8, rtol=0)


@pytest.mark.parametrize("k", [2, 3, 4, 6])
def test_first_step_is_pcgrad(k):
    g = gram(random_jacobian(k, 9, k))
    c, _ = stateful_weighting("gradvac")(g, None, {"phi_hat": torch.zeros(k, k, dtype=F64)},
                                         generator=torch.Generator().manual_seed(3))
    ref = weighting("pcgrad")(g, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(c, ref, atol=1e-12, rtol=1e-12)


def test_beta_zero_is_pcgrad_every_step():
    grams = [gram(random_jacobian(4, 6, s)) for s in range(4)]
    ours, state = run(stateful_weighting("gradvac", beta=0.0), grams, range(4))
    for g, c, s in zip(grams, ours, range(4), strict=True):
        torch.testing.assert_close(c, weighting("pcgrad")(g, generator=torch.Generator().manual_seed(s)),
                                   atol=1e-12, rtol=1e-12)
    assert torch.equal(state["phi_hat"], torch.zeros(4, 4, dtype=F64))


def gradvac_reference(jac: torch.Tensor, phi_hat: torch.Tensor, orders: torch.Tensor, beta: float):
    """Vector-space GradVac (Wang et al. 2021, Algorithm 1) with given orders; returns (direction, new phi_hat)."""
    phi_hat = phi_hat.clone()
    out = torch.zeros(jac.shape[1], dtype=F64)
    for i in range(jac.shape[0]):
        gi = jac[i].clone()
        for j in orders[i].tolist():
            gj = jac[j]
            phi = float(gi @ gj / (gi.norm() * gj.norm()))
            hat = float(phi_hat[i, j])
            if phi < hat:
                a = gi.norm() * (hat * (1 - phi**2) ** 0.5 - phi * (1 - hat**2) ** 0.5) / (gj.norm() * (1 - hat**2) ** 0.5)
                gi = gi + a * gj
                assert abs(float(gi @ gj / (gi.norm() * gj.norm())) - hat) < 1e-9  # the target is reached
            phi_hat[i, j] = (1 - beta) * hat + beta * phi
        out += gi
    return out, phi_hat


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("beta", [0.01, 0.5])
def test_matches_vector_reference_over_steps(k, beta):
    w = stateful_weighting("gradvac", beta=beta)
    state = w.init_state(k)
    ref_hat = torch.zeros(k, k, dtype=F64)
    base = random_jacobian(k, 7, 40 + k)
    for step in range(5):
        jac = base + 0.7 * random_jacobian(k, 7, step)  # correlated steps, so phi_hat matters
        orders = visit_orders(k, torch.Generator().manual_seed(step), torch.device("cpu"))
        c, state = w(gram(jac), None, state, generator=torch.Generator().manual_seed(step))
        ref, ref_hat = gradvac_reference(jac, ref_hat, orders, beta)
        torch.testing.assert_close(combine(jac, c), ref, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(state["phi_hat"], ref_hat, atol=1e-12, rtol=0)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_scale_invariant(scale):
    grams = [gram(random_jacobian(3, 5, s)) for s in range(3)]
    a, sa = run(stateful_weighting("gradvac", beta=0.3), grams, range(3))
    b, sb = run(stateful_weighting("gradvac", beta=0.3), [g * scale for g in grams], range(3))
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(sa["phi_hat"], sb["phi_hat"], atol=1e-12, rtol=0)


def test_k2_permutation_equivariant():
    g = gram(random_jacobian(2, 5, 1))
    perm = torch.tensor([1, 0])
    w = stateful_weighting("gradvac", beta=0.2)
    (a, b), _ = run(w, [g, g], [0, 0])
    (pa, pb), _ = run(w, [g[perm][:, perm]] * 2, [0, 0])
    torch.testing.assert_close(pb, b[perm])


def test_zero_gradient_is_never_added():
    jac = random_jacobian(3, 4, 2)
    jac[1] = 0.0
    w = stateful_weighting("gradvac", beta=0.5)
    state = {"phi_hat": torch.full((3, 3), 0.9, dtype=F64)}
    c, new = w(gram(jac), None, state, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(c).all() and torch.isfinite(new["phi_hat"]).all()
    assert float(c[1]) == 1.0  # only its own (zero) row: the others add a = 0 of it (cosine 0, norm 0)


@pytest.mark.parametrize("beta", [-0.1, 1.5, "0.1", True])
def test_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        stateful_weighting("gradvac", beta=beta)


@pytest.fixture(scope="module")
def torchjd_agg():
    return pytest.importorskip("torchjd.aggregation")


def _our_orders_as_randperm(k: int, seed: int):
    """A stand-in for torch.randperm that returns, for each i in turn, the permutation of the others that
    ``visit_orders(k, Generator().manual_seed(seed))`` uses (K ≤ 2 draws nothing)."""
    keys = torch.rand(k, k - 1, generator=torch.Generator().manual_seed(seed)) if k > 2 else torch.zeros(k, 1)
    perms = iter(keys.argsort(1))

    def randperm(n: int, *args, **kwargs) -> torch.Tensor:
        return next(perms)

    return randperm


@pytest.mark.parametrize("k", [2, 3, 4, 5])
@pytest.mark.parametrize("beta", [0.01, 0.5])
def test_torchjd_gradvac(k, beta, torchjd_agg, monkeypatch):
    """torchjd visits the others of each i in ``torch.randperm`` order on the global RNG; feed it ours instead."""
    theirs_w = torchjd_agg.GradVacWeighting(beta=beta, eps=0.0)
    ours_w = stateful_weighting("gradvac", beta=beta)
    state = ours_w.init_state(k)
    base = random_jacobian(k, 8, k)
    for step in range(6):
        g = gram(base + 0.8 * random_jacobian(k, 8, 100 + step))
        monkeypatch.setattr(torch, "randperm", _our_orders_as_randperm(k, step))
        theirs = theirs_w(g)
        monkeypatch.undo()
        ours, state = ours_w(g, None, state, generator=torch.Generator().manual_seed(step))
        torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(state["phi_hat"], theirs_w._phi_t, atol=1e-12, rtol=0)
