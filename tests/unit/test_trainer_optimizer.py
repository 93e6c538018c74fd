"""The Trainer path's optimizer takes torch's multi-tensor (foreach) step wherever torch would pick the per-tensor
loop (CPU): the same bits, fewer Python round trips per step."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainingArguments

from harness.train.sft import PolymooTrainer


def _trainer(tmp_path, optim: str) -> PolymooTrainer:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 3))
    args = TrainingArguments(output_dir=str(tmp_path), optim=optim, learning_rate=1e-2, weight_decay=0.1,
                             use_cpu=True, report_to=[], max_steps=1)
    return PolymooTrainer(model=model, args=args, languages=["en"], per_language=1, data_seed=0)


@pytest.mark.parametrize("optim", ["adamw_torch", "sgd"])
def test_every_group_steps_with_the_multi_tensor_kernels(tmp_path, optim):
    optimizer = _trainer(tmp_path, optim).create_optimizer()
    assert [g["foreach"] for g in optimizer.param_groups] == [True] * len(optimizer.param_groups)


def test_the_multi_tensor_adamw_step_gives_the_per_tensor_bits():
    torch.manual_seed(0)
    start = [torch.randn(5, 7), torch.randn(7), torch.randn(3, 5)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(4)]
    ends = []
    for foreach in (False, True):
        params = [p.clone().requires_grad_() for p in start]
        opt = torch.optim.AdamW([{"params": params[:2], "weight_decay": 0.1}, {"params": params[2:],
                                 "weight_decay": 0.0}], lr=1e-2, foreach=foreach)
        for step in grads:
            for p, g in zip(params, step, strict=True):
                p.grad = g.clone()
            opt.step()
        ends.append(params)
    assert all(torch.equal(a, b) for a, b in zip(*ends, strict=True))
