"""``famo``: FAMO (Liu, Liu, Stone, Liu, NeurIPS 2023, "FAMO: Fast Adaptive Multitask Optimization", arXiv 2306.03792)
— stateful and loss-based: it needs the K per-language losses and ignores the Gram apart from K and the device.

State (per block): the task logits ``w`` (K, zero at the start), the Adam moments of ``w`` (``exp_avg``,
``exp_avg_sq``, ``step``) and the previous step's losses (``prev_losses``, ``has_prev``). Each call, with losses
``L`` (``D = L + 1e-8``, ``min_losses = 0``):

1. if there is a previous step: ``δ = log D_prev − log D`` (how much each log-loss fell) and one Adam step on ``w``
   with gradient ``J_softmax(w)ᵀ δ = z ⊙ (δ − zᵀδ)`` plus ``γ w`` (torch Adam's coupled weight decay), learning rate
   ``lr``, betas (0.9, 0.999), eps 1e-8;
2. ``z = softmax(w)``, coefficients ``c_i = (z_i / D_i) / Σ_j (z_j / D_j)`` — the gradient of the official
   ``Σ_i (z_i / C) log D_i`` with the detached normaliser ``C = Σ_j z_j / D_j``; they sum to 1;
3. ``prev_losses ← L``.

Taken from where:

* the weighted loss, ``D``, the 1e-8, the detached normaliser and the logit update (softmax vector-Jacobian product of
  δ, then ``torch.optim.Adam(lr=w_lr, weight_decay=gamma)``): the official code, github.com/Cranial-XIX/FAMO
  ``famo.py`` (``get_weighted_loss`` / ``update``), reproduced by torchjd 0.18's ``torchjd.scalarization.FAMO``, which
  the tests cross-check to 1e-12;
* ``lr=0.025``: the paper and the official code (``w_lr``, ``--method-params-lr``);
* ``weight_decay=1e-3`` (γ): the paper's Algorithm 2, LibMTL and torchjd; the official code's defaults vary (0.01 in
  ``famo.py`` and its CLI, 1e-5 in ``methods/weight_methods.py``; 0.001 in its QM9 script).

Deviation (the one thing a Gram-level weighting cannot do): the official loop recomputes the losses on the *same*
batch after the model step and updates the logits with them; here the losses of the next call (the next batch, after
the step) play that role, so no extra forward pass is needed. The official ``max_norm`` gradient clipping belongs to
the harness's optimizer, not to the weighting. A call whose losses are non-finite or not above ``−1e-8`` leaves the
state unchanged and returns ``z`` (the current task weights), so one bad step cannot poison the logits.

Losses are required: ``losses=None`` raises ValueError naming famo. Every block sees the same losses, so per-block
states evolve identically (kept per block only for the uniform calling convention).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from harness.moo.weightings.base import WeightingState, _check_number, _prepare, register_weighting, state_on

EPS = 1e-8
"""Added to the losses before the log and the division (official code)."""

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class FAMO:
    """FAMO as a :class:`~harness.moo.weightings.base.StatefulWeighting` (see the module docstring)."""

    needs_losses = True

    def __init__(self, lr: float = 0.025, weight_decay: float = 1e-3) -> None:
        _check_number("lr", lr)
        _check_number("weight_decay", weight_decay)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)

    def __repr__(self) -> str:
        return f"FAMO(lr={self.lr!r}, weight_decay={self.weight_decay!r})"

    def init_state(self, k: int) -> WeightingState:
        z = torch.zeros(k, dtype=torch.float64)
        zero = torch.zeros((), dtype=torch.float64)
        return {"logits": z, "exp_avg": z.clone(), "exp_avg_sq": z.clone(), "step": zero,
                "prev_losses": z.clone(), "has_prev": zero.clone()}

    def _adam(self, s: WeightingState, grad: Tensor) -> WeightingState:
        """One ``torch.optim.Adam`` step (single-tensor path, no amsgrad) on the logits, written out."""
        b1, b2 = ADAM_BETAS
        w = s["logits"]
        grad = grad + self.weight_decay * w
        step = s["step"] + 1.0
        exp_avg = torch.lerp(s["exp_avg"], grad, 1.0 - b1)
        exp_avg_sq = s["exp_avg_sq"] * b2 + (1.0 - b2) * grad * grad
        step_size = self.lr / (1.0 - b1**step)
        denom = exp_avg_sq.sqrt() / torch.sqrt(1.0 - b2**step) + ADAM_EPS
        return {**s, "logits": w - step_size * exp_avg / denom, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq,
                "step": step}

    def __call__(
        self,
        gram: Tensor,
        losses: Tensor | Sequence[float] | None,
        state: Mapping[str, Tensor],
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, WeightingState]:
        if losses is None:
            raise ValueError("weighting 'famo' needs the per-language losses; got losses=None")
        k = _prepare(gram).shape[0]
        s = state_on(state, gram.device)
        loss = torch.as_tensor(losses).detach().to(device=gram.device, dtype=torch.float64).reshape(-1)
        if loss.shape != (k,) or s["logits"].shape != (k,):
            raise ValueError(f"famo: expected {k} losses and a state for K={k}, got {tuple(loss.shape)} losses and "
                             f"logits of shape {tuple(s['logits'].shape)}")
        d = loss + EPS
        ok = torch.isfinite(d).all() & (d > 0).all()
        d_safe = torch.where(ok, d, torch.ones_like(d))
        z_prev = torch.softmax(s["logits"], 0)
        delta = torch.log(s["prev_losses"] + EPS) - torch.log(d_safe)
        stepped = self._adam(s, z_prev * (delta - z_prev @ delta))
        update = ok & (s["has_prev"] > 0)
        new = {key: torch.where(update, stepped[key], s[key]) for key in s}
        z = torch.softmax(new["logits"], 0)
        coeffs = torch.where(ok, (z / d_safe) / (z / d_safe).sum(), z)
        new["prev_losses"] = torch.where(ok, loss, s["prev_losses"])
        new["has_prev"] = torch.where(ok, torch.ones_like(s["has_prev"]), s["has_prev"])
        return coeffs, new


def _famo_factory(lr: float = 0.025, weight_decay: float = 1e-3) -> FAMO:
    return FAMO(lr=lr, weight_decay=weight_decay)


register_weighting("famo", _famo_factory, stateful=True)
