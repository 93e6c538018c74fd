"""The weighting protocols, the shared helpers and the registry (DESIGN.md, "Idea 1").

A **weighting** maps the K×K Gram matrix ``G`` (``G_ij = g_i·g_j``, any float dtype, any device) to K coefficients ``c``
(float64, same device) so that the update direction is ``d = Σ_k c_k g_k = combine(grads, c)``. Two calling
conventions exist:

* :class:`Weighting` (stateless): ``fn(gram, *, generator=None) -> c``. Pure; only PCGrad uses the generator.
* :class:`StatefulWeighting`: ``w(gram, losses, state, *, generator=None) -> (c, new_state)``, with ``state`` created
  by ``w.init_state(k)``. The weighting also sees the K per-language losses (``None`` for weightings that do not need
  them: ``needs_losses`` says which). The call is pure as well: it never mutates ``state`` and returns a new dict. A
  state is a small ``dict[str, Tensor]`` of float64 tensors, checkpointed with :func:`state_dict` (CPU copies, plain
  tensors that ``torch.save`` / ``torch.load(weights_only=True)`` round-trip) and restored with
  :func:`load_state_dict`, which checks it against ``init_state(k)``.

:func:`as_stateful` adapts a stateless weighting to the stateful convention (empty state, losses ignored), so a block
layer calls everything one way: ``w = stateful_weighting(name, **options); s = w.init_state(k);
c, s = w(G, losses, s, generator=gen)``.

Each weighting lives in its own module, whose docstring is its card, and registers itself with
:func:`register_weighting` on import (``stateful=True`` for the stateful ones). :func:`weighting` builds a stateless
weighting by name and refuses stateful names, so a caller of ``fn(gram)`` can never get one by mistake;
:func:`stateful_weighting` builds any of them in the stateful convention. Both check option names against the
factory's signature (option values are checked by the factory).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

WeightingState = dict[str, Tensor]
"""A stateful weighting's state: float64 tensors by name (one block's worth)."""


class Weighting(Protocol):
    """A stateless weighting: ``fn(gram, *, generator=None) -> coefficients`` (float64, shape ``(K,)``)."""

    def __call__(self, gram: Tensor, *, generator: torch.Generator | None = None) -> Tensor: ...


@runtime_checkable
class StatefulWeighting(Protocol):
    """A weighting with state: per block, ``(gram, losses, state) -> (coefficients, new state)``.

    ``needs_losses``: whether ``losses`` (K floats, the per-language losses of this step) must be given; weightings
    that do not need them accept ``None``. ``init_state(k)`` returns the state before the first step (CPU tensors;
    the call moves them to the Gram's device). The call must not mutate ``state``.
    """

    needs_losses: bool

    def init_state(self, k: int) -> WeightingState: ...

    def __call__(
        self,
        gram: Tensor,
        losses: Tensor | Sequence[float] | None,
        state: Mapping[str, Tensor],
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, WeightingState]: ...


# --------------------------------------------------------------------------------------------------------------------
# helpers shared by the weightings
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


def _trace_normalize(g: Tensor, eps: float) -> Tensor:
    tr = torch.diagonal(g).sum()
    small = (tr < eps) | (tr <= 0)
    return torch.where(small, torch.zeros_like(g), g / torch.where(small, torch.ones_like(tr), tr))


def _check_choice(option: str, value: Any, allowed: tuple[Any, ...]) -> None:
    if value not in allowed or type(value) is bool:
        raise ValueError(f"option {option!r} must be one of {list(allowed)}, got {value!r}")


def _check_number(option: str, value: Any, lo: float = 0.0, hi: float = float("inf")) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ValueError(f"option {option!r} must be a number in [{lo}, {hi}], got {value!r}")


def visit_orders(k: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Row i: the indices j != i in the order PCGrad-style methods visit them (``(K, K-1)``, int64).

    K ≤ 2 is deterministic and draws nothing; for K ≥ 3 one ``torch.rand(K, K-1)`` is drawn from ``generator`` (the
    global RNG when None) and each row is sorted by its keys.
    """
    others = torch.tensor([[j for j in range(k) if j != i] for i in range(k)], dtype=torch.int64)
    if k <= 2:
        return others.to(device)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    keys = torch.rand(k, k - 1, generator=generator, device=gen_device).cpu()
    return others.gather(1, keys.argsort(dim=1)).to(device)


FLOAT32_GRAM_CHUNK = 1 << 15
"""Columns per float32 partial Gram on CPU. Each partial Gram is exact to float32 rounding over at most this many
products (measured relative error ≤ 2e-7 of ‖g_i‖‖g_j‖ on the tiny twins' rows) and the partials are summed in float64,
so the error does not grow with P. On CPU it is 3-5× faster than converting the rows to float64 (8 × 1.34 M rows:
3 ms against 10-17 ms at one thread) and keeps a chunk in cache. On a GPU, float64 matmuls are cheap and many small
chunks would cost kernel launches, so the rows are converted to float64 in chunks of ``chunk`` as before."""


def gram(grads: Tensor, chunk: int = 1 << 22, exact: bool = False) -> Tensor:
    """Gram matrix ``grads @ grads.T`` of a ``(K, P)`` tensor in float64, over column chunks of ``chunk``: on CPU,
    rows narrower than float64 as float32 partial Grams of at most `FLOAT32_GRAM_CHUNK` columns, accumulated in
    float64; float64 rows, any rows on a GPU, and ``exact`` as float64 partial Grams. ``exact``: the distributed
    paths, whose Grams are sums of per-shard partial Grams and must equal their single-process simulation to float64
    rounding whatever the split (float32 partials would differ by ~1e-7, enough to flip bf16 roundings)."""
    if grads.ndim != 2:
        raise ValueError(f"grads must have shape (K, P), got {tuple(grads.shape)}")
    k = grads.shape[0]
    out = torch.zeros(k, k, dtype=torch.float64, device=grads.device)
    wide = exact or grads.dtype == torch.float64 or grads.device.type != "cpu"
    for block in torch.split(grads, chunk if wide else min(chunk, FLOAT32_GRAM_CHUNK), dim=1):
        b = block.to(torch.float64) if wide else block.float()
        out += (b @ b.T).to(torch.float64)
    return out


def combine(grads: Tensor, coeffs: Tensor) -> Tensor:
    """``Σ_k coeffs_k grads_k`` (shape ``(P,)``), computed in at least float32, returned in ``grads.dtype``."""
    dtype = torch.promote_types(grads.dtype, torch.float32)
    return (coeffs.to(device=grads.device, dtype=dtype) @ grads.to(dtype)).to(grads.dtype)


# --------------------------------------------------------------------------------------------------------------------
# stateful convention: adapter and (de)serialisation
# --------------------------------------------------------------------------------------------------------------------


class _StatelessAdapter:
    """A stateless :class:`Weighting` seen through the :class:`StatefulWeighting` convention (empty state)."""

    needs_losses = False

    def __init__(self, fn: Weighting) -> None:
        self.fn = fn

    def init_state(self, k: int) -> WeightingState:
        return {}

    def __call__(
        self,
        gram: Tensor,
        losses: Tensor | Sequence[float] | None,
        state: Mapping[str, Tensor],
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, WeightingState]:
        return self.fn(gram, generator=generator), dict(state)

    def __repr__(self) -> str:
        return f"as_stateful({getattr(self.fn, '__name__', self.fn)!r})"


def as_stateful(w: Weighting | StatefulWeighting) -> StatefulWeighting:
    """``w`` itself if it is stateful, else ``w`` wrapped so that ``(gram, losses, state) -> (c, state)``."""
    if isinstance(w, StatefulWeighting):
        return w
    return _StatelessAdapter(w)


def state_on(state: Mapping[str, Tensor], device: torch.device) -> WeightingState:
    """``state`` as float64 tensors on ``device`` (no copy when already there)."""
    return {key: torch.as_tensor(v).to(device=device, dtype=torch.float64) for key, v in state.items()}


def state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached CPU float64 copies of ``state``, ready for ``torch.save`` (loadable with ``weights_only=True``)."""
    return {key: torch.as_tensor(v).detach().to("cpu", torch.float64).clone() for key, v in state.items()}


def load_state_dict(w: StatefulWeighting, k: int, saved: Mapping[str, Any]) -> WeightingState:
    """Restore a state saved by :func:`state_dict` (tensors, nested lists or floats), checked against
    ``w.init_state(k)``: same keys, same shapes. Raises ValueError naming the mismatch."""
    template = as_stateful(w).init_state(k)
    if set(saved) != set(template):
        raise ValueError(f"weighting state keys {sorted(saved)} do not match the expected {sorted(template)}")
    out = {}
    for key, ref in template.items():
        value = torch.as_tensor(saved[key], dtype=torch.float64).detach().cpu().clone()
        if value.shape != ref.shape:
            raise ValueError(f"weighting state {key!r} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}")
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------------------------

WEIGHTINGS: dict[str, Callable[..., Weighting]] = {}
"""Stateless weightings: name → factory (options as keyword arguments)."""

STATEFUL_WEIGHTINGS: dict[str, Callable[..., StatefulWeighting]] = {}
"""Stateful weightings: name → factory."""


def register_weighting(name: str, factory: Callable[..., Any], *, stateful: bool = False) -> None:
    """Register ``factory`` under ``name`` (called once by each weighting module, at import)."""
    table, other = (STATEFUL_WEIGHTINGS, WEIGHTINGS) if stateful else (WEIGHTINGS, STATEFUL_WEIGHTINGS)
    if name in other or table.get(name, factory) is not factory:
        raise ValueError(f"weighting {name!r} is already registered")
    table[name] = factory


def available_weightings(*, include_stateful: bool = False) -> list[str]:
    """Names accepted by :func:`weighting` (stateless, called as ``fn(gram)``); with ``include_stateful``, the names
    accepted by :func:`stateful_weighting` (all of them)."""
    names = set(WEIGHTINGS) | (set(STATEFUL_WEIGHTINGS) if include_stateful else set())
    return sorted(names)


def _build(name: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> Any:
    allowed = list(inspect.signature(factory).parameters)
    for key in options:
        if key not in allowed:
            raise ValueError(f"unknown option {key!r} for weighting {name!r}; allowed options: {allowed}")
    return factory(**options)


def weighting(name: str, **options: Any) -> Weighting:
    """Build the stateless weighting ``name`` with ``options`` (see its module's docstring). Raises ValueError on
    bad input, and for a stateful name (build those with :func:`stateful_weighting`)."""
    if name in STATEFUL_WEIGHTINGS:
        raise ValueError(f"weighting {name!r} is stateful: build it with stateful_weighting({name!r}) and call it "
                         "as w(gram, losses, state)")
    if name not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {name!r}; allowed: {available_weightings(include_stateful=True)}")
    return _build(name, WEIGHTINGS[name], options)


def stateful_weighting(name: str, **options: Any) -> StatefulWeighting:
    """Build any registered weighting in the stateful convention: a stateful one as is, a stateless one through
    :func:`as_stateful`. This is how a block layer calls every weighting one way."""
    if name in STATEFUL_WEIGHTINGS:
        return _build(name, STATEFUL_WEIGHTINGS[name], options)
    return as_stateful(weighting(name, **options))
