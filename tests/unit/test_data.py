"""Offline data: chatterbot pairs, splits, chat formatting, balanced batching, CLDR items, hub loader."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from harness.config import DataConfig
from harness.data.babel_mc import make_items
from harness.data.chatterbot import load_pairs
from harness.data.sft import BalancedBatchSampler, Example, TokenizedLanguages, collate, encode, load_language_data
from harness.languages import CHATTERBOT_DIRS


def test_chatterbot_has_all_28_languages():
    assert len(CHATTERBOT_DIRS) == 28
    counts = {code: len(load_pairs(code)) for code in CHATTERBOT_DIRS}
    assert all(n > 0 for n in counts.values()), counts
    assert counts["en"] > 1000 and counts["fr"] > 50
    with pytest.raises(KeyError, match="no chatterbot-corpus data for language 'sw'"):
        load_pairs("sw")


def test_split_is_deterministic_disjoint_and_capped():
    cfg = DataConfig(max_examples_per_language=30)
    a = load_language_data(cfg, ["fr", "de"])
    b = load_language_data(cfg, ["de", "fr"])
    assert a.train == b.train and a.heldout == b.heldout and a.fingerprint() == b.fingerprint()
    for lang in ("fr", "de"):
        assert 0 < len(a.train[lang]) <= 30 and a.heldout[lang]
        assert not set(a.train[lang]) & set(a.heldout[lang])
        assert all(ex.language == lang for ex in a.train[lang])


def test_hub_loader_on_local_jsonl(tmp_path):
    rows = [{"lang": lang, "q": f"q{i} {lang}", "a": f"a{i}"} for lang in ("en", "sw") for i in range(10)]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(source="json", path=str(path), language_field="lang", prompt_field="q", response_field="a",
                     heldout_fraction=0.2)
    data = load_language_data(cfg, ["en", "sw"])
    assert len(data.train["sw"]) == 8 and len(data.heldout["sw"]) == 2
    with pytest.raises(ValueError, match="no examples for languages \\['fr'\\]"):
        load_language_data(cfg, ["en", "fr"])
    bad = DataConfig(source="json", path=str(path))
    with pytest.raises(ValueError, match="data.jsonl:1: no field 'language'"):
        load_language_data(bad, ["en"])
    # other local formats go through `datasets` (a .json file of JSON lines here), with the same interface
    as_json = path.rename(tmp_path / "data.json")
    via_datasets = load_language_data(DataConfig(**{**cfg.__dict__, "path": str(as_json)}), ["en", "sw"])
    assert via_datasets == data
    with pytest.raises(ValueError, match="columns \\['language', 'prompt', 'response'\\] not found"):
        load_language_data(DataConfig(source="json", path=str(as_json)), ["en"])


def test_encode_masks_prompt_and_keeps_response(tiny_tokenizer):
    ex = Example("fr", "Bonjour, comment ça va ?", "Très bien, merci")
    row = encode(tiny_tokenizer, ex, 64)
    target = [t for t, label in zip(row["input_ids"], row["labels"], strict=False) if label != -100]
    assert row["labels"][0] == -100 and target
    assert "Très bien, merci" in tiny_tokenizer.decode(target)
    short = encode(tiny_tokenizer, Example("fr", "mot " * 100, "ok"), 16)
    assert len(short["input_ids"]) <= 16 and any(label != -100 for label in short["labels"])


def test_balanced_sampler_is_balanced_and_seed_only():
    index = {"en": list(range(0, 7)), "fr": list(range(7, 10)), "de": list(range(10, 15))}
    batches = list(BalancedBatchSampler(index, per_language=2, steps=9, seed=3))
    assert len(batches) == 9
    owner = {i: lang for lang, idx in index.items() for i in idx}
    for batch in batches:
        assert Counter(owner[i] for i in batch) == {"en": 2, "fr": 2, "de": 2}
    assert batches == list(BalancedBatchSampler(index, 2, 9, seed=3))
    assert batches != list(BalancedBatchSampler(index, 2, 9, seed=4))
    # every example of a language is used once per pass before any repeats
    fr = [i for b in batches for i in b if owner[i] == "fr"]
    assert sorted(fr[:3]) == [7, 8, 9]
    with pytest.raises(ValueError, match="no training examples for languages \\['de'\\]"):
        BalancedBatchSampler({"en": [0], "de": []}, 1, 1, 0)


def test_collate_carries_language(tiny_tokenizer):
    ds = TokenizedLanguages(tiny_tokenizer, {"en": [Example("en", "hi", "hello")], "fr": [Example("fr", "salut", "ça va")]}, 32)
    batch = collate(tiny_tokenizer.pad_token_id)([ds[0], ds[1]])
    assert batch["language"].tolist() == [0, 1]
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape


def test_babel_items_are_parallel_and_deterministic():
    fr, sw = make_items("fr", 20, seed=0), make_items("sw", 20, seed=0)
    assert fr == make_items("fr", 20, seed=0) and fr != make_items("fr", 20, seed=1)
    assert [i.key for i in fr] == [i.key for i in sw], "same questions in every language"
    de = {i.key: i for i in make_items("de", 200)}
    assert de["DE"].choices[de["DE"].gold] == "Deutschland"
    assert all(len(set(i.choices)) == 4 for i in fr)


def test_jsonl_rows_keep_file_order_and_text(tmp_path):
    from harness.data.sft import read_jsonl_rows

    path = tmp_path / "d.jsonl"
    rows = [{"language": "fr", "prompt": "b", "response": "2"}, {"language": "en", "prompt": " a", "response": "1\n"},
            {"language": "fr", "prompt": "c", "response": "3"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    assert read_jsonl_rows(str(path), ("language", "prompt", "response")) == {"fr": [("b", "2"), ("c", "3")],
                                                                                "en": [(" a", "1\n")]}


@pytest.mark.parametrize("content, message", [
    (b"", "the file has no rows"),
    (b'{"language": "en", "prompt": "a", "response": "b"}\n{"language": "en", "prompt": ', ":2: not valid JSON"),
    (b'{"language": "en", "prompt": "a", "response": null}\n', ":1: field 'response' must be non-empty text, got None"),
    (b'{"language": "en", "prompt": "a"}\n', ":1: no field 'response'"),
    (b'["en", "a", "b"]\n', ":1: expected a JSON object, got list"),
    (b'{"language": "en", "prompt": "\xff", "response": "b"}\n', ":1: not UTF-8"),
])
def test_jsonl_problems_name_the_file_and_line(tmp_path, content, message):
    from harness.data.sft import read_jsonl_rows

    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.jsonl") as err:
        read_jsonl_rows(str(path), ("language", "prompt", "response"))
    assert message in str(err.value)


def test_jsonl_missing_file_is_named():
    with pytest.raises(ValueError, match="'nope.jsonl': no such file"):
        load_language_data(DataConfig(source="json", path="nope.jsonl"), ["en"])
