"""The CONGRAD filter: JVP scorer = explicit per-sample-gradient scorer, EMA, PCGrad consensus, keep rules,
determinism, languages without pairs reported; the random filter."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harness.preference.compression import ParamLayout, make_compressor
from harness.preference.filters import (
    CongradFilter,
    FilterContext,
    LanguageEMA,
    NoFilter,
    RandomFilter,
    consensus_direction,
    jvp_scores,
    keep_count,
    per_sample_gradients,
)

LANGS = ("en", "fr", "de")


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra = a.argsort().argsort().double()
    rb = b.argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra @ rb) / (ra.norm() * rb.norm()))


def ctx_for(model, tok, iteration=1, seed=0, alpha=0.01):
    return FilterContext(model=model, tokenizer=tok, iteration=iteration, seed=seed, languages=LANGS, beta=0.1,
                         alpha=alpha, max_length=64)


def make_filter(**kw):
    base = dict(keep_ratio=0.5, threshold=None, compression="none", rank=64, nnz=4, chunk=0, ema_decay=0.9,
                ema_batch_size=2, ema_across_iterations=True, pcgrad_reduction="sum", scorer="explicit",
                score="cosine", jvp_batch_size=4)
    base.update(kw)
    return CongradFilter(**base)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_llama_lora"])
def test_jvp_scorer_agrees_with_explicit_per_sample_gradients(fixture, pairs, request):
    model, tok = request.getfixturevalue(fixture)
    grads = per_sample_gradients(model, tok, pairs, 0.1, 0.01, 64)
    assert grads.shape == (len(pairs), ParamLayout.of(model).numel)
    d = grads[:3].sum(0) - 0.5 * grads[5] + 1e-3 * torch.randn(grads.shape[1], generator=torch.Generator().manual_seed(0))
    explicit = grads @ d
    fast = jvp_scores(model, tok, pairs, d, 0.1, 0.01, 64, batch_size=3)
    assert spearman(explicit, fast) >= 0.99
    torch.testing.assert_close(fast, explicit, rtol=2e-3, atol=1e-3 * float(explicit.abs().max()))


def test_jvp_filter_equals_explicit_filter_without_and_with_compression(tiny_llama_lora, pairs):
    model, tok = tiny_llama_lora
    for compression in ("none", "sparse"):
        explicit = make_filter(scorer="explicit", score="dot", compression=compression)(pairs, ctx_for(model, tok))
        fast = make_filter(scorer="jvp", score="dot", compression=compression)(pairs, ctx_for(model, tok))
        a, b = torch.tensor(explicit.scores), torch.tensor(fast.scores)
        assert spearman(a, b) >= 0.99, compression
        assert explicit.keep == fast.keep, compression


def test_jvp_scorer_refuses_cosine():
    with pytest.raises(ValueError, match="dot"):
        make_filter(scorer="jvp", score="cosine")


def test_congrad_filter_keeps_top_rho_per_language_deterministically(tiny_llama_lora, pairs):
    model, tok = tiny_llama_lora
    before = [p.detach().clone() for p in model.parameters()]
    a = make_filter(compression="gaussian", rank=128)(pairs, ctx_for(model, tok))
    b = make_filter(compression="gaussian", rank=128)(pairs, ctx_for(model, tok))
    assert a.keep == b.keep and a.scores == b.scores  # deterministic for a seed
    assert all(torch.equal(x, y) for x, y in zip(before, model.parameters(), strict=False))  # scoring never changes the model
    assert all(p.grad is None for p in model.parameters())
    langs = [p.language for p in pairs]
    for lang in LANGS:
        idx = [i for i, lg in enumerate(langs) if lg == lang]
        kept = [i for i in idx if a.keep[i]]
        assert len(kept) == keep_count(len(idx), 0.5)
        # the kept ones are the best-scored of their language
        assert min(a.scores[i] for i in kept) >= max([a.scores[i] for i in idx if not a.keep[i]], default=-2)
    assert all(-1 - 1e-6 <= s <= 1 + 1e-6 for s in a.scores)  # cosines
    m = a.metrics
    assert m["congrad/compressed_dim"] == 128 and m["congrad/mem/full_per_sample_grad_mb"] > 0
    assert m["congrad/languages_in_consensus"] == 3


def test_threshold_mode_can_leave_a_language_without_pairs(tiny_llama_lora, pairs):
    model, tok = tiny_llama_lora
    res = make_filter(threshold=2.0)(pairs[::2], ctx_for(model, tok))  # cosines never reach 2
    assert not any(res.keep)


def test_language_without_pairs_is_reported_not_dropped():
    from harness.preference.filters import warn_missing

    with pytest.warns(RuntimeWarning, match=r"no preference pairs for languages \['de'\]"):
        missing = warn_missing(LANGS, {"en": 3, "fr": 1}, "preference pairs")
    assert missing == ["de"]


def test_ema_initialises_then_decays():
    ema = LanguageEMA(0.9)
    ema.update("en", torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(ema.state["en"], torch.tensor([1.0, 0.0]))  # no zero-init bias
    ema.update("en", torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(ema.state["en"], torch.tensor([0.9, 0.1]))
    assert ema.updates == {"en": 2}


def test_consensus_is_pcgrad_of_the_emas():
    # DESIGN.md golden: J = [[-4,1,1],[6,1,1]] -> PCGrad(sum) weights (2.2222, 1.5789), direction (0.5848, 3.8012, 3.8012)
    emas = {"en": torch.tensor([-4.0, 1.0, 1.0]), "fr": torch.tensor([6.0, 1.0, 1.0])}
    d, metrics = consensus_direction(emas, ["en", "fr", "de"], "sum", seed=0, iteration=1)
    torch.testing.assert_close(d, torch.tensor([0.5848, 3.8012, 3.8012]), atol=1e-4, rtol=0)
    assert metrics["congrad/pcgrad_coeff/en"] == pytest.approx(2.2222, abs=1e-4)
    assert metrics["congrad/conflicting_pairs"] == 1 and metrics["congrad/languages_in_consensus"] == 2
    # every EMA agrees with the consensus after projection (PCGrad's purpose)
    assert all(float(v @ d) > 0 for v in emas.values())


def test_consensus_k3_deterministic_for_seed_and_iteration():
    g = torch.Generator().manual_seed(1)
    emas = {lang: torch.randn(16, generator=g) for lang in LANGS}
    a, _ = consensus_direction(emas, LANGS, "sum", seed=0, iteration=2)
    b, _ = consensus_direction(emas, LANGS, "sum", seed=0, iteration=2)
    assert torch.equal(a, b)


def test_ema_persists_across_iterations_when_configured(tiny_llama_lora, pairs):
    model, tok = tiny_llama_lora
    pairs = pairs[::2]  # en, en, fr, de
    f = make_filter(compression="sparse", rank=32)
    f(pairs, ctx_for(model, tok, iteration=1))
    first = {k: v.clone() for k, v in f.ema.state.items()}
    f(pairs, ctx_for(model, tok, iteration=2))
    assert f.ema.updates["en"] == 2  # one mini-batch per iteration, the same EMA kept
    fresh = make_filter(compression="sparse", rank=32, ema_across_iterations=False)
    fresh(pairs, ctx_for(model, tok, iteration=1))
    fresh(pairs, ctx_for(model, tok, iteration=2))
    for lang in LANGS:
        torch.testing.assert_close(fresh.ema.state[lang], first[lang])  # reset each iteration, same model -> same EMA


def test_random_filter_same_keep_count_seeded(pairs):
    ctx = dataclasses.replace(ctx_for(None, None), model=None)
    a = RandomFilter(0.5)(pairs, ctx)
    b = RandomFilter(0.5)(pairs, ctx)
    c = RandomFilter(0.5)(pairs, dataclasses.replace(ctx, seed=1))
    assert a.keep == b.keep
    per_lang = {lang: sum(k for k, p in zip(a.keep, pairs, strict=False) if p.language == lang) for lang in LANGS}
    assert per_lang == {"en": 2, "fr": 2, "de": 1}
    others = [RandomFilter(0.5)(pairs, dataclasses.replace(ctx, seed=s)).keep for s in range(1, 6)]
    assert any(o != a.keep for o in others)  # the seed matters
    assert c.keep in others
    assert NoFilter()(pairs, ctx).keep == [True] * len(pairs)


def test_keep_count():
    assert [keep_count(n, 0.5) for n in (0, 1, 2, 3, 7)] == [0, 1, 1, 2, 4]
    assert keep_count(5, 1.0) == 5 and keep_count(5, 0.01) == 1


def test_compressed_explicit_scores_are_dots_with_lifted_direction(tiny_llama, pairs):
    model, tok = tiny_llama
    layout = ParamLayout.of(model)
    comp = make_compressor("sparse", layout, 64, seed=0)
    grads = per_sample_gradients(model, tok, pairs[:4], 0.1, 0.0, 64)
    v = torch.randn(64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(comp.compress(grads) @ v, grads @ comp.lift(v), rtol=1e-3, atol=1e-4)
