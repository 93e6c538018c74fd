"""``cagrad``: CAGrad (Liu, Liu, Jin, Stone, Liu, NeurIPS 2021, "Conflict-Averse Gradient Descent for Multi-task
Learning").

``g0 = mean``, ``w = argmin_{simplex} g_wᵀg0 + c‖g0‖‖g_w‖``, ``d = g0 + (c‖g0‖/‖g_w‖) g_w``; the returned
coefficients are ``1/K + (c‖g0‖/‖g_w‖) w`` (the golden "weights" (0.7041, 0.5) for rescale 0 are exactly these),
divided by the rescale divisor. If ``g_w = 0`` (Pareto-stationary mean-ball), ``d = g0``. The inner problem is solved
exactly via ``sqrt(q) = min_τ q/(2τ) + τ/2``: golden-section search over log τ with an exact simplex QP inside (the
official code uses scipy's SLSQP; no scipy here). On the host, 20 search steps find the optimum's support and the KKT
conditions are then solved on it in closed form (4.9 ms instead of 48 ms per call at K = 8:
``results/bench/moo_weightings.json``; exactness: ``tests/unit/moo/test_cagrad_support.py``).

Options:

* ``c=0.5``: the official code's default (0.4 is used elsewhere, e.g. the FAMO/Nash-MTL experiment scripts).
* ``rescale=1``: divide by ``1`` (0), ``1+c²`` (1, the official code's default) or ``1+c`` (2).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from harness.moo._qp import golden_section, solve_simplex_qp, uses_enumeration
from harness.moo.weightings.base import Weighting, _check_choice, _prepare, _safe_div, register_weighting

COARSE_ITERS = 20
"""Golden-section steps before the exact solve on the support found (host path); 90 when that solve is refused."""

SUPPORT_ENUMERATION_MAX_K = 4
"""Up to this K the host path first tries every support, largest first (2^K - 1 closed-form solves, no search): at
K = 3 about 14x cheaper per call than the coarse search (0.7 ms against 10 ms, 50 random Grams, one thread), with
the same w (the solve on the support the search would find)."""


def _cagrad_inner(g: Tensor, b: Tensor, phi: Tensor) -> Tensor:
    """``argmin_{w in simplex} bᵀw + phi·sqrt(wᵀGw)`` via ``sqrt(q) = min_τ q/(2τ) + τ/2``.

    Where the QPs are solved by the host active set (the CPU; K > 8 on an accelerator) the search runs on CPU copies
    (one synchronisation per call instead of one per QP), each QP starts from the previous one's support, and a
    coarse search only finds the optimum's support: :func:`_on_support` then solves the KKT conditions on it in
    closed form, and checks them on every language (90 search steps when the check fails: a support not yet
    settled, a singular Gram on it). For K <= SUPPORT_ENUMERATION_MAX_K every support is tried before any search.
    """
    k = g.shape[0]
    if uses_enumeration(k, g.device):
        return _best_of(g, b, phi, _search(g, b, phi, 90))
    if g.device.type != "cpu":
        return _cagrad_inner(g.cpu(), b.cpu(), phi.cpu()).to(g.device)
    exact = _first_exact_support(g, b, phi) if k <= SUPPORT_ENUMERATION_MAX_K else None
    if exact is None:
        exact = _on_support(g, b, phi, _search(g, b, phi, COARSE_ITERS) > 0)
    return _best_of(g, b, phi, exact if exact is not None else _search(g, b, phi, 90))


def _first_exact_support(g: Tensor, b: Tensor, phi: Tensor) -> Tensor | None:
    """The solve on the first support, largest first, whose KKT conditions hold (:func:`_on_support`), or None.
    The problem is convex, so that support's minimiser is the optimum; None where no support's Gram is regular."""
    k = g.shape[0]
    for size in range(k, 0, -1):
        for members in itertools.combinations(range(k), size):
            support = torch.zeros(k, dtype=torch.bool, device=g.device)
            support[list(members)] = True
            w = _on_support(g, b, phi, support)
            if w is not None:
                return w
    return None


def _objective(g: Tensor, b: Tensor, phi: Tensor, w: Tensor) -> Tensor:
    return b @ w + phi * torch.sqrt((w @ g @ w).clamp_min(0.0))


def _best_of(g: Tensor, b: Tensor, phi: Tensor, w: Tensor) -> Tensor:
    """``w``, or the best vertex of the simplex where one is better beyond rounding. With (anti)parallel gradients
    on a block (a scalar bias: a Gram of rank 1 up to rounding) the search in τ meets a plateau where ‖g_w‖ ≈ 0 and
    can stop there, although a vertex is the optimum (measured: K = 2, w (0.85, 0.15) at value 2e-4 against the
    vertex (1, 0) at -0.055)."""
    values = b + phi * torch.sqrt(torch.diagonal(g).clamp_min(0.0))  # the objective at each vertex e_i
    best = values.argmin()
    tol = 1e-9 * (b.abs().max() + phi * torch.sqrt(torch.diagonal(g).max().clamp_min(0.0)))
    vertex = torch.nn.functional.one_hot(best, g.shape[0]).to(w)
    return torch.where(values[best] < _objective(g, b, phi, w) - tol, vertex, w)  # no host sync (accelerators)


def _search(g: Tensor, b: Tensor, phi: Tensor, iters: int) -> Tensor:
    """Golden-section search over log τ of the exact simplex QP's value, ``iters`` steps."""
    host = not uses_enumeration(g.shape[0], g.device)
    last: list[Tensor] = []  # support of the previous QP of the search: neighbouring τ share most of it

    def inner_w(log_tau: Tensor) -> Tensor:
        w = solve_simplex_qp(g * (phi / torch.exp(log_tau)), b, support=last[-1] if last else None)
        if host:
            last[:] = [w > 0]
        return w

    def h(log_tau: Tensor) -> Tensor:
        tau = torch.exp(log_tau)
        w = inner_w(log_tau)
        return b @ w + phi * (w @ g @ w / (2.0 * tau) + tau / 2.0)

    hi = torch.sqrt(torch.diagonal(g).max().clamp_min(1e-300))  # ‖g_w‖ ≤ max ‖g_i‖
    log_hi = torch.log(hi)
    return inner_w(golden_section(h, log_hi - 30.0, log_hi, iters=iters))


def _on_support(g: Tensor, b: Tensor, phi: Tensor, support: Tensor) -> Tensor | None:
    """The exact minimiser with ``support`` (w_i > 0 there, 0 elsewhere), or None if the KKT conditions fail.

    On S, stationarity is ``b_S + t·G_S w = μ1`` with ``t = phi/‖g_w‖``: ``w = (μu − v)/t`` for ``u = G_S⁻¹1``,
    ``v = G_S⁻¹b_S``; ``Σw = 1`` and ``‖g_w‖ = phi/t`` give ``t = sqrt(β² − αγ + αφ²)``, ``μ = (β + t)/α`` with
    ``α = 1ᵀu, β = 1ᵀv, γ = b_Sᵀv``. Accepted when every ``w_i`` on S is positive and off S
    ``b_i + t(Gw)_i ≥ μ`` (to rounding): then it is the global optimum (a convex problem)."""
    idx = support.nonzero().flatten()
    gs, bs = g[idx][:, idx], b[idx]
    sol, info = torch.linalg.solve_ex(gs, torch.stack([torch.ones_like(bs), bs], dim=1))
    if int(info) != 0 or float(phi) <= 0.0:
        return None
    u, v = sol[:, 0], sol[:, 1]
    alpha, beta, gamma = u.sum(), v.sum(), bs @ v
    disc = beta * beta - alpha * gamma + alpha * phi * phi
    if float(alpha) <= 0.0 or float(disc) <= 0.0:
        return None
    t = torch.sqrt(disc)
    mu = (beta + t) / alpha
    w = torch.zeros_like(b)
    w[idx] = (mu * u - v) / t
    slack = b + t * (g @ w) - mu  # 0 on S by construction, ≥ 0 off it at the optimum
    tol = 1e-9 * float(b.abs().max() + t * (g @ w).abs().max() + mu.abs())
    if bool((w[idx] <= 0).any()) or bool((slack < -tol).any()):
        return None
    return w / w.sum()


def _cagrad_factory(c: float = 0.5, rescale: int = 1) -> Weighting:
    if not isinstance(c, (int, float)) or c < 0:
        raise ValueError(f"option 'c' must be a non-negative number, got {c!r}")
    _check_choice("rescale", rescale, (0, 1, 2))
    divisor = {0: 1.0, 1: 1.0 + c * c, 2: 1.0 + c}[rescale]

    def cagrad(gram: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        g = _prepare(gram)
        k = g.shape[0]
        mean_w = torch.full((k,), 1.0 / k, dtype=torch.float64, device=g.device)
        b = g @ mean_w  # b_i = g_i·g0
        g0_norm = torch.sqrt((mean_w @ b).clamp_min(0.0))
        phi = c * g0_norm
        w = _cagrad_inner(g, b, phi)
        gw_norm = torch.sqrt((w @ g @ w).clamp_min(0.0))
        lam = torch.where(gw_norm > 1e-12, _safe_div(phi, gw_norm), torch.zeros_like(gw_norm))
        return (mean_w + lam * w) / divisor

    return cagrad


register_weighting("cagrad", _cagrad_factory)
