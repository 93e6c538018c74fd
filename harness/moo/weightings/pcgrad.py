"""``pcgrad``: PCGrad (Yu, Kumar, Gupta, Levine, Hausman, Finn, NeurIPS 2020, "Gradient Surgery for Multi-Task
Learning"), tracked as coefficients on the Gram.

For each i, ``g_i' = g_i``; walk the other j in a random order and, when ``g_i'·g_j < 0``, subtract
``(g_i'·g_j / ‖g_j‖²) g_j`` (projection on the *original* g_j, Algorithm 1). With ``g_i' = Σ_k a_ik g_k`` every dot
product is a row of ``a G``, so the K×K Gram suffices.

Options:

* ``reduction="sum"`` (default; the original paper and code) or ``"mean"`` (some ports).

Order: K=2 is deterministic; for K≥3 the orders come from :func:`~harness.moo.weightings.base.visit_orders` with the
``generator`` passed to the call (the global RNG when None) — seed it with (seed, step, bucket), same on every rank.
"""

from __future__ import annotations

import torch
from torch import Tensor

from harness.moo.weightings.base import (
    Weighting,
    _check_choice,
    _prepare,
    _safe_div,
    register_weighting,
    visit_orders,
)


def _pcgrad_factory(reduction: str = "sum") -> Weighting:
    _check_choice("reduction", reduction, ("sum", "mean"))

    def pcgrad(gram: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        g = _prepare(gram)
        k = g.shape[0]
        orders = visit_orders(k, generator, g.device)
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


register_weighting("pcgrad", _pcgrad_factory)
