"""Per-language gradients of one language-balanced batch: the K×P rows every gradient combiner starts from.

Three routes give the same rows (float tolerance; ``tests/equivalence/test_grad_engine.py``):

* ``loop`` — one forward/backward per language on its rows of the batch (``torch.autograd.grad``). Works for every
  model; K passes of b rows, so the FLOPs of one joint pass of K·b rows.
* ``vmap`` — one batched pass: ``torch.func.vmap`` over the language axis of the (K, b, T) batch of
  ``grad(loss)`` through ``functional_call``. Needs exactly ``b`` rows per language (balanced batches give that) and
  a model whose forward has no data-dependent control flow under ``vmap``: the attention mask is handed over as a 4-D
  boolean mask (causal and key padding) with explicit position ids, since transformers' mask builder inspects the
  2-D mask's values (`.all()`), which ``vmap`` cannot batch.
* ``one_backward`` — one forward of the whole batch and one backward of the sum of the language losses; each
  parameter's K rows are the per-row contributions (``Xᵀ G`` of a linear layer, and so on) summed by language, read
  from module hooks (:mod:`harness.train.one_backward`). Exact because rows do not interact; models it cannot make
  exact (batch norm, gradient checkpointing, parameters used outside a module call) are refused, naming the piece.

What each costs on the CPU of this project is measured, not assumed (``results/bench/grad_engine.md``, tiny llama twin,
ratios to one joint pass in the same run): the rows alone cost 1.10-1.13× joint by ``one_backward`` and 1.12-1.23× by
``loop`` at one thread, 1.12-1.16× against 1.45-1.50× at two (the loop's K small passes parallelise badly; run two at
a time on one thread each, :mod:`harness.train.language_workers`, 1.20× against 1.28× one after another:
``results/bench/grad_engine_workers.json``); ``vmap`` is
slower than both because PyTorch has no batching rule for the CPU SDPA backward and falls back to a per-example loop.
``one_backward`` holds the activations of the whole batch, as joint SFT does (peak 1.00× joint), where ``loop`` holds
one language's (0.62×). All three keep K flat float32 gradients (K×P memory); a Gram route that avoids them
(TorchJD's ``autogram``) is a peer row in that benchmark, not a training route (it yields the whole-vector Gram only,
not the per-bucket Grams).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from harness.train.losses import target_positions

GRAD_ENGINES = ("loop", "vmap", "one_backward")

TokenLosses = Callable[[nn.Module, dict[str, Tensor]], tuple[Tensor, Tensor]]
"""``(model, inputs) -> (sum of token losses, number of target tokens)`` per example (``harness.train.losses``)."""


@dataclass(frozen=True)
class LanguageGradients:
    """The K per-language gradients of a batch: ``rows`` (K×P, float32 or wider, ``params`` order), the K token-mean
    losses (detached) and the language ids of the rows (ascending, as ``inputs["language"].unique()``)."""

    rows: Tensor
    losses: Tensor
    languages: list[int]


def _flat_into(row: Tensor, grads: Sequence[Tensor | None], params: Sequence[nn.Parameter]) -> None:
    """Write the gradients (zeros for an unused parameter) into ``row`` (P,) in ``params`` order, casting."""
    offset = 0
    for g, p in zip(grads, params, strict=True):
        piece = row[offset: offset + p.numel()]
        piece.zero_() if g is None else piece.copy_(g.reshape(-1))
        offset += p.numel()


def _row_dtype(params: Sequence[nn.Parameter]) -> torch.dtype:
    return torch.promote_types(params[0].dtype, torch.float32) if params else torch.float32


def language_loss(model: nn.Module, inputs: dict[str, Tensor], token_losses: TokenLosses) -> Tensor:
    """Token-mean loss of the rows of one language (the mean over its target tokens, as joint SFT's per language)."""
    sums, counts = token_losses(model, inputs)
    return sums.sum() / counts.sum().clamp_min(1.0)


def loop_gradients(model: nn.Module, inputs: dict[str, Tensor], params: Sequence[nn.Parameter],
                   token_losses: TokenLosses, workers: int | None = None) -> LanguageGradients:
    """One forward/backward per language present (its rows of the batch, same padded width). ``workers``: passes run
    at once (None: :func:`harness.train.language_workers.loop_workers` decides; on the CPU two single-threaded
    workers, where the rows stay bit-identical to the sequential loop at one thread)."""
    from harness.train.language_workers import loop_workers, run_side_by_side

    present = inputs["language"].unique().tolist()
    # written in place, row by row: the K×P rows are held once (a list of rows then torch.stack held them twice)
    rows = torch.empty(len(present), sum(p.numel() for p in params), dtype=_row_dtype(params),
                       device=inputs["language"].device)
    batches = [{k: v[inputs["language"] == lang] for k, v in inputs.items()} for lang in present]

    def one_language(row: Tensor, batch: dict[str, Tensor]) -> Tensor:
        loss = language_loss(model, batch, token_losses)
        _flat_into(row, torch.autograd.grad(loss, list(params), allow_unused=True), params)
        return loss.detach()

    n = loop_workers(model, rows.device, len(present)) if workers is None else workers
    losses = (run_side_by_side(n, one_language, rows, batches) if n > 1
              else [one_language(row, batch) for row, batch in zip(rows, batches, strict=True)])
    return LanguageGradients(rows, torch.stack(losses), [int(x) for x in present])


def _by_language(inputs: dict[str, Tensor]) -> tuple[list[int], dict[str, Tensor]]:
    """The batch regrouped as (K, b, T) tensors, languages ascending; refused unless every language has b rows."""
    language = inputs["language"]
    present = language.unique().tolist()
    sizes = {lang: int((language == lang).sum()) for lang in present}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"grad_engine 'vmap' needs the same number of rows per language, got {sizes}; "
                         "use grad_engine: loop")
    order = torch.cat([(language == lang).nonzero().flatten() for lang in present])
    k, b = len(present), sizes[present[0]]
    grouped = {key: inputs[key][order].reshape(k, b, *inputs[key].shape[1:])
               for key in ("input_ids", "attention_mask", "labels")}
    return [int(x) for x in present], grouped


def vmap_gradients(model: nn.Module, inputs: dict[str, Tensor], params: Sequence[nn.Parameter],
                   token_losses: TokenLosses) -> LanguageGradients:
    """All languages in one ``vmap(grad(...))`` pass over the (K, b, T) regrouped batch."""
    from torch.func import functional_call, grad, vmap

    present, grouped = _by_language(inputs)
    names = {id(p): n for n, p in model.named_parameters()}
    keys = [names[id(p)] for p in params]
    width = grouped["input_ids"].shape[-1]
    positions = torch.arange(width, device=grouped["input_ids"].device)
    dtype = next(model.parameters()).dtype
    targets = target_positions(grouped["labels"])  # computed outside the vmap: its size depends on the data

    def language_loss(weights: dict[str, Tensor], ids: Tensor, mask: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        rows = ids.shape[0]
        batch = {"input_ids": ids, "labels": labels, "position_ids": positions.expand(rows, width),
                 "attention_mask": attention_masks(model.config, mask, dtype), "target_positions": targets}
        sums, counts = token_losses(_Bound(model, weights, functional_call), batch)
        loss = sums.sum() / counts.sum().clamp_min(1.0)
        return loss, loss.detach()

    weights = {key: p.detach() for key, p in zip(keys, params, strict=True)}
    grads, losses = vmap(grad(language_loss, has_aux=True), in_dims=(None, 0, 0, 0))(
        weights, grouped["input_ids"], grouped["attention_mask"], grouped["labels"])
    dtype = _row_dtype(params)
    rows = torch.cat([grads[key].reshape(len(present), -1).to(dtype) for key in keys], dim=1)
    return LanguageGradients(rows, losses, present)


def _pattern(kind: str, width: int, window: int | None, device: torch.device) -> Tensor:
    """(T, T) boolean: causal, and for ``sliding_attention`` keys within the last ``window`` positions
    (transformers' ``sliding_window_overlay``: ``kv > q - window``)."""
    q = torch.arange(width, device=device)[:, None]
    kv = torch.arange(width, device=device)[None]
    allowed = kv <= q
    if kind == "sliding_attention" and window:
        allowed = allowed & (kv > q - window)
    return allowed


def attention_masks(config: object, key_mask: Tensor, dtype: torch.dtype) -> Tensor | dict[str, Tensor]:
    """The 4-D masks transformers would build from the 2-D ``key_mask`` (b, T), built here without inspecting values.

    Models with ``config.layer_types`` (Gemma 2, Qwen 3) take a mapping layer type -> mask; the others one mask, with
    the sliding window when ``config.sliding_window`` is set (Mistral). Eager attention adds its mask (0 / dtype's
    minimum); SDPA takes booleans.
    """
    width, device = key_mask.shape[-1], key_mask.device
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    kinds = sorted(set(types)) if types else ["sliding_attention" if window else "full_attention"]
    eager = getattr(config, "_attn_implementation", "sdpa") == "eager"
    masks = {}
    for kind in kinds:
        allowed = _pattern(kind, width, window, device)[None, None] & key_mask.bool()[:, None, None, :]
        masks[kind] = torch.where(allowed, 0.0, torch.finfo(dtype).min).to(dtype) if eager else allowed
    return masks if types else masks[kinds[0]]


class _Bound:
    """``model`` called with ``weights`` in place of its trainable parameters (``torch.func.functional_call``), so
    ``token_losses`` can call it like the module itself."""

    def __init__(self, model: nn.Module, weights: dict[str, Tensor], call: Callable) -> None:
        self.model, self.weights, self.call = model, weights, call
        self.forward = model.forward  # what the model takes (``harness.train.losses.takes_logits_to_keep``)

    def __call__(self, **kwargs: Tensor):
        return self.call(self.model, self.weights, args=(), kwargs=kwargs, strict=False)


def one_backward_language_gradients(model: nn.Module, inputs: dict[str, Tensor], params: Sequence[nn.Parameter],
                                    token_losses: TokenLosses, keep_weight_grads: bool = False) -> LanguageGradients:
    """One forward of the whole batch, one backward, rows from per-row contributions (``harness.train.one_backward``)."""
    from harness.train.one_backward import one_backward_gradients

    rows, losses, present = one_backward_gradients(model, inputs, params, token_losses, row_dtype=_row_dtype(params),
                                                   keep_weight_grads=keep_weight_grads)
    return LanguageGradients(rows, losses, present)


def language_gradients(engine: str, model: nn.Module, inputs: dict[str, Tensor], params: Sequence[nn.Parameter],
                       token_losses: TokenLosses) -> LanguageGradients:
    """The rows by ``engine`` (one of :data:`GRAD_ENGINES`)."""
    if engine == "loop":
        return loop_gradients(model, inputs, params, token_losses)
    if engine == "vmap":
        return vmap_gradients(model, inputs, params, token_losses)
    if engine == "one_backward":
        return one_backward_language_gradients(model, inputs, params, token_losses)
    raise ValueError(f"unknown grad_engine {engine!r}; known: {', '.join(GRAD_ENGINES)}")
