"""The hub datasets `polymoo data prepare` reads, and the recipes that turn them into the paper suites' JSONL.

Plain data, no torch and no `datasets` import: `polymoo check` reads it to name the command that builds a missing file.
The choice and the licences are documented in docs/data.md.

A source is read with `datasets`' packaged builders (`json`, `parquet`) from the repository's own data files
(``hf://datasets/<id>@<revision>/<file>``), or from a local copy of the repository (``--from DIR``, e.g.
``huggingface-cli download <id> --repo-type dataset --local-dir DIR``): the same call either way, which is what the
offline fixture test exercises. Reading the files rather than `load_dataset(<id>, <config>)` also works for Bactrian-X,
whose main branch still carries a loading script that `datasets` >= 4 no longer runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HubSource:
    """One multilingual instruction dataset on the hub and how its rows become (language, prompt, response)."""

    key: str
    dataset_id: str
    licence: str
    url: str
    builder: str  # datasets' packaged builder for its data files: json | parquet
    # data files under the repository root; "{code}" is the dataset's own language code (one file per language), or
    # one pattern for every language (then `language_column` tells the rows apart)
    files: str
    prompt_columns: tuple[str, ...]  # joined by a blank line, empty ones skipped (Alpaca's instruction + input)
    response_column: str
    # suite language (ISO 639-1, as in the suites) -> the dataset's code(s) for it
    codes: dict[str, tuple[str, ...]]
    language_column: str | None = None
    revision: str | None = None  # a pinned commit; None: the default branch (the provenance records the sha read)
    note: str = ""

    def languages(self) -> tuple[str, ...]:
        return tuple(self.codes)

    def file_for(self, code: str) -> str:
        return self.files.format(code=code)


_BACTRIAN_LANGUAGES = ("af", "ar", "az", "bn", "cs", "de", "en", "es", "et", "fa", "fi", "fr", "gl", "gu", "he", "hi",
                       "hr", "id", "it", "ja", "ka", "kk", "km", "ko", "lt", "lv", "mk", "ml", "mn", "mr", "my", "ne",
                       "nl", "pl", "ps", "pt", "ro", "ru", "si", "sl", "sv", "sw", "ta", "te", "th", "tl", "tr", "uk",
                       "ur", "vi", "xh", "zh")

BACTRIAN_X = HubSource(
    key="bactrian_x", dataset_id="MBZUAI/Bactrian-X", licence="CC BY-NC 4.0",
    url="https://huggingface.co/datasets/MBZUAI/Bactrian-X", builder="json", files="data/{code}.json.gz",
    prompt_columns=("instruction", "input"), response_column="output",
    # Bactrian-X's 52 languages (mBART-50's) use ISO 639-1 codes, one file per language
    codes={lang: (lang,) for lang in _BACTRIAN_LANGUAGES},
    revision="3698480a001cb3f62c61c314d4acb181eb31e983",  # "v1.0.1", the data release the loading script reads
    note="67k instructions (Alpaca 52k + Dolly 15k) machine-translated into 51 languages, answered by gpt-3.5-turbo; "
         "the same instructions in every language; non-commercial licence (and OpenAI's terms on the responses)")

AYA_DATASET = HubSource(
    key="aya", dataset_id="CohereLabs/aya_dataset", licence="Apache-2.0",
    url="https://huggingface.co/datasets/CohereLabs/aya_dataset", builder="parquet", files="data/train-*.parquet",
    prompt_columns=("inputs",), response_column="targets", language_column="language_code",
    codes={"en": ("eng",), "fr": ("fra",), "de": ("deu",), "es": ("spa",), "ru": ("rus",), "zh": ("zho",),
           "sw": ("swa", "swh"), "tr": ("tur",), "th": ("tha",), "vi": ("vie",), "it": ("ita",), "pt": ("por",),
           "nl": ("nld",), "id": ("ind",), "ja": ("jpn",), "ko": ("kor",), "hi": ("hin",), "pl": ("pol",),
           "uk": ("ukr",), "sv": ("swe",)},
    note="204k prompt/completion pairs written by fluent speakers (formerly CohereForAI/aya_dataset); per-language "
         "counts are uneven, so some languages may fall short of a suite's cap (the provenance lists them)")

SOURCES: dict[str, HubSource] = {s.key: s for s in (BACTRIAN_X, AYA_DATASET)}


@dataclass(frozen=True)
class Recipe:
    """A data file a suite names and how `polymoo data prepare NAME` builds it."""

    name: str
    suite: str  # the suite whose languages, caps and data.path the recipe follows
    path: str  # the file it writes: the suite's data.path (a test keeps the two equal)
    source: str  # default key into SOURCES; `--source` picks another
    purpose: str
    alternatives: tuple[str, ...] = field(default=())


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe(name="bkmoo_sft", suite="suites/bkmoo_paper.yaml", path="data/bkmoo_sft.jsonl", source="bactrian_x",
           purpose="Bucket-Level MOO's multilingual instruction data (SFT); its held-out split is the suite's "
                   "heldout_fraction of the same file",
           alternatives=("aya",)),
    Recipe(name="congrad_prompts", suite="suites/congrad_paper.yaml", path="data/congrad_prompts.jsonl",
           source="bactrian_x",
           purpose="CONGRAD's multilingual prompts for the self-rewarding loop (the response is the reference the "
                   "offline judge and the held-out loss use); the held-out split gives the win-rate prompts",
           alternatives=("aya",)),
)}


def recipe_for_path(path: str) -> Recipe | None:
    """The recipe that builds `path` (as a suite writes it under data.path), if any."""
    wanted = path.removeprefix("./")
    return next((r for r in RECIPES.values() if r.path == wanted), None)


__all__ = ["AYA_DATASET", "BACTRIAN_X", "RECIPES", "SOURCES", "HubSource", "Recipe", "recipe_for_path"]
