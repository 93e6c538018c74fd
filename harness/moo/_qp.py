"""Tiny exact quadratic-program solvers used by the weightings (pure torch, float64, no host syncs on the main path).

Two problem families appear in gradient weightings:

* ``simplex``: ``min_w ½ wᵀQw + pᵀw`` subject to ``w ≥ 0, Σw = 1`` (MGDA with ``Q = G, p = 0``; CAGrad's inner problem);
* ``box``: ``min_v ½ vᵀQv`` subject to ``v ≥ u`` (UPGrad's projection onto the dual cone, one ``u`` per row).

For ``K ≤ ENUM_MAX`` both are solved by *vectorised support enumeration*: for every non-empty subset S of the
coordinates the equality-constrained KKT system restricted to S is solved in one batched ``torch.linalg.solve_ex``; each
candidate is clamped back into the feasible set (so every candidate is feasible and its objective is an upper bound of the
optimum) and the candidate of least objective is returned. The true optimum has a support whose KKT system is
nonsingular (affinely independent support for the simplex, any free set for a positive definite box QP), so the argmin is
exact up to rounding. No data-dependent Python control flow: safe inside DDP communication hooks on GPU.

For larger K a projected-gradient method with exact line search runs a fixed number of iterations and is then polished
by solving the KKT system on the identified support.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch
from torch import Tensor

ENUM_MAX = 12
"""Largest K solved by support enumeration (2^12 - 1 = 4095 small systems)."""

PG_ITERS = 3000
"""Projected-gradient iterations of the fallback solver (K > ENUM_MAX)."""


@lru_cache(maxsize=64)
def _masks_cpu(k: int) -> Tensor:
    codes = torch.arange(1, 2**k, dtype=torch.int64)
    bits = 2 ** torch.arange(k, dtype=torch.int64)
    return (codes[:, None] & bits[None, :]) != 0


def support_masks(k: int, device: torch.device) -> Tensor:
    """All non-empty subsets of ``range(k)`` as a ``(2^k - 1, k)`` boolean tensor."""
    return _masks_cpu(k).to(device)


def _quad(w: Tensor, q: Tensor) -> Tensor:
    """Row-wise ``wᵀQw`` for ``w`` of shape ``(..., K)``."""
    return torch.einsum("...i,ij,...j->...", w, q, w)


def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of the last dimension of ``v`` onto the probability simplex (sort-based, sync-free)."""
    k = v.shape[-1]
    s, _ = torch.sort(v, dim=-1, descending=True)
    css = s.cumsum(-1) - 1.0
    idx = torch.arange(1, k + 1, dtype=v.dtype, device=v.device)
    cond = s - css / idx > 0
    rho = cond.to(torch.int64).cumsum(-1).argmax(-1, keepdim=True)  # last True index
    theta = css.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp_min(0.0)


# --------------------------------------------------------------------------------------------------------------------
# simplex QP
# --------------------------------------------------------------------------------------------------------------------


def _simplex_enumerate(q: Tensor, p: Tensor) -> Tensor:
    k = q.shape[0]
    m = support_masks(k, q.device)
    mf = m.to(q.dtype)
    n = m.shape[0]
    a = torch.zeros(n, k + 1, k + 1, dtype=q.dtype, device=q.device)
    pair = m[:, :, None] & m[:, None, :]
    eye = torch.eye(k, dtype=q.dtype, device=q.device)
    a[:, :k, :k] = torch.where(pair, q.expand(n, k, k), eye * (1.0 - mf)[:, :, None])
    a[:, :k, k] = -mf
    a[:, k, :k] = mf
    rhs = torch.zeros(n, k + 1, dtype=q.dtype, device=q.device)
    rhs[:, :k] = -p * mf
    rhs[:, k] = 1.0
    sol, info = torch.linalg.solve_ex(a, rhs)
    return _best_simplex_candidate(sol[:, :k], info == 0, q, p)


def _best_simplex_candidate(w: Tensor, valid: Tensor, q: Tensor, p: Tensor) -> Tensor:
    valid = valid & torch.isfinite(w).all(-1)
    w = torch.where(valid[:, None], w, torch.zeros_like(w)).clamp_min(0.0)
    s = w.sum(-1, keepdim=True)
    valid = valid & (s[:, 0] > 0)
    w = w / torch.where(s > 0, s, torch.ones_like(s))
    obj = 0.5 * _quad(w, q) + w @ p
    obj = torch.where(valid, obj, torch.full_like(obj, float("inf")))
    return w[torch.argmin(obj)]


def _simplex_pg(q: Tensor, p: Tensor, iters: int = PG_ITERS) -> Tensor:
    k = q.shape[0]
    w = torch.full((k,), 1.0 / k, dtype=q.dtype, device=q.device)
    lip = torch.linalg.matrix_norm(q, ord=2).clamp_min(1e-300)
    for _ in range(iters):
        grad = q @ w + p
        direction = project_simplex(w - grad / lip) - w
        curv = direction @ q @ direction
        slope = direction @ grad
        step = torch.where(curv > 0, -slope / torch.where(curv > 0, curv, torch.ones_like(curv)), torch.ones_like(curv))
        w = w + step.clamp(0.0, 1.0) * direction
    return _simplex_polish(q, p, w)


def _simplex_polish(q: Tensor, p: Tensor, w: Tensor) -> Tensor:
    """Solve the KKT system on the support of ``w`` (least squares); keep it if it is at least as good."""
    k = q.shape[0]
    support = (w > 0).to(q.dtype)
    a = torch.zeros(k + 1, k + 1, dtype=q.dtype, device=q.device)
    a[:k, :k] = q * support[:, None] * support[None, :] + torch.diag(1.0 - support)
    a[:k, k] = -support
    a[k, :k] = support
    rhs = torch.cat([-p * support, torch.ones(1, dtype=q.dtype, device=q.device)])
    sol = torch.linalg.lstsq(a.cpu(), rhs.cpu()[:, None]).solution[:k, 0].to(q.device)
    cand = torch.stack([w, sol])
    return _best_simplex_candidate(cand, torch.ones(2, dtype=torch.bool, device=q.device), q, p)


def solve_simplex_qp(q: Tensor, p: Tensor | None = None) -> Tensor:
    """Exact ``argmin_{w in simplex} ½ wᵀQw + pᵀw`` for a symmetric PSD ``Q`` (float64)."""
    k = q.shape[0]
    if p is None:
        p = torch.zeros(k, dtype=q.dtype, device=q.device)
    if k == 1:
        return torch.ones(1, dtype=q.dtype, device=q.device)
    if k <= ENUM_MAX:
        return _simplex_enumerate(q, p)
    return _simplex_pg(q, p)


# --------------------------------------------------------------------------------------------------------------------
# box QP: min ½ vᵀQv  s.t. v ≥ u   (rows of U solved together)
# --------------------------------------------------------------------------------------------------------------------


def _box_enumerate(q: Tensor, u: Tensor) -> Tensor:
    k = q.shape[0]
    free = support_masks(k, q.device)  # free set F: rows of F satisfy (Qv)_i = 0, others v_i = u_i
    ff = free.to(q.dtype)[:, :, None]
    eye = torch.eye(k, dtype=q.dtype, device=q.device)
    a = ff * q + (1.0 - ff) * eye  # (n, k, k)
    rhs = (1.0 - ff) * u.T[None, :, :]  # (n, k, r)
    sol, info = torch.linalg.solve_ex(a, rhs)
    cands = sol.permute(2, 0, 1)  # (r, n, k)
    # the all-active candidate v = u is always feasible: append it
    cands = torch.cat([cands, u[:, None, :]], dim=1)
    valid = torch.cat([(info == 0), torch.ones(1, dtype=torch.bool, device=q.device)])
    valid = valid[None, :] & torch.isfinite(cands).all(-1)
    cands = torch.where(valid[..., None], cands, u[:, None, :])
    cands = torch.maximum(cands, u[:, None, :])
    obj = _quad(cands, q)
    obj = torch.where(valid, obj, torch.full_like(obj, float("inf")))
    best = torch.argmin(obj, dim=1)
    return cands[torch.arange(cands.shape[0], device=q.device), best]


def _box_pg_one(q: Tensor, u: Tensor, iters: int = PG_ITERS) -> Tensor:
    v = u.clone()
    lip = torch.linalg.matrix_norm(q, ord=2).clamp_min(1e-300)
    for _ in range(iters):
        grad = q @ v
        direction = torch.maximum(v - grad / lip, u) - v
        curv = direction @ q @ direction
        slope = direction @ grad
        step = torch.where(curv > 0, -slope / torch.where(curv > 0, curv, torch.ones_like(curv)), torch.ones_like(curv))
        v = v + step.clamp(0.0, 1.0) * direction
    free = (v > u).to(q.dtype)
    a = free[:, None] * q + torch.diag(1.0 - free)
    polished = torch.linalg.lstsq(a.cpu(), ((1.0 - free) * u).cpu()[:, None]).solution[:, 0].to(q.device)
    polished = torch.maximum(torch.nan_to_num(polished, nan=0.0, posinf=0.0, neginf=0.0), u)
    return polished if _quad(polished, q) <= _quad(v, q) else v


def solve_box_qp(q: Tensor, u: Tensor) -> Tensor:
    """Exact ``argmin_{v ≥ u_r} ½ vᵀQv`` for each row ``u_r`` of ``u`` (shape ``(r, K)``); ``Q`` positive definite."""
    k = q.shape[0]
    if k <= ENUM_MAX:
        return _box_enumerate(q, u)
    return torch.stack([_box_pg_one(q, row) for row in u])


def golden_section(fn: Callable[[Tensor], Tensor], lo: Tensor, hi: Tensor, iters: int = 100) -> Tensor:
    """Minimiser of a unimodal scalar function on ``[lo, hi]`` by golden-section search (tensor-only, sync-free)."""
    r = (5.0**0.5 - 1.0) / 2.0
    a, b = lo, hi
    x1, x2 = b - r * (b - a), a + r * (b - a)
    f1, f2 = fn(x1), fn(x2)
    for _ in range(iters):
        left = f1 < f2  # minimum in [a, x2]
        a, b = torch.where(left, a, x1), torch.where(left, x2, b)
        new_x = torch.where(left, b - r * (b - a), a + r * (b - a))
        x1, x2 = torch.where(left, new_x, x2), torch.where(left, x1, new_x)
        f_new = fn(new_x)
        f1, f2 = torch.where(left, f_new, f2), torch.where(left, f1, f_new)
    return (a + b) / 2.0
