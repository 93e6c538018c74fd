"""Per-language SFT data: load (offline corpus, hub id or local files), split, chat-format, tokenize, batch.

Every example keeps its language; batches are language-balanced (the same number of examples of every
seen language in every step) and their order depends only on the seed, so every method sees exactly
the same data in the same order.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from harness.config import DataConfig

SPLIT_SEED = "polymoo-split-v1"  # the train / held-out split never depends on the run seed


@dataclass(frozen=True)
class Example:
    language: str
    prompt: str
    response: str


@dataclass(frozen=True)
class LanguageData:
    """train and held-out examples per language (seen languages have both; unseen ones only held-out is used)."""

    train: dict[str, tuple[Example, ...]]
    heldout: dict[str, tuple[Example, ...]]

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for split in (self.train, self.heldout):
            for lang in sorted(split):
                for ex in split[lang]:
                    h.update(f"{lang}\x00{ex.prompt}\x00{ex.response}\x01".encode())
        return h.hexdigest()[:12]


def _split(lang: str, pairs: Sequence[tuple[str, str]], cfg: DataConfig) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    rows = [Example(lang, p, r) for p, r in pairs]
    random.Random(f"{SPLIT_SEED}/{lang}").shuffle(rows)
    n_held = max(1, round(len(rows) * cfg.heldout_fraction))
    held, train = rows[:n_held], rows[n_held:]
    n_train = cfg.examples_per_language.get(lang, cfg.max_examples_per_language)
    return tuple(train[:n_train]), tuple(held[: max(1, cfg.max_examples_per_language // 4)])


def read_jsonl_rows(path: str, fields: tuple[str, str, str]) -> dict[str, list[tuple[str, str]]]:
    """Rows of a local JSONL file grouped by language, in file order; every problem names the file and line.

    Read directly rather than through `datasets`: the order and text are exactly the file's, and a broken, empty,
    null or non-UTF-8 row is refused with its line number instead of a library traceback."""
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"data.path {path!r}: no such file")
    out: dict[str, list[tuple[str, str]]] = {}
    with file.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                raise ValueError(f"{where}: not UTF-8 ({err.reason} at byte {err.start})") from None
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: not valid JSON ({err.msg}, column {err.colno})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
            values = []
            for field in fields:
                if field not in row:
                    raise ValueError(f"{where}: no field {field!r} (fields: {sorted(row)}; set data.language_field / "
                                     "prompt_field / response_field)")
                if not isinstance(row[field], str) or not row[field].strip():
                    raise ValueError(f"{where}: field {field!r} must be non-empty text, got {row[field]!r}")
                values.append(row[field])
            out.setdefault(values[0], []).append((values[1], values[2]))
    if not out:
        raise ValueError(f"data.path {path!r}: the file has no rows")
    return out


def load_rows(cfg: DataConfig) -> dict[str, list[tuple[str, str]]]:
    """Rows of a hub dataset id or local json/jsonl/csv/parquet files, grouped by the language field."""
    path = cfg.path or ""
    suffix = path.rsplit(".", 1)[-1] if "." in path else ""
    if suffix == "jsonl":
        return read_jsonl_rows(path, (cfg.language_field, cfg.prompt_field, cfg.response_field))
    import datasets

    builder = {"json": "json", "csv": "csv", "parquet": "parquet"}.get(suffix)
    if builder:
        ds = datasets.load_dataset(builder, data_files={cfg.split: path}, split=cfg.split)
    else:
        ds = datasets.load_dataset(path, split=cfg.split)
    missing = [f for f in (cfg.language_field, cfg.prompt_field, cfg.response_field) if f not in ds.column_names]
    if missing:
        raise ValueError(f"data.path {path!r}: columns {missing} not found; columns are {ds.column_names} "
                         f"(set data.language_field / prompt_field / response_field)")
    out: dict[str, list[tuple[str, str]]] = {}
    for row in ds:
        out.setdefault(str(row[cfg.language_field]), []).append((str(row[cfg.prompt_field]), str(row[cfg.response_field])))
    return out


def load_language_data(cfg: DataConfig, languages: Sequence[str]) -> LanguageData:
    if cfg.source == "interference":
        from harness.data.interference import lab_language_data

        return lab_language_data(cfg, languages)
    if cfg.source == "chatterbot":
        from harness.data.chatterbot import load_pairs

        rows = {lang: list(load_pairs(lang)) for lang in languages}
    else:
        rows = load_rows(cfg)
    missing = [lang for lang in languages if not rows.get(lang)]
    if missing:
        raise ValueError(f"data ({cfg.source} {cfg.path or ''}): no examples for languages {missing}")
    train, held = {}, {}
    for lang in languages:
        train[lang], held[lang] = _split(lang, rows[lang], cfg)
    return LanguageData(train=train, heldout=held)


def messages(ex: Example) -> list[dict[str, str]]:
    return [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.response}]


def encode(tokenizer: Any, ex: Example, max_len: int) -> dict[str, list[int]]:
    """Chat-formatted token ids; the loss covers only the response (prompt labels are -100).

    Too long: the response keeps at least half of `max_len`, and the prompt is cut from the left so the
    assistant tag right before the response stays."""
    prompt_ids = _ids(tokenizer.apply_chat_template(messages(ex)[:1], add_generation_prompt=True, tokenize=True))
    full_ids = _ids(tokenizer.apply_chat_template(messages(ex), tokenize=True))
    response = full_ids[len(prompt_ids):]
    keep_response = min(len(response), max(max_len // 2, max_len - len(prompt_ids)))
    keep_prompt = min(len(prompt_ids), max_len - keep_response)
    prompt_part = prompt_ids[len(prompt_ids) - keep_prompt:]
    return {"input_ids": prompt_part + response[:keep_response], "labels": [-100] * keep_prompt + response[:keep_response]}


def _ids(out: Any) -> list[int]:
    if isinstance(out, dict) or hasattr(out, "input_ids"):
        out = out["input_ids"]
    return list(out)


class TokenizedLanguages(torch.utils.data.Dataset):
    """Flat dataset of tokenized examples, grouped by language in the suite's language order."""

    def __init__(self, tokenizer: Any, by_language: dict[str, Sequence[Example]], max_len: int):
        self.languages = list(by_language)
        self.rows: list[dict[str, Any]] = []
        self.index_by_language: dict[str, list[int]] = {}
        for lang_id, lang in enumerate(self.languages):
            start = len(self.rows)
            for ex in by_language[lang]:
                self.rows.append({**encode(tokenizer, ex, max_len), "language": lang_id})
            self.index_by_language[lang] = list(range(start, len(self.rows)))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


class BalancedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """`steps` batches; each holds `per_language` examples of every language, in a seed-only order.

    Each language cycles through its own permutation, reshuffled every pass from (seed, language, pass).
    """

    def __init__(self, index_by_language: dict[str, list[int]], per_language: int, steps: int, seed: int):
        empty = [lang for lang, idx in index_by_language.items() if not idx]
        if empty:
            raise ValueError(f"no training examples for languages {empty}")
        self.index_by_language, self.per_language, self.steps, self.seed = index_by_language, per_language, steps, seed

    def __len__(self) -> int:
        return self.steps

    def _stream(self, lang: str) -> Iterator[int]:
        idx, epoch = self.index_by_language[lang], 0
        while True:
            order = list(idx)
            random.Random(f"{self.seed}/{lang}/{epoch}").shuffle(order)
            yield from order
            epoch += 1

    def __iter__(self) -> Iterator[list[int]]:
        streams = {lang: self._stream(lang) for lang in self.index_by_language}
        for _ in range(self.steps):
            yield [next(streams[lang]) for lang in self.index_by_language for _ in range(self.per_language)]


def collate(pad_id: int):
    """Right-pad a list of rows into input_ids / attention_mask / labels / language tensors."""

    def _collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            ids[i, :n] = torch.tensor(r["input_ids"])
            labels[i, :n] = torch.tensor(r["labels"])
            mask[i, :n] = 1
        language = torch.tensor([r["language"] for r in rows], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels, "language": language}

    return _collate
