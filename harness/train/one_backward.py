"""Per-language gradients from ONE forward of the whole batch and ONE backward (``train.grad_engine: one_backward``).

Why it is exact. Every row of the batch belongs to exactly one language, and rows do not interact in these decoders
(no batch norm; attention mixes positions of a row, never rows). The backward here is of ``Σ_k L_k`` (L_k: the
token-mean loss of language k), so the gradient reaching any activation of a row of language k is ``∂L_k/∂(that
activation)``: the other languages' losses do not depend on it. A parameter's gradient is a sum over rows of
per-row contributions, so ``∇_W L_k`` is the sum of the contributions of the rows of language k:

* ``nn.Linear``: ``∇W_k = G_kᵀ X_k`` (X: the module's input rows of language k over all positions, G: the gradient
  of its output), bias ``Σ G_k``; LoRA's ``lora_A`` / ``lora_B`` are such modules;
* ``nn.Embedding``: ``G_k`` rows added at the token ids of language k (none at ``padding_idx``);
* any other module that owns trainable parameters and maps one batch-first tensor to one tensor (the RMSNorms of
  the tiny twins incl. Qwen 3's q/k norms and Gemma 2's ``(1 + weight)`` norm, Gemma 2's scaled embedding): its
  vector-Jacobian product with ``G_k`` w.r.t. its own parameters, recomputed from the saved input, batched over the
  languages with ``torch.func.vmap`` (one call per module, not per language);
* a parameter shared by two modules (tied embeddings: ``lm_head`` uses the embedding's weight) sums both.

The forward hooks save each module's input; a tensor hook on its output turns the output gradient into the K
contributions as soon as the backward produces it (so the logits' gradient is not kept). The backward is
``torch.autograd.grad`` w.r.t. the input embeddings' output only: autograd prunes every weight-gradient product of
the joint backward (no full weight gradient is computed), without touching ``requires_grad``. ``keep_weight_grads``
asks for them too (the variant the benchmark measures against).

A model this route cannot prove exact on is refused with :class:`UnsupportedForOneBackward` (naming the module and
pointing at ``grad_engine: loop``), never silently approximated: batch norm (mixes rows), embeddings with
``max_norm`` / ``scale_grad_by_freq`` / ``sparse``, a module with trainable parameters called with several inputs
or never called (e.g. peft's embedding adapters, whose parameters are used outside any module call), gradient
checkpointing (activations are recomputed inside the backward), an input or output modified in place. A parameter
used by code outside its own module's forward would be missed: the tiny twins and peft's linear LoRA do not do that
(the equivalence tests check every parameter against the ``loop`` route).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from harness.train.language_groups import LanguageGroups, language_groups

TokenLosses = Callable[[nn.Module, dict[str, Tensor]], tuple[Tensor, Tensor]]

_HINT = "use train.grad_engine: loop"


class UnsupportedForOneBackward(ValueError):
    """The model has a piece the one-backward route cannot make exact; the message names it and the fix."""


@dataclass
class _Call:
    """One call of a module that owns trainable parameters: its saved input and whether its gradient arrived."""

    module: nn.Module
    name: str
    x: Tensor
    x_version: int
    autocast: tuple[str, torch.dtype, bool]
    done: bool = False


@dataclass
class _Rows:
    """The K×P rows being filled (uninitialised until written: every parameter's first contribution is copied, a
    tied parameter's second one added), and where each parameter's block starts (``params`` order)."""

    rows: Tensor
    offsets: dict[int, int]
    written: set[int] = field(default_factory=set)

    def block(self, p: Tensor) -> Tensor:
        """Parameter ``p``'s (K, *p.shape) view of the rows (a write lands in the rows)."""
        start = self.offsets[id(p)]
        return self.rows[:, start: start + p.numel()].view(self.rows.shape[0], *p.shape)

    def add(self, p: Tensor, value: Tensor) -> None:
        block = self.block(p)
        block.add_(value) if id(p) in self.written else block.copy_(value)
        self.written.add(id(p))

    def zeroed(self, p: Tensor) -> Tensor:
        """The block, zeroed on the first write (for scattered accumulation)."""
        if id(p) not in self.written:
            self.block(p).zero_()
            self.written.add(id(p))
        return self.block(p)


def _owners(model: nn.Module, params: Sequence[nn.Parameter]) -> dict[str, nn.Module]:
    """Modules that own a trainable parameter directly (a tied parameter has two owners), checked for support."""
    wanted = {id(p) for p in params}
    owners = {name: m for name, m in model.named_modules(remove_duplicate=False)
              if any(id(p) in wanted for p in m.parameters(recurse=False))}
    for name, m in owners.items():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise UnsupportedForOneBackward(f"grad_engine 'one_backward': {name} ({type(m).__name__}) mixes rows "
                                            f"of different languages; {_HINT}")
        if isinstance(m, nn.Embedding) and (m.max_norm is not None or m.scale_grad_by_freq or m.sparse):
            raise UnsupportedForOneBackward(f"grad_engine 'one_backward': {name} ({type(m).__name__}) uses "
                                            f"max_norm, scale_grad_by_freq or sparse gradients; {_HINT}")
    owned = {id(p) for m in owners.values() for p in m.parameters(recurse=False)}
    if missing := [i for i, p in enumerate(params) if id(p) not in owned]:
        raise UnsupportedForOneBackward(f"grad_engine 'one_backward': {len(missing)} trainable parameters are not "
                                        f"in the model's modules; {_HINT}")
    return owners


def _linear(m: nn.Linear, x: Tensor, g: Tensor, groups: LanguageGroups, out: _Rows) -> None:
    """``∇W_k = G_kᵀ X_k`` and ``∇b_k = Σ G_k``, in the output gradient's dtype (as autograd computes them)."""
    xg = groups.rows(x.reshape(x.shape[0], -1, x.shape[-1]).to(g.dtype)).flatten(1, 2)
    gg = groups.grads(g.reshape(g.shape[0], -1, g.shape[-1])).flatten(1, 2)
    if id(m.weight) in out.offsets:
        out.add(m.weight, torch.bmm(gg.transpose(1, 2), xg))
    if m.bias is not None and id(m.bias) in out.offsets:
        out.add(m.bias, gg.sum(1))


_SCALED_EMBEDDINGS = frozenset({"Gemma2TextScaledWordEmbedding"})
"""Embeddings computing ``embedding(ids) * embed_scale.to(weight.dtype)``, read from transformers."""


def _embedding(m: nn.Embedding, ids: Tensor, g: Tensor, groups: LanguageGroups, out: _Rows) -> None:
    """Output-gradient rows of language k added at its token ids (``padding_idx`` gets none, as in autograd); a
    scaled embedding's gradient is scaled the same way."""
    if type(m).__name__ in _SCALED_EMBEDDINGS:
        g = g * m.embed_scale.to(m.weight.dtype)
    if m.padding_idx is not None:
        g = g.masked_fill((ids == m.padding_idx).unsqueeze(-1), 0)
    idg = groups.rows(ids).flatten(1)
    gg = groups.grads(g).flatten(1, -2)
    k = torch.arange(idg.shape[0], device=idg.device).unsqueeze(1).expand_as(idg)
    out.zeroed(m.weight).index_put_((k, idg), gg.to(out.rows.dtype), accumulate=True)


_WEIGHT_TIMES_NORMED = frozenset({"LlamaRMSNorm", "Qwen3RMSNorm", "MistralRMSNorm"})
"""RMSNorms computing ``weight * normed(x).to(x.dtype)`` (eps in ``variance_epsilon``), read from transformers."""
_ONE_PLUS_WEIGHT = frozenset({"Gemma2RMSNorm"})
"""RMSNorms computing ``(normed(x.float()) * (1 + weight.float())).type_as(x)`` (eps in ``eps``)."""


def _rms_norm(m: nn.Module, x: Tensor, g: Tensor, groups: LanguageGroups, out: _Rows) -> None:
    """``∇w_k = Σ G_k ∘ normed(X_k)`` (the normalised input recomputed from the saved one), in the dtype autograd
    uses for the weight's product; cheaper than :func:`_recomputed`, which stays for the norms not listed."""
    one_plus = type(m).__name__ in _ONE_PLUS_WEIGHT
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + (m.eps if one_plus else m.variance_epsilon))
    if one_plus:
        product = g.float() * normed
    else:
        dtype = torch.promote_types(m.weight.dtype, x.dtype)
        product = g.to(dtype) * normed.to(x.dtype).to(dtype)
    out.add(m.weight, groups.grads(product).flatten(1, -2).sum(1))


def _recomputed(m: nn.Module, x: Tensor, g: Tensor, groups: LanguageGroups, out: _Rows,
                autocast: tuple[str, torch.dtype, bool]) -> None:
    """Any row-wise module: the vector-Jacobian product with ``G_k`` w.r.t. its own parameters, recomputed from the
    saved input under the forward's autocast, one ``vmap`` over the languages."""
    from torch.func import functional_call, grad, vmap

    own = {n: p for n, p in m.named_parameters(recurse=False) if id(p) in out.offsets}

    def contribution(weights: dict[str, Tensor], xk: Tensor, gk: Tensor) -> Tensor:
        return (functional_call(m, weights, (xk,)) * gk).sum()

    device, dtype, enabled = autocast
    with torch.autocast(device, dtype=dtype, enabled=enabled):
        grads = vmap(grad(contribution), in_dims=(None, 0, 0))(
            {n: p.detach() for n, p in own.items()}, groups.rows(x), groups.grads(g))
    for n, p in own.items():
        out.add(p, grads[n])


def _contribute(call: _Call, g: Tensor, groups: LanguageGroups, out: _Rows) -> None:
    if call.x._version != call.x_version:
        raise UnsupportedForOneBackward(f"grad_engine 'one_backward': the input of {call.name} was modified in "
                                        f"place after the call; {_HINT}")
    m = call.module
    if type(m) is nn.Linear:
        _linear(m, call.x, g, groups, out)
    elif type(m) is nn.Embedding or type(m).__name__ in _SCALED_EMBEDDINGS:
        _embedding(m, call.x, g, groups, out)
    elif type(m).__name__ in _WEIGHT_TIMES_NORMED | _ONE_PLUS_WEIGHT and list(m._parameters) == ["weight"]:
        _rms_norm(m, call.x, g, groups, out)
    else:
        try:
            _recomputed(m, call.x, g, groups, out, call.autocast)
        except Exception as error:  # a vmap batching rule or the module's own forward: name the module
            raise UnsupportedForOneBackward(f"grad_engine 'one_backward': cannot recompute {call.name} "
                                            f"({type(m).__name__}) per language ({error}); {_HINT}") from error
    call.done = True


@dataclass
class _Recorder:
    """Forward hooks on the owners (save input, hook the output's gradient) and on the input embeddings (the
    backward's single input); inactive outside the recorded forward (recomputation calls modules again)."""

    groups: LanguageGroups
    out: _Rows
    calls: list[_Call] = field(default_factory=list)
    anchor: Tensor | None = None
    active: bool = True

    def owner_hook(self, name: str) -> Callable:
        def hook(m: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            if not self.active:
                return
            if len(args) != 1 or kwargs or not isinstance(args[0], Tensor) or not isinstance(output, Tensor):
                raise UnsupportedForOneBackward(f"grad_engine 'one_backward': {name} ({type(m).__name__}) owns "
                                                f"trainable parameters but is not called as tensor -> tensor; {_HINT}")
            device = output.device.type
            call = _Call(m, name, args[0].detach(), args[0]._version,
                         (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device)))
            self.calls.append(call)
            if output.requires_grad:
                output.register_hook(lambda g: _contribute(call, g, self.groups, self.out))
        return hook

    def anchor_hook(self, m: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
        if not self.active:
            return None
        if output.requires_grad:  # a trainable embedding: its own output is the input of the backward
            self.anchor = output
            return None
        self.anchor = output.detach().requires_grad_(True)  # frozen embedding (LoRA): the graph starts here
        return self.anchor

    def release(self) -> None:
        """Drop the tensors: the gradient hooks (held by the graph's nodes) refer to this recorder, and the anchor's
        node to its hook, a cycle through C++ that Python's collector cannot break (it leaked the K×P rows)."""
        self.anchor, self.calls = None, []


def _check_complete(recorder: _Recorder, owners: dict[str, nn.Module]) -> None:
    called = {id(c.module) for c in recorder.calls}
    if never := [n for n, m in owners.items() if id(m) not in called]:
        raise UnsupportedForOneBackward(f"grad_engine 'one_backward': {', '.join(never[:3])} own trainable "
                                        f"parameters but were never called in the forward; {_HINT}")
    if unreached := [c.name for c in recorder.calls if not c.done]:
        raise UnsupportedForOneBackward(f"grad_engine 'one_backward': the output gradient of "
                                        f"{', '.join(unreached[:3])} never arrived (not downstream of the input "
                                        f"embeddings); {_HINT}")


def _input_embeddings(model: nn.Module) -> nn.Module:
    """Where the backward starts (transformers' ``get_input_embeddings``, also on peft models)."""
    embeddings = getattr(model, "get_input_embeddings", lambda: None)()
    if not isinstance(embeddings, nn.Module):
        raise UnsupportedForOneBackward(f"grad_engine 'one_backward': {type(model).__name__} has no "
                                        f"get_input_embeddings(); {_HINT}")
    return embeddings


def one_backward_gradients(model: nn.Module, inputs: dict[str, Tensor], params: Sequence[nn.Parameter],
                           token_losses: TokenLosses, *, row_dtype: torch.dtype,
                           keep_weight_grads: bool = False) -> tuple[Tensor, Tensor, list[int]]:
    """(K×P rows in ``params`` order, the K token-mean losses, the language ids ascending) from one forward of the
    whole batch and one backward of the sum of the language losses."""
    if any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules()):
        raise UnsupportedForOneBackward("grad_engine 'one_backward' does not support gradient checkpointing "
                                        f"(activations are recomputed inside the backward); {_HINT}")
    owners = _owners(model, params)
    present, groups = language_groups(inputs["language"])
    offsets, start = {}, 0
    for p in params:
        offsets[id(p)] = start
        start += p.numel()
    out = _Rows(torch.empty(len(present), start, dtype=row_dtype, device=inputs["language"].device), offsets)
    recorder = _Recorder(groups, out)
    with ExitStack() as hooks:
        hooks.callback(recorder.release)
        for name, m in owners.items():
            hooks.callback(m.register_forward_hook(recorder.owner_hook(name), with_kwargs=True).remove)
        hooks.callback(_input_embeddings(model).register_forward_hook(recorder.anchor_hook).remove)
        sums, counts = token_losses(model, inputs)
        recorder.active = False
        if recorder.anchor is None:
            raise UnsupportedForOneBackward("grad_engine 'one_backward': the model's input embeddings were not "
                                            f"called in the forward (inputs_embeds?); {_HINT}")
        losses = torch.stack([sums[sel].sum() / counts[sel].sum().clamp_min(1.0) for sel in groups.masks])
        torch.autograd.grad(losses.sum(), [recorder.anchor, *(params if keep_weight_grads else [])],
                            allow_unused=True)
        _check_complete(recorder, owners)
    return out.rows, losses.detach(), present
