"""Q/A pairs of the `chatterbot-corpus` package (BSD-3), 28 languages, read from its YAML files offline."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

from harness.languages import CHATTERBOT_DIRS


def corpus_root() -> Path:
    import chatterbot_corpus

    return Path(chatterbot_corpus.__file__).parent / "data"


@functools.cache
def load_pairs(code: str) -> tuple[tuple[str, str], ...]:
    """Consecutive (turn, next turn) pairs of every conversation of language `code`, deduplicated, in file order."""
    if code not in CHATTERBOT_DIRS:
        raise KeyError(f"no chatterbot-corpus data for language {code!r}; available: {', '.join(sorted(CHATTERBOT_DIRS))}")
    folder = corpus_root() / CHATTERBOT_DIRS[code]
    seen: set[tuple[str, str]] = set()
    pairs: list[tuple[str, str]] = []
    for path in sorted(folder.glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in data.get("conversations") or []:
            turns = [str(t).strip() for t in conversation if t is not None and str(t).strip()]
            for prompt, response in zip(turns, turns[1:], strict=False):
                if (prompt, response) not in seen:
                    seen.add((prompt, response))
                    pairs.append((prompt, response))
    return tuple(pairs)
