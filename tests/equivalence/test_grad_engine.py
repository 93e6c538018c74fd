"""The per-language gradient routes agree: `vmap` (one batched pass) = `loop` (a pass per language) on every tiny twin,
with right padding, prompt tokens masked out of the loss, and LoRA; the `vmap` route refuses unbalanced batches."""

from __future__ import annotations

import pytest
import torch

from harness.models.loading import load_model
from harness.train.grad_engine import language_gradients
from harness.train.sft import token_losses, trainable_parameters


def _batch(vocab: int, k: int = 3, b: int = 2, width: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    """k languages × b rows, shuffled; rows of different lengths (right padding), loss on the second half only."""
    g = torch.Generator().manual_seed(seed)
    n = k * b
    ids = torch.randint(8, vocab, (n, width), generator=g)
    lengths = torch.randint(width // 2, width + 1, (n,), generator=g)
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    labels = torch.where(mask.bool() & (torch.arange(width)[None] >= width // 3), ids, torch.full_like(ids, -100))
    language = torch.arange(k).repeat_interleave(b)[torch.randperm(n, generator=g)]
    return {"input_ids": ids * mask, "attention_mask": mask, "labels": labels, "language": language}


def _rows(engine: str, model, inputs):
    params = [p for _, p in trainable_parameters(model)]
    return language_gradients(engine, model, inputs, params, token_losses)


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma2", "mistral"])
def test_vmap_rows_equal_loop_rows(arch):
    model = load_model(arch, "tiny")[0]
    model.train()
    inputs = _batch(model.config.vocab_size)
    loop, vmapped = _rows("loop", model, inputs), _rows("vmap", model, inputs)
    assert loop.languages == vmapped.languages == [0, 1, 2]
    torch.testing.assert_close(vmapped.losses, loop.losses, rtol=1e-5, atol=1e-6)
    scale = loop.rows.abs().max()
    assert float((vmapped.rows - loop.rows).abs().max() / scale) < 1e-4
    assert float(loop.rows.norm(dim=1).min()) > 0  # every language reaches the parameters


def test_vmap_rows_equal_loop_rows_with_lora():
    from harness.config import LoraConfig

    model = load_model("llama", "tiny", lora=LoraConfig(rank=4, alpha=8))[0]
    model.train()
    inputs = _batch(model.config.vocab_size, seed=1)
    loop, vmapped = _rows("loop", model, inputs), _rows("vmap", model, inputs)
    assert loop.rows.shape[1] == sum(p.numel() for _, p in trainable_parameters(model))
    assert float((vmapped.rows - loop.rows).abs().max() / loop.rows.abs().max()) < 1e-4


def test_vmap_refuses_unbalanced_batches_and_unknown_engines():
    model = load_model("llama", "tiny")[0]
    inputs = _batch(model.config.vocab_size)
    inputs["language"] = torch.tensor([0, 0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="same number of rows per language"):
        _rows("vmap", model, inputs)
    with pytest.raises(ValueError, match="unknown grad_engine 'jit'"):
        _rows("jit", model, inputs)


def test_vmap_keeps_gemma2_sliding_window():
    """Rows longer than Gemma 2's sliding window: its sliding layers must see the windowed mask, as in the loop."""
    model = load_model("gemma2", "tiny")[0]
    model.train()
    window = model.config.sliding_window
    inputs = _batch(model.config.vocab_size, k=2, b=1, width=window + 14, seed=2)
    inputs["attention_mask"][:] = 1
    loop, vmapped = _rows("loop", model, inputs), _rows("vmap", model, inputs)
    assert float((vmapped.rows - loop.rows).abs().max() / loop.rows.abs().max()) < 1e-4


def test_bench_routes_write_the_same_mgda_direction():
    """The benchmark's routes measure the same step: full MGDA through the loop rows, the vmap rows and TorchJD's
    Gramian engine (no K×P rows) write the same `.grad`; joint SFT writes the mean of the language gradients."""
    from harness.train.bench import random_batch, step_function

    model = load_model("llama", "tiny")[0]
    model.train()
    inputs = random_batch(model.config.vocab_size, k=3, b=2, width=20)
    grads = {}
    for route in ("loop", "vmap", "autogram", "joint"):
        model.zero_grad(set_to_none=True)
        step_function(route, model, inputs, 3, 0.25)()
        grads[route] = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    scale = grads["loop"].abs().max()
    for route in ("vmap", "autogram"):
        assert float((grads[route] - grads["loop"]).abs().max() / scale) < 1e-4, route
    assert float((grads["joint"] - grads["loop"]).abs().max() / scale) > 1e-3  # MGDA is not the mean here


@pytest.mark.parametrize(("method", "options"), [("mgda", {}), ("bkmoo", {"solver": "pcgrad", "bucket_cap_mb": 0.25})])
def test_training_with_the_vmap_engine_follows_the_loop_trajectory(tmp_path, method, options):
    """`train.grad_engine: vmap` through the trainer: three steps end at the loop route's weights (float tolerance)."""
    from tests.methods._tiny import train

    short = {"train": {"steps": 3, "save_model": False}}
    loop = train(method, options, tmp_path=tmp_path / "loop", overrides=short)
    vmapped = train(method, options, tmp_path=tmp_path / "vmap",
                    overrides={"train": {**short["train"], "grad_engine": "vmap"}})
    a, b = loop.params(), vmapped.params()
    worst = max(float((a[n] - b[n]).abs().max()) for n in a)
    moved = max(float((a[n] - loop.initial[n]).abs().max()) for n in a)
    assert worst < 1e-3 * moved
