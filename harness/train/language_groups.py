"""The rows of a batch grouped by language: (K, b, ...) views of per-row tensors for per-language sums.

Balanced batches (b rows per language, the trainer's sampler) whose rows are already in language blocks are plain
reshapes, no copy. Otherwise the rows are gathered by index; a language with fewer rows than the largest is padded
with copies of its first row whose gradients are zeroed, so they add nothing to any sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LanguageGroups:
    """``order[k, j]``: the j-th row of the k-th language present (ascending ids); ``valid`` is None when every
    language has the same number of rows; ``contiguous``: the languages already sit in blocks of ``b`` rows in order;
    ``masks[k]``: the rows of language k (boolean, batch length)."""

    order: Tensor
    valid: Tensor | None
    contiguous: bool
    masks: list[Tensor]

    def rows(self, t: Tensor) -> Tensor:
        """(K, b, ...) of a per-row tensor (batch dimension first); padded slots repeat a real row."""
        k, b = self.order.shape
        return t.view(k, b, *t.shape[1:]) if self.contiguous else t[self.order]

    def grads(self, g: Tensor) -> Tensor:
        """(K, b, ...) of a per-row gradient, zero in padded slots."""
        grouped = self.rows(g)
        if self.valid is None:
            return grouped
        return grouped * self.valid.view(*self.valid.shape, *([1] * (grouped.dim() - 2))).to(grouped.dtype)


def language_groups(language: Tensor) -> tuple[list[int], LanguageGroups]:
    """The language ids present (ascending) and the grouping of the rows by language."""
    present = language.unique()
    masks = [language == lang for lang in present]
    members = [m.nonzero().flatten() for m in masks]
    width = max(len(i) for i in members)
    order = torch.stack([torch.cat([i, i[:1].expand(width - len(i))]) for i in members])
    valid = None
    if any(len(i) < width for i in members):
        valid = torch.arange(width, device=language.device)[None] < torch.tensor(
            [len(i) for i in members], device=language.device)[:, None]
    contiguous = valid is None and bool((order.flatten() == torch.arange(language.numel(),
                                                                          device=language.device)).all())
    return [int(x) for x in present.tolist()], LanguageGroups(order, valid, contiguous, masks)
