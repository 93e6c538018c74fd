"""Degenerate input through the real trainer on the tiny twin: one language in a batch, a zero gradient for one
language, a NaN / inf gradient (the step is skipped, counted in train/skipped_steps and logged; parameters unchanged,
nothing corrupted). The combiners' own degenerate cases (synthetic Grams) are in test_combiners.py."""

from __future__ import annotations

import pytest
import torch

from tests.methods._tiny import gradient_methods, max_diff, train

pytestmark = pytest.mark.slow
METHODS = gradient_methods()
OPTIONS = {"bkmoo": {"bucket_cap_mb": 0.25}}


def _finite(trained) -> bool:
    return all(torch.isfinite(p).all() for p in trained.params().values())


def _patch_losses(monkeypatch, transform):
    """Wrap the trainer's per-language losses: transform(call index, {language id: loss}) -> losses. Joint SFT's
    mixed batch goes through `sft.language_losses` (one call per step), the gradient methods' per-language passes
    through `grad_engine.language_loss` (one call per language)."""
    import harness.train.grad_engine as grad_engine
    import harness.train.sft as sft  # transformers.Trainer: imported by the tests, not at collection

    real_mixed, real_one = sft.language_losses, grad_engine.language_loss
    calls = {"n": 0}

    def patched_mixed(model, inputs):
        out = real_mixed(model, inputs)
        calls["n"] += 1
        return transform(calls["n"] - 1, out)

    def patched_one(model, inputs, token_losses):
        lang = int(inputs["language"][0])
        calls["n"] += 1
        return transform(calls["n"] - 1, {lang: real_one(model, inputs, token_losses)})[lang]

    monkeypatch.setattr(sft, "language_losses", patched_mixed)
    monkeypatch.setattr(grad_engine, "language_loss", patched_one)


@pytest.mark.parametrize("name", METHODS)
def test_one_language_in_the_batch(tmp_path, name):
    out = train(name, OPTIONS.get(name), tmp_path=tmp_path, overrides={"languages": {"seen": ["en"], "unseen": []}})
    assert out.changed() and _finite(out)
    last = out.tracker.metrics[2]
    assert "train/loss/en" in last and last["train/skipped_steps"] == 0
    if name != "joint_sft":
        assert last["moo/weights/en/mean"] > 0
        assert last["moo/conflict_fraction"] == 0.0


@pytest.mark.parametrize("name", [m for m in METHODS if m != "joint_sft"])
def test_zero_gradient_for_one_language(tmp_path, monkeypatch, name):
    """French's loss is multiplied by 0: its gradient is exactly zero. MGDA's min-norm point is then 0 (the zero
    gradient is in the hull: Pareto-stationary), the others still move; nothing is NaN and nothing is skipped."""
    fr = 1  # language id of "fr" in the small suite (en, fr, de)
    _patch_losses(monkeypatch, lambda i, losses: {k: (v * 0.0 if k == fr else v) for k, v in losses.items()})
    out = train(name, OPTIONS.get(name), tmp_path=tmp_path)
    assert _finite(out)
    last = out.tracker.metrics[2]
    assert last["train/skipped_steps"] == 0
    assert last["moo/grad_norm/fr"] == 0.0
    assert all(v == v for k, v in last.items() if k.startswith("moo/"))
    if name in ("mgda",) or (name == "bkmoo" and (OPTIONS.get(name) or {}).get("solver", "mgda") == "mgda"):
        largest = max(last[f"moo/grad_norm/{lang}"] for lang in ("en", "fr", "de")) ** 2
        assert 0.0 <= last["moo/residual/global"] <= 1e-12 * largest  # the active set's KKT exactness (harness.moo._qp)
        assert last["moo/dir_norm_ratio"] == pytest.approx(0.0, abs=1e-12)
    else:
        assert out.changed()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("name", METHODS)
def test_non_finite_gradient_skips_the_step(tmp_path, monkeypatch, name, bad):
    """Step 2 of 3 gets a non-finite loss for German: that step is skipped (no update), counted and logged; steps 1
    and 3 update normally. Compared with a clean 1-step run: after step 2 the parameters are exactly step 1's."""
    overrides = {"train": {"steps": 3}}
    per_step = 1 if name == "joint_sft" else 3  # language_losses calls per step: one mixed batch, or one per language
    de = 2
    seen_after_step: dict[int, dict[str, torch.Tensor]] = {}

    def inject(i, losses):
        return {k: (v * bad if (k == de and i // per_step == 1) else v) for k, v in losses.items()}

    _patch_losses(monkeypatch, inject)
    import harness.train.sft as sft

    real_step = sft.StepLogger.on_step_end

    def snapshot(self, args, state, control, **kwargs):
        model = self.trainer_ref().model
        seen_after_step[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters()}
        return real_step(self, args, state, control, **kwargs)

    monkeypatch.setattr(sft.StepLogger, "on_step_end", snapshot)
    out = train(name, OPTIONS.get(name), tmp_path=tmp_path / "bad", overrides=overrides)
    assert _finite(out)
    assert max_diff(seen_after_step[1], seen_after_step[2]) == 0.0  # the skipped step changed nothing
    assert max_diff(seen_after_step[2], seen_after_step[3]) > 0.0  # training goes on
    assert out.tracker.series("train/skipped_steps") == [0.0, 1.0, 1.0]
    assert out.metrics["train/skipped_steps"] == 1.0
    assert not any(k.startswith("moo/") for k in out.tracker.metrics[2])  # never combined
