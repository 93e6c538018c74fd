"""The per-language gradient routes agree: `vmap` (one batched pass) and `one_backward` (one forward, one backward,
per-row contributions grouped by language) = `loop` (a pass per language) on every tiny twin, with right padding,
prompt tokens masked out of the loss, LoRA and bf16 autocast; `vmap` refuses unbalanced batches, `one_backward` takes
them and refuses the models it cannot make exact, naming the piece."""

from __future__ import annotations

import gc
import weakref

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


def _worst_block_error(model, fast: torch.Tensor, loop: torch.Tensor) -> float:
    """Largest error of any parameter's block relative to that block's scale: a parameter the fast route missed or
    got wrong shows even when it is small next to the embeddings."""
    worst, start = 0.0, 0
    for _, p in trainable_parameters(model):
        a, b = fast[:, start: start + p.numel()], loop[:, start: start + p.numel()]
        worst = max(worst, float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)))
        start += p.numel()
    return worst


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma2", "mistral"])
def test_fast_rows_equal_loop_rows(arch):
    model = load_model(arch, "tiny")[0]
    model.train()
    inputs = _batch(model.config.vocab_size)
    loop = _rows("loop", model, inputs)
    assert float(loop.rows.norm(dim=1).min()) > 0  # every language reaches the parameters
    for engine in ("vmap", "one_backward"):
        fast = _rows(engine, model, inputs)
        assert loop.languages == fast.languages == [0, 1, 2]
        torch.testing.assert_close(fast.losses, loop.losses, rtol=1e-5, atol=1e-6)
        assert float((fast.rows - loop.rows).abs().max() / loop.rows.abs().max()) < 1e-4, engine
    assert _worst_block_error(model, fast.rows, loop.rows) < 1e-4


def test_fast_rows_equal_loop_rows_with_lora():
    from harness.config import LoraConfig

    model = load_model("llama", "tiny", lora=LoraConfig(rank=4, alpha=8))[0]
    model.train()
    inputs = _batch(model.config.vocab_size, seed=1)
    loop = _rows("loop", model, inputs)
    assert loop.rows.shape[1] == sum(p.numel() for _, p in trainable_parameters(model))
    for engine in ("vmap", "one_backward"):
        assert float((_rows(engine, model, inputs).rows - loop.rows).abs().max() / loop.rows.abs().max()) < 1e-4
    assert _worst_block_error(model, _rows("one_backward", model, inputs).rows, loop.rows) < 1e-4


@pytest.mark.parametrize("arch", ["gemma2", "qwen3"])
def test_one_backward_equals_loop_under_bf16_autocast_and_unbalanced_batches(arch):
    """Under bf16 autocast (train.dtype bfloat16) with 3, 2 and 1 rows per language, gaps in the language ids; the
    weight-gradient variant (autograd also computes the joint weight gradients) gives the same rows."""
    from harness.train.grad_engine import one_backward_language_gradients

    model = load_model(arch, "tiny")[0]
    model.train()
    inputs = _batch(model.config.vocab_size, seed=3)
    inputs["language"] = torch.tensor([4, 0, 0, 4, 0, 2])
    params = [p for _, p in trainable_parameters(model)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loop = _rows("loop", model, inputs)
        fast = _rows("one_backward", model, inputs)
        with_weights = one_backward_language_gradients(model, inputs, params, token_losses, keep_weight_grads=True)
    fp32 = _rows("loop", model, inputs)
    assert fast.languages == loop.languages == [0, 2, 4]
    assert float((loop.rows - fp32.rows).abs().max() / fp32.rows.abs().max()) > 1e-4  # autocast is on
    assert _worst_block_error(model, fast.rows, loop.rows) < 1e-2  # bf16 products, summed in another order
    torch.testing.assert_close(with_weights.rows, fast.rows)


def test_vmap_refuses_unbalanced_batches_and_unknown_engines():
    model = load_model("llama", "tiny")[0]
    inputs = _batch(model.config.vocab_size)
    inputs["language"] = torch.tensor([0, 0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="same number of rows per language"):
        _rows("vmap", model, inputs)
    with pytest.raises(ValueError, match="unknown grad_engine 'jit'"):
        _rows("jit", model, inputs)


class _TwoInputs(torch.nn.Module):
    """A module with its own parameter, called with two tensors (the route cannot group its inputs by row)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(4))

    def forward(self, x, y):
        return x * self.scale + y


class _Toy(torch.nn.Module):
    """An embedding, ``block`` twice (batch norm over channels; two tensors in with ``_TwoInputs``), a head."""

    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        self.embed, self.block, self.head = torch.nn.Embedding(11, 4), block, torch.nn.Linear(4, 11)

    def get_input_embeddings(self):
        return self.embed

    def _block(self, h):
        if isinstance(self.block, _TwoInputs):
            return self.block(h, h)
        if isinstance(self.block, torch.nn.BatchNorm1d):
            return self.block(h.transpose(1, 2)).transpose(1, 2)
        return self.block(h)

    def forward(self, input_ids, attention_mask=None):
        h = self._block(self.embed(input_ids))
        return type("Out", (), {"logits": self.head(self._block(h.tanh()))})()


def test_one_backward_recomputes_other_row_wise_modules():
    """A module the route has no formula for (LayerNorm: weight and bias), called twice per forward: its rows come
    from the vmapped vector-Jacobian product, both calls summed."""
    torch.manual_seed(0)
    model = _Toy(torch.nn.LayerNorm(4))
    inputs = _batch(11, k=3, b=2, width=6)
    loop, fast = _rows("loop", model, inputs), _rows("one_backward", model, inputs)
    assert _worst_block_error(model, fast.rows, loop.rows) < 1e-5
    rows = weakref.ref(fast.rows)
    del fast
    gc.collect()
    assert rows() is None  # nothing keeps the K×P rows (hooks on the graph once held them in a cycle)


@pytest.mark.parametrize(("block", "message"), [
    (torch.nn.BatchNorm1d(4), r"block \(BatchNorm1d\) mixes rows"),
    (_TwoInputs(), r"block \(_TwoInputs\) owns trainable parameters but is not called as tensor -> tensor"),
])
def test_one_backward_refuses_what_it_cannot_make_exact(block, message):
    from harness.train.one_backward import UnsupportedForOneBackward

    model = _Toy(block)
    inputs = _batch(11, k=2, b=2, width=6)
    with pytest.raises(UnsupportedForOneBackward, match=message + ".*use train.grad_engine: loop"):
        _rows("one_backward", model, inputs)
    assert not any(m._forward_hooks for m in model.modules())  # hooks removed after the refusal


def test_one_backward_refuses_gradient_checkpointing_and_adapters_outside_module_calls():
    """Activation checkpointing recomputes inside the backward; peft's embedding adapters are parameter dicts used
    outside any module call (their gradient would be lost, so the route says so instead)."""
    from harness.config import LoraConfig
    from harness.train.one_backward import UnsupportedForOneBackward

    model = load_model("llama", "tiny", lora=LoraConfig(rank=2, alpha=4, target_modules=["embed_tokens", "q_proj"]))[0]
    inputs = _batch(model.config.vocab_size, k=2, b=1, width=8)
    with pytest.raises(UnsupportedForOneBackward, match="lora_embedding_A.* never called"):
        _rows("one_backward", model, inputs)
    plain = load_model("llama", "tiny")[0]
    for m in plain.modules():
        if hasattr(m, "gradient_checkpointing"):
            m.gradient_checkpointing = True
    with pytest.raises(UnsupportedForOneBackward, match="gradient checkpointing"):
        _rows("one_backward", plain, inputs)


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
    fast = ("vmap", "one_backward", "one_backward_wgrad", "autogram")
    for route in ("loop", *fast, "joint"):
        model.zero_grad(set_to_none=True)
        step_function(route, model, inputs, 3, 0.25)()
        grads[route] = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    scale = grads["loop"].abs().max()
    for route in fast:
        assert float((grads[route] - grads["loop"]).abs().max() / scale) < 1e-4, route
    assert float((grads["joint"] - grads["loop"]).abs().max() / scale) > 1e-3  # MGDA is not the mean here


@pytest.mark.parametrize(("method", "options"), [("mgda", {}), ("bkmoo", {"solver": "pcgrad", "bucket_cap_mb": 0.25})])
def test_training_with_the_fast_engines_follows_the_loop_trajectory(tmp_path, method, options):
    """`train.grad_engine: vmap` and `one_backward` through the trainer: three steps end at the loop route's weights
    (float tolerance). SGD, whose update is linear in the gradient: Adam's first steps are ``g / (|g| + eps)``, which
    turns the engines' float-order differences (~1e-7 of a row; the loop's passes run single-threaded on the CPU,
    ``harness.train.language_workers``) in near-zero gradient coordinates into differences of 1e-3 of the move."""
    from tests.methods._tiny import train

    short = {"train": {"steps": 3, "save_model": False, "optimizer": "sgd", "lr": 0.05}}
    loop = train(method, options, tmp_path=tmp_path / "loop", overrides=short)
    a = loop.params()
    moved = max(float((a[n] - loop.initial[n]).abs().max()) for n in a)
    for engine in ("vmap", "one_backward"):
        fast = train(method, options, tmp_path=tmp_path / engine,
                     overrides={"train": {**short["train"], "grad_engine": engine}}).params()
        worst = max(float((a[n] - fast[n]).abs().max()) for n in a)
        assert worst < 1e-3 * moved, engine


def test_suite_refuses_one_backward_with_gradient_checkpointing():
    from harness.suite import load_suite
    from harness.validate import ConfigError
    from tests.conftest import REPO

    quickstart = REPO / "suites" / "quickstart.yaml"
    assert load_suite(quickstart, ["train.grad_engine=one_backward"]).train.grad_engine == "one_backward"
    with pytest.raises(ConfigError, match="train.grad_engine: one_backward .* use grad_engine: loop"):
        load_suite(quickstart, ["train.grad_engine=one_backward", "train.gradient_checkpointing=true"])


def _gradient_methods() -> list[tuple[str, dict]]:
    """Every registered gradient method at its defaults, and Bucket-Level MOO with each solver at each granularity."""
    from harness.registry import available_methods

    plain = [(name, {}) for name, m in sorted(available_methods().items())
             if m.kind == "gradient" and name not in ("joint_sft", "bkmoo")]
    bkmoo = [("bkmoo", {"solver": s, "granularity": g, "bucket_cap_mb": 0.25})
             for s in ("mgda", "pcgrad", "cagrad") for g in ("ddp_bucket", "module", "tensor", "whole")]
    return plain + bkmoo


@pytest.mark.slow
def test_every_gradient_method_and_granularity_takes_the_same_direction_from_either_route(tmp_path):
    """The rows are all a method sees: `one_backward`'s rows give every method (and every bkmoo granularity) the
    direction `loop`'s rows give, to float tolerance (a fresh combiner per route: stateful weightings start equal)."""
    from pathlib import Path

    from harness.config import MethodSpec
    from harness.method import RunContext
    from harness.registry import get_method, parse_options
    from tests.methods._tiny import RecordingTracker, _data, make_suite

    model, tokenizer = load_model("llama", "tiny")
    inputs = _batch(model.config.vocab_size, k=3, b=2)
    loop, fast = _rows("loop", model, inputs), _rows("one_backward", model, inputs)
    names = ["en", "fr", "de"]
    methods = _gradient_methods()
    assert {"pcgrad", "mgda", "cagrad", "gradvac", "famo", "upgrad"} <= {m for m, _ in methods}
    for name, options in methods:
        spec = {"name": name, "options": options}
        suite = make_suite(None, spec)

        def build(name=name, options=options, spec=spec, suite=suite):
            run = RunContext(suite=suite, method=MethodSpec(**spec), model_name="llama", seed=3, model=model,
                             tokenizer=tokenizer, data=_data(suite.data, suite.languages.all),
                             tracker=RecordingTracker(), run_dir=Path(tmp_path))
            return get_method(name).build(parse_options(name, options), run)

        slow = build()(loop.rows, names, 0, losses=loop.losses).direction
        quick = build()(fast.rows, names, 0, losses=fast.losses).direction
        scale = slow.abs().max()
        assert float((quick - slow).abs().max() / scale) < 1e-4, (name, options)
