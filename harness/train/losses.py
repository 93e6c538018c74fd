"""The SFT loss every path shares: per-example sums of token cross-entropies over the response (labels -100 are
ignored), computed only where a position predicts a target."""

from __future__ import annotations

import functools
import inspect

import torch

NOT_MODEL_INPUTS = ("labels", "language", "target_positions")


def target_positions(labels: torch.Tensor) -> torch.Tensor:
    """The positions whose logits predict a target in some row: p where any ``labels[..., p + 1]`` is not -100
    (1-D, ascending). ``labels`` may carry leading batch dimensions: (b, T) or (K, b, T)."""
    has_target = (labels[..., 1:] != -100).reshape(-1, labels.shape[-1] - 1).any(0)
    return has_target.nonzero().flatten()


def takes_logits_to_keep(model: object) -> bool:
    """Whether ``model``'s forward takes ``logits_to_keep`` (every causal LM of transformers; peft passes it on)."""
    forward = getattr(model, "forward", model)
    return _signature_takes_logits_to_keep(getattr(forward, "__func__", forward))


@functools.lru_cache(maxsize=64)
def _signature_takes_logits_to_keep(forward: object) -> bool:
    """Per forward function, once: the signature is read on every training step otherwise."""
    params = inspect.signature(forward).parameters
    return "logits_to_keep" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def token_losses(model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of token losses, number of target tokens) per example.

    Only the positions that predict a target go through the output head (transformers' ``logits_to_keep``): the
    vocabulary projection and its cross-entropy are most of a small model's step, and a prompt's positions have no
    target. ``inputs["target_positions"]``, when given, names them (a ``vmap`` cannot compute a data-dependent set).
    """
    batch = {k: v for k, v in inputs.items() if k not in NOT_MODEL_INPUTS}
    positions = inputs.get("target_positions")
    if positions is None:
        positions = target_positions(inputs["labels"])
    if takes_logits_to_keep(model):
        logits = model(**batch, logits_to_keep=positions).logits.float()
    else:  # a model of its own (tests' toys): every position's logits, then the targets'
        logits = model(**batch).logits[:, positions].float()
    labels = inputs["labels"][:, 1:][:, positions]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             ignore_index=-100, reduction="none").view_as(labels)
    mask = (labels != -100).float()
    return (loss * mask).sum(1), mask.sum(1)
