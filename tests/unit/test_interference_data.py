"""The controlled-interference lab's data: deterministic, conflict and relatedness by construction, knobs validated."""

from __future__ import annotations

import re

import pytest

from harness.config import DataConfig
from harness.data.interference import Lab, heldout_size, lab_language_data
from harness.data.sft import load_language_data
from harness.suite import suite_from_data

LANGS = ["lab1", "lab2", "lab3"]


def _cfg(**kw):
    return DataConfig(source="interference", max_examples_per_language=40, **kw)


def _answers(ex):
    words = ex.response.split()
    return dict(zip(words[0::2], words[1::2], strict=True))


def test_deterministic_and_independent_of_partners():
    cfg = _cfg(conflict=0.5, relatedness=0.5, dissenters=("lab3",))
    a, b = lab_language_data(cfg, LANGS), lab_language_data(cfg, LANGS)
    assert a.fingerprint() == b.fingerprint()
    alone = lab_language_data(cfg, ["lab3"])
    assert alone.train["lab3"] == a.train["lab3"] and alone.heldout["lab3"] == a.heldout["lab3"]
    assert lab_language_data(_cfg(seed=1), LANGS).fingerprint() != lab_language_data(_cfg(), LANGS).fingerprint()
    assert load_language_data(cfg, LANGS).fingerprint() == a.fingerprint()  # the suite path


def test_heldout_is_parallel_disjoint_and_imbalance_sets_sizes():
    cfg = _cfg(examples_per_language={"lab3": 10})
    data = lab_language_data(cfg, LANGS)
    assert [len(data.train[x]) for x in LANGS] == [40, 40, 10]
    assert all(len(data.heldout[x]) == heldout_size(cfg) for x in LANGS)
    assert [(e.prompt, e.response) for e in data.heldout["lab1"]] == [(e.prompt, e.response) for e in data.heldout["lab2"]]
    held = {e.prompt for e in data.heldout["lab1"]}
    assert not held & {e.prompt for e in data.train["lab1"]}


def test_conflict_zero_agrees_and_conflict_contests_shared_inputs():
    agree = lab_language_data(_cfg(relatedness=1.0), LANGS)
    assert {e.response for e in agree.heldout["lab1"]} == {e.response for e in agree.heldout["lab3"]}
    cfg = _cfg(conflict=0.5, relatedness=1.0, dissenters=("lab3",))
    lab, data = Lab(cfg), lab_language_data(cfg, LANGS)
    assert len(lab.contested) == cfg.concepts // 2
    maps = {x: {} for x in LANGS}
    for x in LANGS:
        for ex in data.train[x] + data.heldout[x]:
            maps[x] |= _answers(ex)
    words = lab.surface("lab1")
    assert lab.surface("lab3") == words  # relatedness 1: one shared vocabulary
    for c in range(cfg.concepts):
        w = words[c]
        if w in maps["lab1"] and w in maps["lab3"]:
            assert (maps["lab1"][w] != maps["lab3"][w]) == (c in lab.contested)
            assert maps["lab1"][w] == maps["lab2"].get(w, maps["lab1"][w])


def test_relatedness_zero_gives_disjoint_vocabularies():
    lab = Lab(_cfg(relatedness=0.0, concepts=32))
    sets = [set(lab.surface(x)) for x in LANGS]
    assert all(len(s) == 32 for s in sets)
    assert not (sets[0] & sets[1]) and not (sets[1] & sets[2])
    half = Lab(_cfg(relatedness=0.5, concepts=32))
    assert len(set(half.surface("lab1")) & set(half.surface("lab2"))) == 16


def test_every_word_is_one_token():
    from harness.models.tokenizer import offline_tokenizer

    tok = offline_tokenizer()
    lab = Lab(_cfg(relatedness=0.3, answer_vocabulary="separate", concepts=22))
    for x in ["lab1", "lab8"]:
        for w in lab.surface(x) + lab.surface(x, answer=True):
            assert len(tok(" " + w, add_special_tokens=False)["input_ids"]) == 1, w


def test_separate_answer_words_are_never_inputs_and_keep_the_conflict():
    cfg = _cfg(conflict=0.5, relatedness=0.5, dissenters=("lab3",), answer_vocabulary="separate")
    lab, data = Lab(cfg), lab_language_data(cfg, LANGS)
    inputs = {w for x in LANGS for w in lab.surface(x)}
    answers = {w for x in LANGS for w in lab.surface(x, answer=True)}
    assert not inputs & answers
    for x in LANGS:
        for ex in data.train[x] + data.heldout[x]:
            words = ex.response.split()
            assert ex.prompt.split() == words[0::2] and set(words[1::2]) <= answers
            assert all(lab.surface(x, answer=True)[lab.answer_map(x)[c]] == a
                       for c, a in ((lab.surface(x).index(w), a) for w, a in zip(words[0::2], words[1::2], strict=True)))
    # the same items, concepts, camps and contested set as with the input words: only the answers' spelling moves
    inputs_cfg = _cfg(conflict=0.5, relatedness=0.5, dissenters=("lab3",))
    assert Lab(inputs_cfg).contested == lab.contested and Lab(inputs_cfg).surface("lab2") == lab.surface("lab2")
    same = lab_language_data(inputs_cfg, LANGS)
    assert [e.prompt for e in same.train["lab3"]] == [e.prompt for e in data.train["lab3"]]
    shared = {w for w in lab.surface("lab1", answer=True)} & {w for w in lab.surface("lab2", answer=True)}
    assert len(shared) == len(lab.shared)  # relatedness applies to the answer words too


BASE = {"suite": {"name": "t"}, "models": ["llama"], "methods": [{"name": "joint_sft"}], "eval": {"tasks": []}}


@pytest.mark.parametrize(("data", "langs", "message"), [
    ({"source": "interference", "conflict": 1.5, "dissenters": ["lab2"]}, ["lab1", "lab2"], "conflict: expected a number in [0, 1]"),
    ({"source": "interference", "relatedness": -0.1}, ["lab1", "lab2"], "relatedness: expected a number in [0, 1]"),
    ({"source": "interference", "concepts": 99}, ["lab1", "lab2"], "concepts: expected an integer in [2, 40]"),
    ({"source": "interference", "dissenters": ["lab9"]}, ["lab1", "lab2"], "not a lab language"),
    ({"source": "interference", "conflict": 0.5}, ["lab1", "lab2"], "needs both camps"),
    ({"source": "interference"}, ["lab1", "en"], "source interference generates languages"),
    ({"source": "chatterbot"}, ["lab1", "en"], "it needs data.source: interference"),
    ({"source": "chatterbot", "conflict": 0.5}, ["en", "fr"], "only used by source: interference"),
    ({"source": "interference", "examples_per_language": {"lab3": 5}}, ["lab1", "lab2"], "not a language of the suite"),
    ({"source": "interference", "examples_per_language": {"lab2": 0}}, ["lab1", "lab2"], "expected a positive integer"),
    ({"source": "interference", "answer_vocabulary": "seperate"}, ["lab1", "lab2"], "did you mean 'separate'"),
    ({"source": "interference", "answer_vocabulary": "separate", "concepts": 30}, ["lab1", "lab2"],
     "answer_vocabulary 'separate' allows at most 22 concepts"),
    ({"source": "chatterbot", "answer_vocabulary": "separate"}, ["en", "fr"], "only used by source: interference"),
])
def test_knobs_are_validated_with_clear_errors(data, langs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        suite_from_data({**BASE, "languages": {"seen": langs}, "data": data})


def test_lab_suite_validates_and_keeps_old_hashes_stable():
    suite = suite_from_data({**BASE, "languages": {"seen": LANGS},
                             "data": {"source": "interference", "conflict": 0.5, "dissenters": ["lab3"]}})
    assert suite.resolved()["data"]["conflict"] == 0.5
    plain = suite_from_data({**BASE, "languages": {"seen": ["en", "fr"]}})
    assert "conflict" not in plain.resolved()["data"] and "init" not in plain.resolved()
    assert "answer_vocabulary" not in suite.resolved()["data"]  # at its default: v1-v4 lab hashes unchanged


class _AnswerOracle:
    """A stand-in causal LM whose logits at each position favour the lab answer of the token there (agreed map)."""

    def __init__(self, tokenizer, lab, margin):
        import torch

        words, answer = lab.surface("lab1"), lab.answer_map("lab1")
        ids = {w: tokenizer.convert_tokens_to_ids("Ġ" + w) for w in words}
        self.table = torch.zeros(len(tokenizer), len(tokenizer))
        for c, w in enumerate(words):
            self.table[ids[w], ids[words[answer[c]]]] = margin
        self.training = False

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def parameters(self):
        import torch

        return iter([torch.zeros(1)])

    def __call__(self, input_ids, attention_mask):
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.table[input_ids])


@pytest.mark.parametrize(("margin", "conflict"), [(0.0, 0.0), (30.0, 0.0), (30.0, 1.0)])
def test_heldout_accuracy_scores_the_answer_words_only(margin, conflict):
    import math

    from harness.data.interference import heldout_accuracy
    from harness.models.tokenizer import offline_tokenizer

    tok = offline_tokenizer()
    cfg = _cfg(conflict=conflict, dissenters=("lab3",), concepts=8)
    data = lab_language_data(cfg, ["lab1", "lab3"])
    out = heldout_accuracy(_AnswerOracle(tok, Lab(cfg), margin), tok, data.heldout, 32, cfg.item_length)
    if margin == 0.0:  # uniform logits: ln V on every answer word
        assert out["eval/answer_loss/lab1"] == pytest.approx(math.log(len(tok)), rel=1e-5)
        return
    assert out["eval/acc/lab1"] == 1.0 and out["eval/answer_loss/lab1"] < 1e-6  # the agreed map is the oracle's
    assert out["eval/acc/lab3"] == (1.0 if conflict == 0.0 else 0.0)  # conflict 1: every lab3 answer is contested
    assert (out["eval/answer_loss/lab3"] > 25.0) == (conflict == 1.0)
