"""Tiny exact quadratic-program solvers used by the weightings (float64, deterministic).

Two problem families appear in gradient weightings:

* ``simplex``: ``min_w ½ wᵀQw + pᵀw`` subject to ``w ≥ 0, Σw = 1`` (MGDA with ``Q = G, p = 0``; CAGrad's inner problem);
* ``box``: ``min_v ½ vᵀQv`` subject to ``v ≥ u`` (UPGrad's projection onto the dual cone, one ``u`` per row).

**On an accelerator, K ≤ ENUM_MAX (8): vectorised support enumeration**, no host sync (CUDA DDP hooks' path). For every
non-empty subset S the KKT system restricted to S is solved in one batched ``torch.linalg.solve_ex`` (LU); each
candidate is clamped back into the feasible set (an upper bound of the optimum) and the least objective is returned.
The optimum has a support whose KKT system is nonsingular, so the argmin is exact up to rounding. It is also the
reference the active set is tested against.

**On the CPU at every K, and on an accelerator above ENUM_MAX: an exact active set on the host** (float64 numpy; one
round trip per solve, i.e. one sync when ``Q`` lives on an accelerator). Both families are ``min ½ xᵀAx − bᵀx`` over
``x ≥ 0`` (box: ``x = v − u``, ``A = Q``, ``b = −Qu``), the simplex with ``Σx = 1`` and its multiplier ``μ`` added to
each system:

1. :func:`pivot`, block principal pivoting (Júdice & Pires 1994; Kim & Park, SIAM J. Sci. Comput. 2011): solve the
   stationarity system on a free set, exchange every variable that violates a sign condition, repeat. Starting from
   all languages free, an interior or near-interior optimum takes 1–6 pivots at K = 64.
2. :func:`primal`, Wolfe's min-norm-point method / Lawson–Hanson, when the pivoting stalls (degenerate problems: more
   languages than dimensions, the origin in the hull): feasible iterates, one variable in or out at a time, finite.
3. the projected gradient below, polished on its support, if neither terminates (never observed; a safety net).

Every system is solved by LAPACK's LU (``gesv``): deterministic, no ``lstsq``. The simplex systems use ``Q_ii (1 +
RIDGE) + FLOOR`` on the diagonal: a ridge relative to each gradient's own squared norm makes duplicate, zero and
rank-deficient gradients solvable without swamping small ones (a ridge relative to max diag G moved the weights of
gradients 1,000× smaller than the largest by 1e-2); it moves the KKT residual by at most ``RIDGE``. The sign tests
compare with each value's rounding error (``TOL``, ``ABS_TOL``): KKT-exact to ~1e-12 of max diag G (``docs/solvers.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

ENUM_MAX = 8
"""Largest K enumerated on an accelerator (255 systems). On the CPU the active set is 3-20× faster at K = 8."""


def uses_enumeration(k: int, device: torch.device) -> bool:
    return device.type != "cpu" and k <= ENUM_MAX  # sync-free enumeration: accelerators, K ≤ 8

PG_ITERS = 3000  # projected-gradient iterations of the fallback solver

RIDGE = 1e-12
"""Simplex pivots solve with ``Q_ii (1 + RIDGE)`` on the diagonal: a relative ridge per gradient."""

FLOOR = 1e-30
"""Absolute diagonal floor (Q scaled to max |diag| 1): only separates exactly zero, duplicated gradients."""

TOL = 1e-12
"""Relative tolerance of the sign tests: a free ``x_i`` counts as negative below ``-TOL·max|x|``, a dual ``y_i`` below
``-(TOL·((|A||x|)_i + |b_i| + |μ|) + ABS_TOL)``, i.e. only when negative beyond its rounding error, at every scale."""

ABS_TOL = 1e-15
"""Absolute floor of the dual test (problems are scaled to max |diag| 1): the KKT residual it can leave is 1e-15."""

BACKUP = 3
"""Block exchanges in a row that may fail to reduce the number of infeasible variables before :func:`primal` takes over
(Kim & Park's backup count; their Murty single-pivot phase took hundreds of pivots on degenerate problems here)."""


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
# active set on the host (K > ENUM_MAX)
# --------------------------------------------------------------------------------------------------------------------


def _solve_free(a: np.ndarray, b: np.ndarray, free: np.ndarray, simplex: bool) -> tuple[np.ndarray, float]:
    """``x`` (zero off ``free``) and the multiplier ``μ`` of ``Σx = 1`` (0 without it) that solve the stationarity
    conditions ``A_FF x_F − b_F − μ1 = 0`` on the free set."""
    idx = np.flatnonzero(free)
    x = np.zeros(b.shape[0])
    if idx.size == 0:
        return x, 0.0
    sub = a[np.ix_(idx, idx)]
    if not simplex:
        x[idx] = np.linalg.solve(sub, b[idx])
        return x, 0.0
    m = idx.size
    kkt = np.zeros((m + 1, m + 1))
    kkt[:m, :m] = sub
    kkt[:m, m] = -1.0
    kkt[m, :m] = 1.0
    sol = np.linalg.solve(kkt, np.append(b[idx], 1.0))
    x[idx] = sol[:m]
    return x, float(sol[m])


def _duals(a: np.ndarray, b: np.ndarray, x: np.ndarray, mu: float) -> tuple[np.ndarray, np.ndarray]:
    """Dual values ``y = Ax − b − μ`` and the bound below which each counts as negative (its rounding error)."""
    return a @ x - b - mu, -(TOL * (np.abs(a) @ np.abs(x) + np.abs(b) + abs(mu)) + ABS_TOL)


def pivot(
    a: np.ndarray, b: np.ndarray, free: np.ndarray, *, simplex: bool = False, max_pivots: int | None = None
) -> np.ndarray | None:
    """Block principal pivoting for ``min ½ xᵀAx − bᵀx`` s.t. ``x ≥ 0`` (and ``Σx = 1`` when ``simplex``).

    ``free``: the initial free set (a warm start). Each pivot solves the stationarity system on the free set and
    exchanges every infeasible variable: ``x_i < 0`` on the free set, a negative dual off it (see ``TOL``). Returns the
    KKT point, or None when ``BACKUP`` exchanges in a row fail to reduce the number of infeasible variables (degenerate
    problems, where Murty's one-at-a-time rule would take hundreds of pivots), after ``max_pivots`` (default ``2K +
    10``) or on a singular system: :func:`primal` then takes over.
    """
    k = b.shape[0]
    free = np.array(free, dtype=bool)
    best, backup = k + 1, BACKUP
    for _ in range(2 * k + 10 if max_pivots is None else max_pivots):
        try:
            x, mu = _solve_free(a, b, free, simplex)
        except np.linalg.LinAlgError:
            return None
        y, floor = _duals(a, b, x, mu)
        bad = np.where(free, x < -TOL * np.abs(x).max(), y < floor)
        n_bad = int(np.count_nonzero(bad))
        if n_bad == 0:
            return x
        if n_bad < best:
            best, backup = n_bad, BACKUP
        elif backup == 0:
            return None
        else:
            backup -= 1
        free = free ^ bad
    return None


def primal(a: np.ndarray, b: np.ndarray, *, simplex: bool = False, max_iters: int | None = None) -> np.ndarray | None:
    """Primal active set (Wolfe's min-norm-point method for the simplex, Lawson–Hanson for ``x ≥ 0``): feasible
    iterates, a monotone objective, one variable in or out per iteration; finite, and it never makes a support the
    ridge alone keeps nonsingular, so it settles the degenerate problems the block pivoting gives up on. Starts at the
    best vertex (simplex) or at 0; None after ``max_iters`` (default ``10K + 50``).
    """
    k = b.shape[0]
    x, free = np.zeros(k), np.zeros(k, dtype=bool)
    if simplex:
        j = int(np.argmin(0.5 * np.diagonal(a) - b))
        x[j], free[j] = 1.0, True
    for _ in range(10 * k + 50 if max_iters is None else max_iters):
        z, mu = _solve_free(a, b, free, simplex)
        neg = free & (z <= 0.0)
        if not neg.any():  # z is feasible: move there and add the most negative dual, if any
            x = z
            y, floor = _duals(a, b, x, mu)
            y = np.where(free | (y >= floor), np.inf, y)
            if not np.isfinite(y).any():
                return x
            free[int(np.argmin(y))] = True
            continue
        ratio = np.where(neg, x / np.where(neg, x - z, 1.0), np.inf)
        j = int(np.argmin(ratio))
        x = x + ratio[j] * (z - x)
        x[j], free[j] = 0.0, False
        free &= x > 0.0
    return None


def _active_set(a: np.ndarray, b: np.ndarray, free: np.ndarray, simplex: bool) -> np.ndarray | None:
    x = pivot(a, b, free, simplex=simplex)
    if x is None:
        try:
            x = primal(a, b, simplex=simplex)
        except np.linalg.LinAlgError:
            return None
    return x if x is not None and np.all(np.isfinite(x)) else None


def _host(t: Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()


def simplex_active_set(q: np.ndarray, p: np.ndarray | None = None, free: np.ndarray | None = None) -> np.ndarray | None:
    """``argmin_{w in simplex} ½ wᵀQw + pᵀw`` by :func:`pivot`, else :func:`primal` (None if neither terminated);
    ``free``: the pivoting's warm start (all by default).

    The pivots solve the KKT system with the multiplier of ``Σw = 1`` on ``Q + diag(RIDGE·Q_ii + FLOOR)`` (Q scaled
    to max |diag| 1): the ridge is relative per gradient, so gradients whose norms differ by orders of magnitude keep
    their relative geometry (a uniform ridge would swamp the small ones).
    """
    k = q.shape[0]
    p = np.zeros(k) if p is None else p
    scale = max(np.abs(np.diagonal(q)).max(), np.abs(p).max())
    scale = scale if scale > 0 else 1.0
    a = q / scale
    a = a + np.diag(RIDGE * np.abs(np.diagonal(a)) + FLOOR)
    if free is None or not np.any(free):  # the simplex needs a non-empty free set
        free = np.ones(k, dtype=bool)
    x = _active_set(a, -p / scale, free, True)
    if x is None or x.sum() <= 0:
        return None
    x = np.maximum(x, 0.0)
    return x / x.sum()


def box_active_set(q: np.ndarray, u: np.ndarray) -> np.ndarray | None:
    """``argmin_{v ≥ u_r} ½ vᵀQv`` for each row of ``u`` by :func:`pivot`, else :func:`primal` (None if neither
    terminated for a row)."""
    k = q.shape[0]
    diag = np.abs(np.diagonal(q)).max()
    a = q / (diag if diag > 0 else 1.0)  # positive definite by contract (UPGrad adds its reg_eps): no ridge
    out = np.empty_like(u)
    for r, row in enumerate(u):
        x = _active_set(a, -(a @ row), np.zeros(k, dtype=bool), False)
        if x is None:
            return None
        out[r] = row + np.maximum(x, 0.0)
    return out


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
    """Projected gradient with exact line search, then :func:`_simplex_polish` (sync-free; the fallback)."""
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
    """Solve the KKT system on the support of ``w`` (LU with the relative ``RIDGE``; deterministic, sync-free) and keep
    the solution if it is at least as good."""
    k = q.shape[0]
    support = (w > 0).to(q.dtype)
    scale = torch.diagonal(q).abs().max().clamp_min(1e-300)
    a = torch.zeros(k + 1, k + 1, dtype=q.dtype, device=q.device)
    ridge = torch.diag(RIDGE * torch.diagonal(q).abs() + FLOOR * scale)
    a[:k, :k] = (q + ridge) * support[:, None] * support[None, :]
    a[:k, :k] += torch.diag(1.0 - support)
    a[:k, k] = -support
    a[k, :k] = support
    rhs = torch.cat([-p * support, torch.ones(1, dtype=q.dtype, device=q.device)])
    sol, info = torch.linalg.solve_ex(a, rhs)
    cand = torch.stack([w, sol[:k]])
    valid = torch.stack([torch.ones_like(info, dtype=torch.bool), info == 0])
    return _best_simplex_candidate(cand, valid, q, p)


def solve_simplex_qp(q: Tensor, p: Tensor | None = None, *, support: Tensor | None = None) -> Tensor:
    """Exact ``argmin_{w in simplex} ½ wᵀQw + pᵀw`` for a symmetric PSD ``Q`` (float64, ``Q``'s device).

    ``support``: optional boolean warm start for the active set (:func:`uses_enumeration` false), e.g. the previous solution's ``w > 0``.
    """
    k = q.shape[0]
    if k == 1:
        return torch.ones(1, dtype=q.dtype, device=q.device)
    if uses_enumeration(k, q.device):
        return _simplex_enumerate(q, torch.zeros(k, dtype=q.dtype, device=q.device) if p is None else p)
    free = None if support is None else _host(support).astype(bool)
    w = simplex_active_set(_host(q), None if p is None else _host(p), free)
    if w is None:
        return _simplex_pg(q, torch.zeros(k, dtype=q.dtype, device=q.device) if p is None else p)
    return torch.from_numpy(w).to(device=q.device, dtype=q.dtype)


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
    """Projected gradient for one row, polished on its free set by an LU solve (``Q`` positive definite makes the
    system nonsingular; deterministic, sync-free). The fallback of :func:`solve_box_qp`."""
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
    polished, info = torch.linalg.solve_ex(a, (1.0 - free) * u)
    polished = torch.maximum(torch.nan_to_num(polished, nan=0.0, posinf=0.0, neginf=0.0), u)
    better = (info == 0) & (_quad(polished, q) <= _quad(v, q))
    return torch.where(better, polished, v)


def solve_box_qp(q: Tensor, u: Tensor) -> Tensor:
    """Exact ``argmin_{v ≥ u_r} ½ vᵀQv`` for each row ``u_r`` of ``u`` (shape ``(r, K)``); ``Q`` positive definite."""
    k = q.shape[0]
    if uses_enumeration(k, q.device):
        return _box_enumerate(q, u)
    v = box_active_set(_host(q), _host(u))
    if v is None:
        return torch.stack([_box_pg_one(q, row) for row in u])
    return torch.from_numpy(v).to(device=q.device, dtype=q.dtype)


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
