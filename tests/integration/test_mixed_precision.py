"""Mixed precision keeps the updates: with `train.dtype: bfloat16` the weights and AdamW state stay fp32 (master
weights) and only the compute is bf16, so at CONGRAD's tiny learning rates the parameters move as far as in fp32
(within 5 % after 20 steps at lr 1e-6). Pure bf16 weights (`master_weights: false`) round most updates away."""

from __future__ import annotations

import math

import pytest
import torch

from tests.methods._tiny import train

pytestmark = pytest.mark.slow


def _movement(trained) -> float:
    after = trained.params()
    return math.sqrt(sum(float((after[n].float() - trained.initial[n].float()).pow(2).sum()) for n in after))


@pytest.mark.parametrize("method", ["joint_sft", "mgda"])
def test_bf16_mixed_precision_moves_like_fp32(tmp_path, method):
    base = {"steps": 20, "lr": 1e-6, "schedule": "constant", "warmup_steps": 0, "save_model": False}
    runs = {name: train(method, {}, tmp_path=tmp_path / name, overrides={"train": {**base, **extra}})
            for name, extra in {"fp32": {"dtype": "float32"}, "mixed": {"dtype": "bfloat16"},
                                "pure": {"dtype": "bfloat16", "master_weights": False}}.items()}
    assert all(str(p.dtype) == "torch.float32" for p in runs["mixed"].model.parameters())  # fp32 master weights
    assert all(str(p.dtype) == "torch.bfloat16" for p in runs["pure"].model.parameters())
    mixed, fp32 = runs["mixed"].params(), runs["fp32"].params()
    assert max(float((mixed[n] - fp32[n]).abs().max()) for n in mixed) > 0  # the compute did run in bf16
    ref = _movement(runs["fp32"])
    assert ref > 0
    assert abs(_movement(runs["mixed"]) / ref - 1) < 0.05
    assert _movement(runs["pure"]) / ref < 0.5  # what master weights prevent
    print(f"{method}: movement / fp32 = mixed {_movement(runs['mixed']) / ref:.4f}, pure {_movement(runs['pure']) / ref:.4f}")


def test_lora_mixed_precision_keeps_the_frozen_base_in_bf16(tmp_path):
    """LoRA under mixed precision: the frozen base loads in bf16 (a float32 copy of it would only cost memory), the
    trainable adapters are float32 master weights, and they move as far as in an all-float32 LoRA run."""
    lora = {"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    base = {"steps": 20, "lr": 1e-5, "schedule": "constant", "warmup_steps": 0, "save_model": False, "lora": lora}
    runs = {name: train("joint_sft", {}, tmp_path=tmp_path / name, overrides={"train": {**base, "dtype": dtype}})
            for name, dtype in {"fp32": "float32", "mixed": "bfloat16"}.items()}
    params = dict(runs["mixed"].model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert trainable and all(params[n].dtype == torch.float32 for n in trainable)
    assert all(p.dtype == torch.bfloat16 for n, p in params.items() if n not in trainable)
    assert all(p.dtype == torch.float32 for p in runs["fp32"].model.parameters())

    def adapter_movement(trained) -> float:
        after = trained.params()
        return math.sqrt(sum(float((after[n].float() - trained.initial[n].float()).pow(2).sum()) for n in trainable))

    ref = adapter_movement(runs["fp32"])
    assert ref > 0
    assert abs(adapter_movement(runs["mixed"]) / ref - 1) < 0.05
