"""The shared SFT loss projects only the positions that predict a target through the output head, and equals the
loss over every position's logits: on every tiny twin (Gemma's logit soft-capping included), with right padding
and prompts masked out, for the value and the gradient."""

from __future__ import annotations

import pytest
import torch

from harness.models.loading import load_model
from harness.train.losses import takes_logits_to_keep, target_positions, token_losses


def _batch(vocab: int, rows: int = 5, width: int = 16) -> dict[str, torch.Tensor]:
    """Rows of different lengths (right padding), the loss on a response that starts at a row-dependent place."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(8, vocab, (rows, width), generator=g)
    lengths = torch.tensor([16, 12, 9, 16, 11])[:rows]
    starts = torch.tensor([6, 8, 4, 10, 7])[:rows]
    pos = torch.arange(width)[None]
    mask = (pos < lengths[:, None]).long()
    labels = torch.where(mask.bool() & (pos >= starts[:, None]), ids, torch.full_like(ids, -100))
    return {"input_ids": ids * mask, "attention_mask": mask, "labels": labels,
            "language": torch.zeros(rows, dtype=torch.long)}


def _every_position_losses(model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: all logits, shifted, cross-entropy with -100 ignored."""
    logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[:, :-1].float()
    labels = inputs["labels"][:, 1:]
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    mask = (labels != -100).float()
    return (loss * mask).sum(1), mask.sum(1)


def test_target_positions_are_the_logits_that_predict_a_label_in_any_row():
    labels = torch.tensor([[-100, -100, 5, 6, -100], [-100, -100, -100, 7, 8]])
    assert target_positions(labels).tolist() == [1, 2, 3]  # logit p predicts token p + 1
    grouped = torch.stack([labels, torch.full_like(labels, -100)])  # (K, b, T): the union over every language
    assert target_positions(grouped).tolist() == [1, 2, 3]
    assert target_positions(torch.full((2, 5), -100)).tolist() == []


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma2", "mistral"])
def test_token_losses_equal_the_loss_over_every_position(arch):
    model = load_model(arch, "tiny")[0]
    inputs = _batch(model.config.vocab_size)
    assert takes_logits_to_keep(model)
    head_rows = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, a, out: head_rows.append(a[0].shape[1]))
    sums, counts = token_losses(model, inputs)
    handle.remove()
    assert head_rows == [len(target_positions(inputs["labels"]))] and head_rows[0] < inputs["labels"].shape[1] - 1
    ref_sums, ref_counts = _every_position_losses(model, inputs)
    torch.testing.assert_close(counts, ref_counts, rtol=0, atol=0)
    torch.testing.assert_close(sums, ref_sums, rtol=1e-5, atol=1e-5)

    grads = torch.autograd.grad(sums.sum() / counts.sum(), list(model.parameters()))
    ref = torch.autograd.grad(ref_sums.sum() / ref_counts.sum(), list(model.parameters()))
    for g, r in zip(grads, ref, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_a_model_without_logits_to_keep_gets_every_position_then_the_targets():
    class Plain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.head = torch.nn.Embedding(20, 4), torch.nn.Linear(4, 20)

        def forward(self, input_ids, attention_mask):
            return type("Out", (), {"logits": self.head(self.embed(input_ids))})

    model = Plain()
    inputs = _batch(20)
    assert not takes_logits_to_keep(model)
    sums, counts = token_losses(model, inputs)
    ref_sums, ref_counts = _every_position_losses(model, inputs)
    torch.testing.assert_close((sums, counts), (ref_sums, ref_counts))


def test_no_target_gives_zero_loss_and_zero_count():
    model = load_model("llama", "tiny")[0]
    inputs = _batch(model.config.vocab_size)
    inputs["labels"] = torch.full_like(inputs["labels"], -100)
    sums, counts = token_losses(model, inputs)
    assert sums.tolist() == [0.0] * 5 and counts.tolist() == [0.0] * 5
