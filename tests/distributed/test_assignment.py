"""Language-per-rank assignment and per-rank data positions (pure functions, no process group)."""

from __future__ import annotations

import pytest

from harness.distributed.assignment import AssignmentError, active_before, assign, describe
from harness.distributed.data import LanguageStreams, rank_indices
from harness.executor import gradient_plan, resolve_hook
from harness.moo.options import GradientPlan


def test_groups_when_n_at_least_k():
    a = assign(4, 2, step=7)
    assert a.rank_language == (0, 0, 1, 1) and a.languages == (0, 1)
    assert a.group(1) == (2, 3) and a.member_index(3) == 1
    mix = a.mixing_matrix()
    assert mix.tolist() == [[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]]


def test_uneven_groups_when_k_does_not_divide_n():
    """8 GPUs for the paper's 6 seen languages: groups of 2, 2, 1, 1, 1, 1; the language-balanced mean weights each
    language 1/K whatever its group size, so joint SFT does not count en and fr twice."""
    a = assign(8, 6, step=3)
    assert a.rank_language == (0, 0, 1, 1, 2, 3, 4, 5) and not a.even
    assert [len(a.group(lang)) for lang in a.languages] == [2, 2, 1, 1, 1, 1]
    weights = [a.language_weight(r) for r in range(8)]
    assert weights[:4] == [1 / 12] * 4 and weights[4:] == [1 / 6] * 4 and abs(sum(weights) - 1) < 1e-15
    assert a.mixing_matrix()[0].tolist() == [0.5, 0.5, 0, 0, 0, 0, 0, 0]
    assert assign(4, 2, 0).even and assign(4, 2, 0).language_weight(3) == 1 / 4
    assert describe(8, 6, ["en", "fr", "de", "es", "it", "pt"], 10)["ranks_per_language"]["de"] == 1
    with pytest.raises(AssignmentError, match="at least one rank"):
        assign(0, 2, 0)


def test_rotation_when_n_below_k():
    steps = [assign(2, 4, s).rank_language for s in range(4)]
    assert steps == [(0, 1), (2, 3), (0, 1), (2, 3)]
    assert assign(2, 3, 1).rank_language == (2, 0)
    for n, k in ((2, 3), (2, 4), (3, 5), (4, 6)):
        for lang in range(k):
            for s in range(12):
                brute = sum(lang in assign(n, k, t).rank_language for t in range(s))
                assert active_before(n, k, lang, s) == brute
    info = describe(2, 4, ["en", "fr", "de", "es"], 10)
    assert info["mode"] == "rotation" and info["steps"][1] == ["de", "es"]


def test_rank_batches_match_single_process_sampler():
    """N = K: rank r's batch at step s = language r's part of BalancedBatchSampler's batch s."""
    from harness.data.sft import BalancedBatchSampler

    index = {"en": list(range(0, 7)), "fr": list(range(7, 12))}
    sampler = list(BalancedBatchSampler(index, 3, 5, seed=11))
    streams = LanguageStreams(index, seed=11)
    for step, batch in enumerate(sampler):
        a = assign(2, 2, step)
        got = [i for r in range(2) for i in rank_indices(streams, ["en", "fr"], 2, 3, 1, step, r, 0, a)]
        assert got == batch


def test_group_members_take_disjoint_consecutive_chunks():
    index = {"en": list(range(100)), "fr": list(range(100, 200))}
    streams = LanguageStreams(index, seed=0)
    a = assign(4, 2, 0)
    chunks = [rank_indices(streams, ["en", "fr"], 4, 2, 2, 0, r, m, a) for r in range(4) for m in range(2)]
    flat = [i for c in chunks for i in c]
    assert len(set(flat)) == len(flat) == 16


def test_hook_resolution():
    assert resolve_hook(gradient_plan(None), "sharded") == "mean"
    assert resolve_hook(GradientPlan(weighting="mgda", scope="bucket"), "allgather") == "allgather"
    assert resolve_hook(GradientPlan(weighting="mgda", scope="bucket"), "full") == "sharded"
    assert resolve_hook(GradientPlan(weighting="pcgrad", scope="global"), "sharded") == "full"
    assert resolve_hook(GradientPlan(weighting="pcgrad", scope="global"), "full_gather") == "full_gather"
    with pytest.raises(ValueError, match="does not implement"):
        resolve_hook(GradientPlan(weighting="mgda", scope="bucket", hook="full"), "sharded")

    class Combiner:  # a custom combiner: plain attributes are not a plan, so DDP refuses it with the fix
        weighting_name, scope = "cagrad", "bucket"

    with pytest.raises(TypeError, match="give it a `plan`"):
        gradient_plan(Combiner())
