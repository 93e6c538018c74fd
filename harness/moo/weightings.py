"""Gradient weightings as pure functions of the K×K Gram matrix (DESIGN.md, "Idea 1").

A weighting maps ``G`` (``G_ij = g_i·g_j``, any float dtype, any device) to coefficients ``c`` (float64, same device) so
that the update direction is ``d = Σ_k c_k g_k = combine(grads, c)``. Every weighting callable has the signature
``fn(gram, *, generator=None) -> Tensor``; only ``pcgrad`` uses the generator. Computation is in float64; ``G`` is
symmetrised and divided by its largest diagonal entry first (all weightings below are invariant to that scale, which
keeps 1e30-scale and 1e-30-scale matrices finite). Zero, rank-deficient and huge matrices give finite output, never NaN.

Conventions (each is an explicit option, so configs can log it):

* ``mean``: ``c = 1/K``.
* ``mgda``: exact min-norm point of the convex hull, ``c = argmin_{simplex} cᵀGc``. K=2 uses the closed form
  ``c1 = clip((G22 − G12)/(G11 + G22 − 2 G12), 0, 1)`` with exact corners (no 0.999/0.001 clamp of the reference code);
  K>2 an exact support-enumeration solver (``_qp``). ``normalize="l2"`` solves on ``G_ij/(‖g_i‖‖g_j‖)`` and divides the
  coefficients by ``‖g_i‖``, so ``d`` is the min-norm point of the unit-normalised gradients; a zero gradient gets 0.
* ``pcgrad``: Yu et al. 2020, tracked as coefficients: for each i, g_i' = g_i; walk the other j in a random order and,
  when ``g_i'·g_j < 0``, subtract ``(g_i'·g_j / ‖g_j‖²) g_j`` (projection on the *original* g_j). ``reduction="sum"``
  (original paper, default) or ``"mean"`` (some ports). K=2 is deterministic; for K≥3 the orders are drawn from the
  ``generator`` passed to the call (the global RNG when None) — seed it with (seed, step, bucket), same on every rank.
* ``cagrad``: Liu et al. 2021. ``g0 = mean``, ``w = argmin_{simplex} g_wᵀg0 + c‖g0‖‖g_w‖``,
  ``d = g0 + (c‖g0‖/‖g_w‖) g_w``; returned coefficients are ``1/K + (c‖g0‖/‖g_w‖) w`` (the golden "weights"
  (0.7041, 0.5) for rescale 0 are exactly these), divided by ``1`` (``rescale=0``), ``1+c²`` (``rescale=1``, the official
  code's default) or ``1+c`` (``rescale=2``). ``c=0.5`` is the official default (0.4 is used elsewhere). The inner problem
  is solved exactly via ``sqrt(q) = min_τ q/(2τ) + τ/2``: golden-section search over log τ with an exact simplex QP inside.
  If ``g_w = 0`` (Pareto-stationary mean-ball), ``d = g0``.
* ``upgrad``: torchjd's UPGrad with the mean preference: each ``e_i/K`` is projected on the dual cone of the gradients
  (``min vᵀG'v s.t. v ≥ e_i/K``) and the K results are summed. ``G' = G/trace(G) + reg_eps·I`` as in torchjd
  (``norm_eps=1e-4``, ``reg_eps=1e-4``; torchjd replaces G by 0 when ``trace(G) < norm_eps``, an *absolute* threshold —
  kept for fidelity, set ``norm_eps=0`` to disable). Golden values depend on ``reg_eps``.
* ``imtl_g``: torchjd's IMTL-G: ``v = pinv(G) sqrt(diag G)``, ``c = v/Σv`` (zeros when ``|Σv| < 1e-12``; computed on G
  divided by its trace so that threshold is scale-free).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor

from harness.moo._qp import golden_section, solve_box_qp, solve_simplex_qp


class Weighting(Protocol):
    """A weighting: ``fn(gram, *, generator=None) -> coefficients`` (float64, shape ``(K,)``)."""

    def __call__(self, gram: Tensor, *, generator: torch.Generator | None = None) -> Tensor: ...


# --------------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------------


def _prepare(gram: Tensor) -> Tensor:
    """float64, symmetrised, divided by max(diag) when positive. Scale-free for every weighting here."""
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1] or gram.shape[0] == 0:
        raise ValueError(f"gram must be a non-empty square matrix, got shape {tuple(gram.shape)}")
    g = gram.detach().to(torch.float64)
    g = torch.nan_to_num(0.5 * (g + g.T), nan=0.0, posinf=0.0, neginf=0.0)
    scale = torch.diagonal(g).abs().max()
    return g / torch.where(scale > 0, scale, torch.ones_like(scale))


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    ok = den != 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def gram(grads: Tensor, chunk: int = 1 << 22) -> Tensor:
    """Gram matrix ``grads @ grads.T`` of a ``(K, P)`` tensor, accumulated in float64 over column chunks."""
    if grads.ndim != 2:
        raise ValueError(f"grads must have shape (K, P), got {tuple(grads.shape)}")
    k = grads.shape[0]
    out = torch.zeros(k, k, dtype=torch.float64, device=grads.device)
    for block in torch.split(grads, chunk, dim=1):
        b = block.to(torch.float64)
        out += b @ b.T
    return out


def combine(grads: Tensor, coeffs: Tensor) -> Tensor:
    """``Σ_k coeffs_k grads_k`` (shape ``(P,)``), computed in at least float32, returned in ``grads.dtype``."""
    dtype = torch.promote_types(grads.dtype, torch.float32)
    return (coeffs.to(device=grads.device, dtype=dtype) @ grads.to(dtype)).to(grads.dtype)


# --------------------------------------------------------------------------------------------------------------------
# mean / MGDA
# --------------------------------------------------------------------------------------------------------------------


def _mean(gram: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    k = _prepare(gram).shape[0]
    return torch.full((k,), 1.0 / k, dtype=torch.float64, device=gram.device)


def mgda_min_norm(g: Tensor) -> Tensor:
    """Exact ``argmin_{c in simplex} cᵀGc`` of a prepared (float64, symmetric) Gram matrix."""
    k = g.shape[0]
    if k == 2:
        den = g[0, 0] + g[1, 1] - 2.0 * g[0, 1]
        c1 = _safe_div(g[1, 1] - g[0, 1], den)
        c1 = torch.where(den > 0, c1.clamp(0.0, 1.0), torch.full_like(c1, 0.5))
        return torch.stack([c1, 1.0 - c1])
    return solve_simplex_qp(g)


def _mgda_factory(normalize: str = "none") -> Weighting:
    _check_choice("normalize", normalize, ("none", "l2"))

    def mgda(gram: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        g = _prepare(gram)
        if normalize == "none":
            return mgda_min_norm(g)
        norms = torch.sqrt(torch.diagonal(g).clamp_min(0.0))
        gn = _safe_div(g, norms[:, None] * norms[None, :])
        raw_norms = torch.sqrt(torch.nan_to_num(torch.diagonal(gram.detach()).to(torch.float64)).clamp_min(0.0))
        return _safe_div(mgda_min_norm(gn), raw_norms)

    return mgda


def min_norm_residual(gram: Tensor) -> float:
    """‖min-norm point of the convex hull of the gradients‖ = sqrt(c*ᵀGc*) with c* from MGDA (diagnostic; syncs)."""
    g = gram.detach().to(torch.float64)
    g = 0.5 * (g + g.T)
    c = mgda_min_norm(_prepare(gram))
    return float(torch.sqrt((c @ g @ c).clamp_min(0.0)).item())


# --------------------------------------------------------------------------------------------------------------------
# PCGrad
# --------------------------------------------------------------------------------------------------------------------


def _pcgrad_orders(k: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Row i: the indices j != i in the order they are visited (``(K, K-1)``, int64)."""
    others = torch.tensor([[j for j in range(k) if j != i] for i in range(k)], dtype=torch.int64)
    if k <= 2:
        return others.to(device)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    keys = torch.rand(k, k - 1, generator=generator, device=gen_device).cpu()
    return others.gather(1, keys.argsort(dim=1)).to(device)


def _pcgrad_factory(reduction: str = "sum") -> Weighting:
    _check_choice("reduction", reduction, ("sum", "mean"))

    def pcgrad(gram: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        g = _prepare(gram)
        k = g.shape[0]
        orders = _pcgrad_orders(k, generator, g.device)
        rows = torch.arange(k, device=g.device)
        a = torch.eye(k, dtype=torch.float64, device=g.device)
        diag = torch.diagonal(g)
        for t in range(k - 1):
            j = orders[:, t]
            inner = (a * g[:, j].T).sum(1)  # g_i'·g_j for every i
            denom = diag[j]
            coef = torch.where((inner < 0) & (denom > 0), _safe_div(inner, denom), torch.zeros_like(inner))
            a = a.index_put((rows, j), -coef, accumulate=True)
        out = a.sum(0)
        return out / k if reduction == "mean" else out

    return pcgrad


# --------------------------------------------------------------------------------------------------------------------
# CAGrad
# --------------------------------------------------------------------------------------------------------------------


def _cagrad_inner(g: Tensor, b: Tensor, phi: Tensor) -> Tensor:
    """``argmin_{w in simplex} bᵀw + phi·sqrt(wᵀGw)`` via ``sqrt(q) = min_τ q/(2τ) + τ/2``."""

    def inner_w(log_tau: Tensor) -> Tensor:
        return solve_simplex_qp(g * (phi / torch.exp(log_tau)), b)

    def h(log_tau: Tensor) -> Tensor:
        tau = torch.exp(log_tau)
        w = inner_w(log_tau)
        return b @ w + phi * (w @ g @ w / (2.0 * tau) + tau / 2.0)

    hi = torch.sqrt(torch.diagonal(g).max().clamp_min(1e-300))  # ‖g_w‖ ≤ max ‖g_i‖
    log_hi = torch.log(hi)
    log_tau = golden_section(h, log_hi - 30.0, log_hi, iters=90)
    return inner_w(log_tau)


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


# --------------------------------------------------------------------------------------------------------------------
# UPGrad / IMTL-G (torchjd definitions)
# --------------------------------------------------------------------------------------------------------------------


def _trace_normalize(g: Tensor, eps: float) -> Tensor:
    tr = torch.diagonal(g).sum()
    small = (tr < eps) | (tr <= 0)
    return torch.where(small, torch.zeros_like(g), g / torch.where(small, torch.ones_like(tr), tr))


def _upgrad_factory(norm_eps: float = 1e-4, reg_eps: float = 1e-4) -> Weighting:
    for name, val in (("norm_eps", norm_eps), ("reg_eps", reg_eps)):
        if not isinstance(val, (int, float)) or val < 0:
            raise ValueError(f"option {name!r} must be a non-negative number, got {val!r}")

    def upgrad(gram: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        # torchjd normalises the raw G by its trace; our _prepare scaling commutes with that except for norm_eps.
        raw = gram.detach().to(torch.float64)
        raw = torch.nan_to_num(0.5 * (raw + raw.T), nan=0.0, posinf=0.0, neginf=0.0)
        g = _prepare(gram)
        tr_raw = torch.diagonal(raw).sum()
        g = torch.where(tr_raw < norm_eps, torch.zeros_like(g), _trace_normalize(g, 0.0))
        k = g.shape[0]
        q = g + reg_eps * torch.eye(k, dtype=torch.float64, device=g.device)
        if reg_eps == 0:
            q = q + 1e-12 * torch.eye(k, dtype=torch.float64, device=g.device)
        u = torch.eye(k, dtype=torch.float64, device=g.device) / k
        return solve_box_qp(q, u).sum(0)

    return upgrad


def _imtl_g_factory() -> Weighting:
    def imtl_g(gram: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        g = _trace_normalize(_prepare(gram), 0.0)
        d = torch.sqrt(torch.diagonal(g).clamp_min(0.0))
        v = torch.linalg.pinv(g, hermitian=True) @ d
        v_sum = v.sum()
        ok = v_sum.abs() >= 1e-12
        return torch.where(ok, v / torch.where(ok, v_sum, torch.ones_like(v_sum)), torch.zeros_like(v))

    return imtl_g


def _mean_factory() -> Weighting:
    return _mean


# --------------------------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------------------------

WEIGHTINGS: dict[str, Callable[..., Weighting]] = {
    "mean": _mean_factory,
    "mgda": _mgda_factory,
    "pcgrad": _pcgrad_factory,
    "cagrad": _cagrad_factory,
    "upgrad": _upgrad_factory,
    "imtl_g": _imtl_g_factory,
}


def available_weightings() -> list[str]:
    """Names accepted by :func:`weighting`."""
    return sorted(WEIGHTINGS)


def _check_choice(option: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed or type(value) is bool:
        raise ValueError(f"option {option!r} must be one of {list(allowed)}, got {value!r}")


def weighting(name: str, **options: Any) -> Weighting:
    """Build the weighting ``name`` with ``options`` (see the module docstring). Raises ValueError on bad input."""
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}; allowed: {available_weightings()}")
    factory = WEIGHTINGS[name]
    allowed = list(inspect.signature(factory).parameters)
    for key in options:
        if key not in allowed:
            raise ValueError(f"unknown option {key!r} for weighting {name!r}; allowed options: {allowed}")
    return factory(**options)
