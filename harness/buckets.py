"""Gradient buckets identical to PyTorch DDP's (DESIGN.md, "Idea 2").

What DDP does (torch 2.13, ``torch/nn/parallel/distributed.py`` and ``reducer.cpp``), and what this module reproduces:

* Parameters: ``[p for _, p in module.named_parameters() if p.requires_grad]`` (DDP walks ``named_modules()`` with
  ``recurse=False`` and de-duplicates shared tensors — the same order and names). Frozen parameters (LoRA bases) are not
  bucketed.
* Caps: ``bucket_cap_mb`` MiB → ``int(cap * 2**20)`` bytes. If ``bucket_cap_mb`` is passed to DDP, the first bucket has the
  same cap; only with DDP's default (``bucket_cap_mb=None``: 25 MiB) is the first bucket capped at
  ``dist._DEFAULT_FIRST_BUCKET_BYTES`` = 1 MiB. ``bucket_plan(model, None)`` reproduces that default.
* Assignment (``dist._compute_bucket_assignment_by_size``): walk the tensors in order, add each to the open bucket of its
  (dtype, device); the bucket is closed when its size becomes ``>=`` the current limit (the tensor that crosses the cap
  stays in it; a tensor larger than the cap therefore closes the bucket it lands in — it is alone only if that bucket was
  empty). Limits are ``[first_cap, cap]``: the first closed bucket uses ``first_cap``, all later ones ``cap``.
* Iteration 0: with the default ``find_unused_parameters=False`` (and no static graph) DDP puts *all* parameters in ONE
  bucket (limit ``sys.maxsize``). After the first backward it *rebuilds* the buckets from the observed gradient-ready
  order with limits ``[first_cap, cap]``; the rebuilt buckets are what a communication hook sees from iteration 1 on.
  :func:`bucket_plan` returns the rebuilt buckets — the ones that matter for bucket-level MOO. With
  ``find_unused_parameters=True`` DDP never rebuilds and keeps its initial buckets, given by :func:`initial_bucket_plan`.
* Gradient-ready order: by default the reverse of the parameter order, which equals autograd's order for plain
  sequential stacks (``nn.Sequential`` of Linear layers). It does NOT for HF decoders: ``LlamaDecoderLayer`` registers
  ``input_layernorm``/``post_attention_layernorm`` after ``self_attn``/``mlp``, but their gradients are ready after the
  MLP / attention weights, so reverse order gives different buckets than DDP's rebuild. For such models pass
  ``ready_order=closure`` (one forward+backward; the order is recorded by :func:`grad_ready_order`) — verified
  bucket-for-bucket against DDP in ``tests/unit/test_buckets.py``. :func:`ddp_bucket_plan` does it for an HF causal LM
  with a fixed probe batch (what the single-process combiners use).
* Not modelled: ``bucket_cap_mb_list`` and the ``DDP_SET_LAST_BUCKET_CAP`` environment switch.

Bucket indices are DDP's ``bucket.index()``; names inside a bucket are in ``bucket.parameters()`` order.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

MB = 1024 * 1024
DEFAULT_BUCKET_CAP_MB = 25.0
DEFAULT_FIRST_BUCKET_BYTES = 1024 * 1024  # == torch.distributed._DEFAULT_FIRST_BUCKET_BYTES


@dataclass(frozen=True)
class Bucket:
    """One DDP bucket: its index, the parameter names in bucket order, total elements and bytes."""

    index: int
    names: tuple[str, ...]
    numel: int
    nbytes: int


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` pairs in DDP's order: registration order, ``requires_grad`` only, shared tensors once."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def bucket_caps(bucket_cap_mb: float | None, first_bucket_cap_mb: float | None = None) -> tuple[int, int]:
    """``(first_bucket_bytes, bucket_bytes)`` exactly as DDP derives them from ``bucket_cap_mb``."""
    if bucket_cap_mb is not None and bucket_cap_mb <= 0:
        raise ValueError(f"bucket_cap_mb must be positive, got {bucket_cap_mb}")
    cap = int((DEFAULT_BUCKET_CAP_MB if bucket_cap_mb is None else bucket_cap_mb) * MB)
    if first_bucket_cap_mb is not None:
        return int(first_bucket_cap_mb * MB), cap
    return (DEFAULT_FIRST_BUCKET_BYTES if bucket_cap_mb is None else cap), cap


def assign_by_size(
    tensors: Sequence[Tensor],
    limits: Sequence[int],
    order: Sequence[int] | None = None,
) -> list[list[int]]:
    """Pure-Python twin of ``dist._compute_bucket_assignment_by_size`` (dense tensors).

    ``tensors`` are in parameter order; ``order`` is the visiting order (indices into ``tensors``). Without ``order``
    the buckets are sorted by their smallest index, as in torch.
    """
    visit = list(range(len(tensors))) if order is None else list(order)
    open_: dict[tuple[torch.dtype, torch.device], list] = {}  # key -> [indices, size, limit position]
    result: list[list[int]] = []
    for idx in visit:
        t = tensors[idx]
        key = (t.dtype, t.device)
        acc = open_.setdefault(key, [[], 0, 0])
        acc[0].append(idx)
        acc[1] += t.numel() * t.element_size()
        if acc[1] >= limits[acc[2]]:
            result.append(acc[0])
            open_[key] = [[], 0, min(acc[2] + 1, len(limits) - 1)]
    result.extend(acc[0] for acc in open_.values() if acc[0])
    if order is None:
        result.sort(key=min)
    return result


def _assign(tensors: list[Tensor], limits: list[int], order: list[int] | None) -> list[list[int]]:
    import torch.distributed as dist

    if not (dist.is_available() and hasattr(dist, "_compute_bucket_assignment_by_size")):
        return assign_by_size(tensors, limits, order)
    if order is None:
        indices, _ = dist._compute_bucket_assignment_by_size(tensors, limits, [False] * len(tensors))
    else:
        visited = [tensors[i] for i in order]
        indices, _ = dist._compute_bucket_assignment_by_size(visited, limits, [False] * len(tensors), order)
    return [list(b) for b in indices]


def _make_plan(named: list[tuple[str, nn.Parameter]], groups: list[list[int]]) -> list[Bucket]:
    plan = []
    for i, group in enumerate(groups):
        ps = [named[j][1] for j in group]
        plan.append(
            Bucket(
                index=i,
                names=tuple(named[j][0] for j in group),
                numel=sum(p.numel() for p in ps),
                nbytes=sum(p.numel() * p.element_size() for p in ps),
            )
        )
    return plan


def bucket_plan(
    model: nn.Module,
    bucket_cap_mb: float | None = DEFAULT_BUCKET_CAP_MB,
    first_bucket_cap_mb: float | None = None,
    *,
    ready_order: Sequence[str] | Callable[[], object] | None = None,
) -> list[Bucket]:
    """DDP's buckets after its rebuild (what comm hooks see from iteration 1 on) for ``DDP(model, bucket_cap_mb=...)``.

    ``bucket_cap_mb=None`` mimics DDP's default (25 MiB, first bucket 1 MiB); ``first_bucket_cap_mb`` overrides the
    first cap. ``ready_order`` is the gradient-ready order of the trainable parameter names, or a closure running one
    forward/backward from which it is recorded (:func:`grad_ready_order`); default: reverse parameter order, which is
    right for plain sequential stacks but NOT for HF decoders (their norms are registered after attention/MLP).
    """
    named = trainable_parameters(model)
    if callable(ready_order):
        ready_order = grad_ready_order(model, ready_order)
    first, cap = bucket_caps(bucket_cap_mb, first_bucket_cap_mb)
    if ready_order is None:
        order = list(range(len(named)))[::-1]
    else:
        position = {n: i for i, (n, _) in enumerate(named)}
        missing = set(position) - set(ready_order)
        if missing or len(ready_order) != len(position):
            raise ValueError(f"ready_order must list every trainable parameter once; missing {sorted(missing)[:5]}")
        order = [position[n] for n in ready_order]
    if not named:
        return []
    return _make_plan(named, _assign([p for _, p in named], [first, cap], order))


def initial_bucket_plan(
    model: nn.Module,
    bucket_cap_mb: float | None = DEFAULT_BUCKET_CAP_MB,
    first_bucket_cap_mb: float | None = None,
    *,
    find_unused_parameters: bool = False,
    static_graph: bool = False,
) -> list[Bucket]:
    """DDP's buckets before the rebuild (iteration 0; forever when ``find_unused_parameters=True``)."""
    named = trainable_parameters(model)
    if not named:
        return []
    first, cap = bucket_caps(bucket_cap_mb, first_bucket_cap_mb)
    if static_graph or not find_unused_parameters:
        limits = [sys.maxsize]
    elif first < cap:
        limits = [first, cap]
    else:
        limits = [cap]
    groups = _assign([p for _, p in named], limits, None)
    return _make_plan(named, groups[::-1])


def grad_ready_order(model: nn.Module, closure: Callable[[], object]) -> list[str]:
    """Names of trainable parameters in the order their gradients are accumulated while ``closure()`` runs backward.

    Existing ``.grad`` values are saved and restored, so the probe leaves the model as it found it.
    """
    seen: list[str] = []
    named = trainable_parameters(model)
    saved = [p.grad for _, p in named]
    for _, p in named:
        p.grad = None
    handles = [p.register_post_accumulate_grad_hook(lambda _p, name=name: seen.append(name)) for name, p in named]
    try:
        closure()
    finally:
        for h in handles:
            h.remove()
        for (_, p), g in zip(named, saved, strict=True):
            p.grad = g
    return list(dict.fromkeys(seen))


def ddp_bucket_plan(model: nn.Module, bucket_cap_mb: float | None) -> list[Bucket]:
    """DDP's rebuilt buckets for ``DDP(model, bucket_cap_mb=...)``, the ready order recorded by a probe backward.

    The probe runs one forward/backward of a causal LM on 2×8 fixed token ids (its gradients are discarded and the
    RNG state restored). Models that are not HF causal LMs (no ``get_input_embeddings``) use the reverse parameter
    order, which is DDP's for plain sequential stacks.
    """
    if not hasattr(model, "get_input_embeddings"):
        return bucket_plan(model, bucket_cap_mb)
    named = trainable_parameters(model)
    if not named:
        return []
    device = named[0][1].device
    vocab = model.get_input_embeddings().num_embeddings

    def probe() -> None:
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            ids = torch.randint(0, vocab, (2, 8), generator=torch.Generator().manual_seed(0)).to(device)
            model(input_ids=ids, labels=ids).loss.backward()

    order = grad_ready_order(model, probe)
    # parameters the probe did not reach (unused by the forward) are ready last, in reverse registration order
    reached = set(order)
    order += [n for n, _ in reversed(named) if n not in reached]
    return bucket_plan(model, bucket_cap_mb, ready_order=order)


def bucket_slices(plan: Sequence[Bucket], shapes: Mapping[str, torch.Size]) -> dict[str, tuple[int, slice]]:
    """``name -> (bucket index, slice of the flat bucket)``; flat buckets are concatenations in ``names`` order."""
    out: dict[str, tuple[int, slice]] = {}
    for b in plan:
        offset = 0
        for name in b.names:
            n = int(torch.Size(shapes[name]).numel())
            out[name] = (b.index, slice(offset, offset + n))
            offset += n
    return out


def flatten_by_plan(grads_by_name: Mapping[str, Tensor], plan: Sequence[Bucket], batch_dims: int = 0) -> list[Tensor]:
    """One flat tensor per bucket: ``cat`` of the named tensors in bucket order.

    With ``batch_dims=b`` each tensor has ``b`` leading dims (e.g. ``(K, *param.shape)`` for K languages) and each bucket
    becomes ``(*batch, bucket.numel)``.
    """
    out = []
    for b in plan:
        parts = [grads_by_name[n] for n in b.names]
        parts = [t.reshape(*t.shape[:batch_dims], -1) for t in parts]
        out.append(torch.cat(parts, dim=-1))
    return out


def unflatten_by_plan(
    flat: Sequence[Tensor], plan: Sequence[Bucket], shapes: Mapping[str, torch.Size]
) -> dict[str, Tensor]:
    """Inverse of :func:`flatten_by_plan` (views into ``flat``; leading batch dims are kept)."""
    out: dict[str, Tensor] = {}
    for b, t in zip(plan, flat, strict=True):
        sizes = [int(torch.Size(shapes[n]).numel()) for n in b.names]
        for name, piece in zip(b.names, torch.split(t, sizes, dim=-1), strict=True):
            out[name] = piece.reshape(*t.shape[:-1], *shapes[name])
    return out


def write_flat_grads(params: Sequence[nn.Parameter], flat: torch.Tensor) -> None:
    """Overwrite (not accumulate) ``.grad`` of ``params`` with consecutive pieces of ``flat``, cast to each dtype."""
    offset = 0
    for p in params:
        n = p.numel()
        piece = flat[offset: offset + n].view_as(p).to(p.dtype)
        if p.grad is None:
            p.grad = piece.clone()
        else:
            p.grad.copy_(piece)
        offset += n
