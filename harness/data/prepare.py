"""`polymoo data prepare NAME`: build a suite's JSONL (language, prompt, response) from a named hub dataset.

What it guarantees:

* **the suite's shape**: every language of the suite (seen and unseen), at most ``cap`` rows each, where the cap is
  the suite's ``max_examples_per_language`` (or its ``examples_per_language`` entry) grown by the held-out share, so
  that after the loader's split (:func:`harness.data.sft.load_language_data`) the training part still holds the cap;
* **determinism**: rows are cleaned (empty prompt or response dropped, repeated prompts kept once, so a prompt cannot
  fall on both sides of the held-out split), then a seeded sample per language (Python's ``random.Random`` seeded by a
  string: stable across Python and NumPy versions) kept in the dataset's order; the same inputs give the same bytes;
* **atomic writes**: the JSONL and its provenance sidecar are written to a temporary file and renamed, so a reader
  (or an interrupted run) never sees half a file;
* **provenance** (``<file>.provenance.json``): dataset id, revision asked and commit read, licence, counts per
  language (available, cap, written), the seed and the file's SHA-256;
* **one clear line when the hub is out of reach**, naming the dataset and the ways out (:func:`offline_hint`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.data.hub_sources import HubSource

PROVENANCE_SUFFIX = ".provenance.json"
SAMPLE_SALT = "polymoo-data-prepare-v1"


class PrepareError(ValueError):
    """A problem `polymoo data prepare` reports as one line (the CLI prints it without a traceback)."""


@dataclass(frozen=True)
class Row:
    prompt: str
    response: str
    index: int  # the row's position in the file(s) it came from: traceable to the source


@dataclass(frozen=True)
class PrepareSpec:
    recipe: str
    source: HubSource
    languages: tuple[str, ...]
    caps: dict[str, int]
    out: Path
    seed: int = 0
    revision: str | None = None  # None: the source's pinned revision (or the default branch)
    local_dir: Path | None = None  # a local copy of the dataset repository instead of the hub
    cache_dir: str | None = None  # datasets' cache (default: HF_DATASETS_CACHE)
    force: bool = False  # overwrite a file that `data prepare` did not build


def language_caps(languages: Sequence[str], max_examples: int, per_language: Mapping[str, int],
                  heldout_fraction: float) -> dict[str, int]:
    """Rows to write per language: n with n − round(n·f) ≥ the training cap, i.e. n = ceil(cap / (1 − f))
    (round(n·f) ≤ n·f + ½ and n − n·f ≥ cap make the integer n − round(n·f) ≥ cap)."""
    return {lang: math.ceil(per_language.get(lang, max_examples) / (1.0 - heldout_fraction)) for lang in languages}


def _prompt(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    parts = [str(row.get(c) or "").strip() for c in columns]
    return "\n\n".join(p for p in parts if p)


def clean(rows: Sequence[Row]) -> list[Row]:
    """Rows with a non-empty prompt and response, each prompt once (its first occurrence)."""
    seen: set[str] = set()
    out = []
    for row in rows:
        if row.prompt and row.response and row.prompt not in seen:
            seen.add(row.prompt)
            out.append(row)
    return out


def sample(rows: Sequence[Row], cap: int, key: str) -> list[Row]:
    """A seeded sample of at most `cap` rows, in the rows' own order."""
    if len(rows) <= cap:
        return list(rows)
    chosen = sorted(random.Random(key).sample(range(len(rows)), cap))
    return [rows[i] for i in chosen]


def source_root(source: HubSource, revision: str | None, local_dir: Path | None) -> str:
    if local_dir is not None:
        return str(local_dir)
    rev = revision or source.revision
    return f"hf://datasets/{source.dataset_id}" + (f"@{rev}" if rev else "")


def offline_hint(source: HubSource, revision: str | None = None) -> str:
    """The ways out when the hub cannot be read: a machine that reaches it, or a local copy of the repository, which
    the hub's own cache can provide offline (`datasets` resolves hf:// data files through the network even when its
    own cache holds them, so HF_DATASETS_OFFLINE alone does not help)."""
    rev = revision or source.revision
    download = f"huggingface-cli download {source.dataset_id} --repo-type dataset" + (f" --revision {rev}" if rev else "")
    return (f"run `polymoo data prepare` where huggingface.co is reachable (then copy the file and its "
            f"{PROVENANCE_SUFFIX}), or pass --from DIR with a local copy of the repository ({download} --local-dir "
            f"DIR; offline, HF_HUB_OFFLINE=1 {download} prints the snapshot folder of a hub cache that holds it)")


def read_table(source: HubSource, pattern: str, root: str, cache_dir: str | None) -> Any:
    """One `datasets` table of the source's data files (hub or local copy): the same builder call either way."""
    import datasets

    where = f"{root}/{pattern}"
    try:
        return datasets.load_dataset(source.builder, data_files={"train": where}, split="train", cache_dir=cache_dir)
    except Exception as err:  # offline mode, DNS, an HTTP client's own error class, a moved file: one line each
        # a hub read can fail in as many exception types as there are HTTP clients (requests, httpx, the hub's
        # offline errors), so every hub failure carries the way out; a local copy's does not need it
        revision = root.partition("@")[2] or None  # hf://datasets/<id>@<revision>
        hint = f"; {offline_hint(source, revision)}" if root.startswith("hf://") else ""
        raise PrepareError(f"cannot read {source.dataset_id} ({where}): {type(err).__name__}: "
                           f"{_first_line(err)}{hint}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"


def _rows(table: Any, source: HubSource, keep: Any = None) -> list[Row]:
    missing = [c for c in (*source.prompt_columns, source.response_column, source.language_column)
               if c is not None and c not in table.column_names]
    if missing:
        raise PrepareError(f"{source.dataset_id}: columns {missing} not found; the files have {table.column_names} "
                           "(the dataset changed: update harness/data/hub_sources.py or pin --revision)")
    out = []
    for i, row in enumerate(table):
        if keep is None or keep(row):
            out.append(Row(_prompt(row, source.prompt_columns), str(row[source.response_column] or "").strip(), i))
    return out


def rows_by_language(source: HubSource, languages: Sequence[str], root: str,
                     cache_dir: str | None = None) -> dict[str, list[Row]]:
    """Every row of each language, in the files' order (one file per language, or one table split by a column)."""
    unknown = [lang for lang in languages if lang not in source.codes]
    if unknown:
        raise PrepareError(f"{source.dataset_id} has no language(s) {unknown}; it has {sorted(source.codes)} "
                           "(choose another --source or change the suite's languages)")
    if source.language_column is None:
        return {lang: [r for code in source.codes[lang]
                       for r in _rows(read_table(source, source.file_for(code), root, cache_dir), source)]
                for lang in languages}
    table = read_table(source, source.files, root, cache_dir)
    wanted = {code: lang for lang in languages for code in source.codes[lang]}
    column = source.language_column
    everything = _rows(table, source)
    codes = table[column]
    out: dict[str, list[Row]] = {lang: [] for lang in languages}
    for row, code in zip(everything, codes, strict=True):
        if code in wanted:
            out[wanted[code]].append(row)
    return out


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename (atomic on POSIX)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def jsonl_bytes(chosen: Mapping[str, Sequence[Row]], source: HubSource) -> bytes:
    lines = [json.dumps({"language": lang, "prompt": r.prompt, "response": r.response, "source": source.dataset_id,
                         "source_index": r.index}, ensure_ascii=False)
             for lang, rows in chosen.items() for r in rows]
    return ("\n".join(lines) + "\n").encode("utf-8")


def provenance_path(out: Path) -> Path:
    return out.with_name(out.name + PROVENANCE_SUFFIX)


def resolved_commit(source: HubSource, revision: str | None) -> str | None:
    """The commit the hub serves for the revision (None when it cannot be asked: the files were read anyway)."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(source.dataset_id, revision=revision or source.revision).sha
    except Exception:  # offline cache, a mirror without the API: the provenance says "unknown" rather than fail
        return None


def provenance(spec: PrepareSpec, available: Mapping[str, int], chosen: Mapping[str, Sequence[Row]], data: bytes,
               commit: str | None) -> dict[str, Any]:
    import datasets

    s = spec.source
    digest = hashlib.sha256(data).hexdigest()
    return {"recipe": spec.recipe, "dataset": s.dataset_id, "url": s.url, "licence": s.licence, "note": s.note,
            "revision": spec.revision or s.revision, "commit": commit,
            "read_from": "local copy" if spec.local_dir is not None else "hub",
            "files": s.files, "builder": s.builder, "seed": spec.seed,
            "languages": {lang: {"codes": list(s.codes[lang]), "available": available[lang], "cap": spec.caps[lang],
                                 "written": len(chosen[lang])} for lang in spec.languages},
            "short": sorted(lang for lang in spec.languages if len(chosen[lang]) < spec.caps[lang]),
            "rows": sum(len(v) for v in chosen.values()), "fields": ["language", "prompt", "response"],
            "sha256": digest, "fingerprint": digest[:16], "datasets_version": datasets.__version__}


def _refuse_foreign_file(spec: PrepareSpec) -> None:
    if spec.out.exists() and not provenance_path(spec.out).exists() and not spec.force:
        raise PrepareError(f"{spec.out} exists and was not built by `polymoo data prepare` (no "
                           f"{provenance_path(spec.out).name} beside it); move it away or pass --force to replace it")


def prepare(spec: PrepareSpec) -> dict[str, Any]:
    """Build spec.out and its provenance sidecar; returns the provenance."""
    _refuse_foreign_file(spec)
    root = source_root(spec.source, spec.revision, spec.local_dir)
    raw = rows_by_language(spec.source, spec.languages, root, spec.cache_dir)
    cleaned = {lang: clean(raw[lang]) for lang in spec.languages}
    empty = [lang for lang, rows in cleaned.items() if not rows]
    if empty:
        raise PrepareError(f"{spec.source.dataset_id}: no usable rows for language(s) {empty} (empty prompts or "
                           "responses only); choose another --source")
    chosen = {lang: sample(cleaned[lang], spec.caps[lang], f"{SAMPLE_SALT}/{spec.recipe}/{spec.seed}/{lang}")
              for lang in spec.languages}
    data = jsonl_bytes(chosen, spec.source)
    commit = None if spec.local_dir is not None else resolved_commit(spec.source, spec.revision)
    record = provenance(spec, {lang: len(cleaned[lang]) for lang in spec.languages}, chosen, data, commit)
    write_atomic(spec.out, data)
    write_atomic(provenance_path(spec.out), (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode())
    return record


__all__ = ["PROVENANCE_SUFFIX", "PrepareError", "PrepareSpec", "Row", "clean", "language_caps", "offline_hint",
           "prepare", "provenance_path", "rows_by_language", "sample", "source_root", "write_atomic"]
