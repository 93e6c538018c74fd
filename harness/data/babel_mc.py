"""Language-controlled multiple-choice items built from CLDR's parallel names (babel, BSD-3).

Item: "'Germany' in Swahili:" with four candidate names *in Swahili*; one is the translation of
"Germany", three are names of other countries (or languages / months / weekdays) in the same language.
The same English questions are asked in every language, so accuracies are comparable across languages.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from babel import Locale

from harness.languages import CLDR_LOCALES, ENGLISH_NAMES

# Fixed sets of CLDR keys, so every language is asked the same questions.
COUNTRIES = ("DE", "FR", "ES", "IT", "PT", "NL", "GB", "US", "CN", "JP", "KR", "IN", "BR", "MX", "RU", "TR", "EG",
             "NG", "KE", "ZA", "AR", "CA", "AU", "SE", "NO", "FI", "PL", "GR", "IR", "IQ", "SA", "ID", "TH", "VN",
             "PK", "BD", "UA", "CH", "AT", "BE", "DK", "IE", "IL", "MA", "ET", "PE", "CL", "CO", "NZ", "PH")
LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "nl", "ru", "zh", "ja", "ko", "ar", "hi", "tr", "sv", "pl", "el",
             "fa", "he", "id", "th", "vi", "uk", "sw")
MONTHS = tuple(range(1, 13))
WEEKDAYS = tuple(range(7))


@dataclass(frozen=True)
class MCItem:
    language: str
    category: str
    key: str
    query: str
    choices: tuple[str, ...]
    gold: int

    def as_record(self) -> dict:
        return {"language": self.language, "category": self.category, "key": self.key, "query": self.query,
                "choices": list(self.choices), "gold": self.gold}


def _locale(code: str) -> Locale:
    return Locale.parse(CLDR_LOCALES.get(code, code))


@functools.cache
def _names(code: str) -> dict[str, dict[str, str]]:
    """category -> CLDR key -> name in language `code`."""
    loc = _locale(code)
    return {
        "country": {k: loc.territories[k] for k in COUNTRIES if k in loc.territories},
        "language": {k: loc.languages[k] for k in LANGUAGES if k in loc.languages},
        "month": {str(k): loc.months["format"]["wide"][k] for k in MONTHS},
        "weekday": {str(k): loc.days["format"]["wide"][k] for k in WEEKDAYS},
    }


def all_cldr_names() -> list[str]:
    """Every CLDR name of every offline language, fixed order (tokenizer training text)."""
    from harness.languages import CHATTERBOT_DIRS

    return [name for code in sorted(CHATTERBOT_DIRS) for cat in _names(code).values() for name in cat.values()]


def make_items(code: str, n_items: int, seed: int = 0, n_choices: int = 4) -> list[MCItem]:
    """Up to `n_items` items for language `code`, deterministic for `seed`; the same keys for every language."""
    if code not in ENGLISH_NAMES:
        raise KeyError(f"unknown language {code!r}")
    english, local = _names("en"), _names(code)
    rng = random.Random(f"babel-mc/{seed}")
    keys = [(cat, key) for cat in ("country", "language", "month", "weekday") for key in english[cat]]
    rng.shuffle(keys)
    items: list[MCItem] = []
    for cat, key in keys:
        if len(items) >= n_items:
            break
        if key not in local[cat]:
            continue
        answer = local[cat][key]
        pool = sorted({v for k, v in local[cat].items() if k != key and v != answer})
        if len(pool) < n_choices - 1:
            continue
        distractors = random.Random(f"{seed}/{cat}/{key}").sample(pool, n_choices - 1)
        gold = random.Random(f"{seed}/{cat}/{key}/gold").randrange(n_choices)
        choices = distractors[:gold] + [answer] + distractors[gold:]
        query = f"\"{english[cat][key]}\" in {ENGLISH_NAMES[code]}:"
        items.append(MCItem(code, cat, key, query, tuple(choices), gold))
    return items
