"""The controlled-interference lab (`data.source: interference`): synthetic languages over one shared task, with
conflict, relatedness and imbalance as knobs. The construction and its anchors are in docs/interference_lab.md.

The task: a lexicon of `concepts` concepts; an item is a sequence of `item_length` concepts, written in the prompt with
the language's surface words; the response glosses it word by word: each word, then the word of its *answer concept*
(" w1 a(w1) w2 a(w2) ..."), so an answer is a lookup from the token right before it. Every language agrees
on the answer map, except on the contested concepts (a fraction `conflict` of them), where the `dissenters` demand
another answer. With shared surface words (`relatedness` 1) a contested word is one input token that the two camps
map to two different output tokens: their gradients on it point in opposite directions, and nothing in the prompt
tells the languages apart. Language-specific words (relatedness < 1) make the languages distinguishable again.
With `answer_vocabulary: separate` the answers are written with words of their own that never appear as inputs, so the
token before a gloss word tells whether it is to be answered (with the input words as answers, that takes an attention
pattern over the gloss, learned at a seed-dependent step).

Surface words are single tokens of the frozen tiny tokenizer, so a word is a token and the per-word accuracy is exact.
What a language's examples are depends on (data config, language code) only, never on which other languages a suite
trains with: a language alone, in a pair and in the full suite sees the same data (the interference matrix needs it).
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from harness.config import LAB_LANGUAGES, DataConfig
from harness.data.sft import Example, LanguageData

LAB_VERSION = 1  # bump when the construction changes (it names the generator streams)
WORD = re.compile(r"Ġ[a-z]{3,7}")  # space-prefixed lowercase words of the byte-level BPE: one token each
SLOTS = 1 + len(LAB_LANGUAGES)  # the shared word of a concept, and one word per lab language


@functools.cache
def word_pool() -> tuple[str, ...]:
    """The single-token lowercase words of the frozen tiny tokenizer, sorted (407 of them)."""
    from harness.models.tokenizer import offline_tokenizer

    return tuple(sorted(t[1:] for t in offline_tokenizer().get_vocab() if WORD.fullmatch(t)))


def _rng(cfg: DataConfig, *parts: object) -> random.Random:
    return random.Random("/".join(str(p) for p in ("polymoo-lab", LAB_VERSION, cfg.seed, *parts)))


@dataclass(frozen=True)
class Lab:
    """The generated language structure: surface words and answer maps per language, and which concepts are
    contested. Everything is a function of the data config; `language(code)` does not look at other languages."""

    cfg: DataConfig

    @property
    def _slots(self) -> int:
        """Words per concept: input words in slots 0..SLOTS-1 and, with separate answer words, answer words in the
        next SLOTS (the input words keep their places, so the default construction is unchanged)."""
        return SLOTS * (2 if self.cfg.answer_vocabulary == "separate" else 1)

    @functools.cached_property
    def _words(self) -> list[str]:
        pool = list(word_pool())
        if len(pool) < self._slots * self.cfg.concepts:
            raise ValueError(f"data.concepts {self.cfg.concepts}: the tokenizer has {len(pool)} single-token words, "
                             f"enough for {len(pool) // self._slots} concepts ({self._slots} words each)")
        _rng(self.cfg, "words").shuffle(pool)
        return pool

    @functools.cached_property
    def shared(self) -> frozenset[int]:
        """Concepts written with one word shared by every language (a fraction `relatedness`)."""
        order = list(range(self.cfg.concepts))
        _rng(self.cfg, "shared").shuffle(order)
        return frozenset(order[: round(self.cfg.relatedness * self.cfg.concepts)])

    @functools.cached_property
    def contested(self) -> frozenset[int]:
        """Concepts whose answer the dissenters contest (a fraction `conflict`, rounded to whole concepts)."""
        order = list(range(self.cfg.concepts))
        _rng(self.cfg, "contested").shuffle(order)
        return frozenset(order[: round(self.cfg.conflict * self.cfg.concepts)])

    @functools.cached_property
    def answers(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(agreed answer map, dissenting answer map): two maps concept -> concept that differ on every concept."""
        n = self.cfg.concepts
        agreed = list(range(n))
        _rng(self.cfg, "answers").shuffle(agreed)
        shift = 1 + _rng(self.cfg, "dissent").randrange(n - 1)  # a cyclic shift of the agreed map: never equal
        return tuple(agreed), tuple(agreed[(c + shift) % n] for c in range(n))

    def surface(self, code: str, answer: bool = False) -> tuple[str, ...]:
        """The word of every concept in language `code` (slot 0: shared words; slot i: lab<i>'s own words); with
        `answer` and separate answer words, the words an answer is written with (the same sharing)."""
        slot = int(code.removeprefix("lab"))
        n = self.cfg.concepts
        base = SLOTS * n if answer and self.cfg.answer_vocabulary == "separate" else 0
        return tuple(self._words[base + (0 if c in self.shared else slot * n) + c] for c in range(n))

    def answer_map(self, code: str) -> tuple[int, ...]:
        agreed, dissent = self.answers
        if code not in self.cfg.dissenters:
            return agreed
        return tuple(dissent[c] if c in self.contested else agreed[c] for c in range(self.cfg.concepts))

    def example(self, code: str, items: Sequence[int]) -> Example:
        words, answer_words, answer = self.surface(code), self.surface(code, answer=True), self.answer_map(code)
        prompt = " " + " ".join(words[c] for c in items)  # the leading space keeps every word its Ġ-token
        response = " " + " ".join(f"{words[c]} {answer_words[answer[c]]}" for c in items)  # gloss: word, its answer
        return Example(code, prompt, response)


def _sequences(rng: random.Random, n: int, cfg: DataConfig, exclude: set[tuple[int, ...]]) -> list[tuple[int, ...]]:
    if cfg.concepts ** cfg.item_length < n + len(exclude):
        raise ValueError(f"data: {cfg.concepts}^{cfg.item_length} distinct items cannot give {n} training and "
                         f"{len(exclude)} held-out items; raise data.concepts or data.item_length")
    out: list[tuple[int, ...]] = []
    taken = set(exclude)
    while len(out) < n:
        seq = tuple(rng.randrange(cfg.concepts) for _ in range(cfg.item_length))
        if seq not in taken:
            taken.add(seq)
            out.append(seq)
    return out


def heldout_size(cfg: DataConfig) -> int:
    """Held-out items per language: the same parallel items for every language, whatever its training size."""
    return max(1, round(cfg.heldout_fraction * cfg.max_examples_per_language))


def lab_language_data(cfg: DataConfig, languages: Sequence[str]) -> LanguageData:
    """Training items (distinct, per language, `examples_per_language` or `max_examples_per_language` of them) and the
    parallel held-out items (the same concept sequences in every language, never in any training set)."""
    unknown = [code for code in languages if code not in LAB_LANGUAGES]
    if unknown:
        raise ValueError(f"data.source interference generates {', '.join(sorted(LAB_LANGUAGES))}; not {unknown}")
    lab = Lab(cfg)
    held_seqs = _sequences(_rng(cfg, "heldout"), heldout_size(cfg), cfg, set())
    train, held = {}, {}
    for code in languages:
        n = cfg.examples_per_language.get(code, cfg.max_examples_per_language)
        seqs = _sequences(_rng(cfg, "train", code), n, cfg, set(held_seqs))
        train[code] = tuple(lab.example(code, s) for s in seqs)
        held[code] = tuple(lab.example(code, s) for s in held_seqs)
    return LanguageData(train=train, heldout=held)


def parallel_texts(cfg: DataConfig, languages: Sequence[str]) -> dict[str, list[str]]:
    """Every language's held-out items as text, prompt then gloss: the same concept sequences in every language, in
    one order. The parallel texts of representation probes (harness.analysis.separability), which have no CLDR names
    for lab languages."""
    held = lab_language_data(cfg, languages).heldout
    return {code: [example.prompt + example.response for example in held[code]] for code in languages}


def describe(cfg: DataConfig, languages: Sequence[str]) -> dict[str, object]:
    """What the lab generated, for logs and docs: contested / shared concepts and the camps."""
    lab = Lab(cfg)
    return {"concepts": cfg.concepts, "contested": sorted(lab.contested), "shared": sorted(lab.shared),
            "dissenters": [c for c in languages if c in cfg.dissenters],
            "agreeing": [c for c in languages if c not in cfg.dissenters]}


def heldout_accuracy(model: object, tokenizer: object, examples: dict[str, Sequence[Example]], max_len: int,
                     item_length: int, batch_size: int = 16) -> dict[str, float]:
    """Per language, on the answer words only (the glossed word before each is given: teacher forcing):
    'eval/acc/<lang>', the share predicted right, and 'eval/answer_loss/<lang>', their mean cross-entropy.
    A word is one token, so these are the task's accuracy and loss. The answers are where the conflict lives; the
    copied words of the gloss (the other half of the response) are the same task in every language."""
    import torch

    from harness.data.sft import TokenizedLanguages, collate

    was_training = model.training  # type: ignore[attr-defined]
    model.eval()  # type: ignore[attr-defined]
    dataset = TokenizedLanguages(tokenizer, examples, max_len)
    pad = collate(tokenizer.pad_token_id)  # type: ignore[attr-defined]
    device = next(model.parameters()).device  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    with torch.no_grad():
        for lang, idx in dataset.index_by_language.items():
            right = total = 0
            nll = 0.0
            for i in range(0, len(idx), batch_size):
                batch = pad([dataset[j] for j in idx[i: i + batch_size]])
                logits = model(input_ids=batch["input_ids"].to(device),  # type: ignore[operator]
                               attention_mask=batch["attention_mask"].to(device)).logits[:, :-1].float().cpu()
                labels = batch["labels"][:, 1:]
                for row in range(labels.shape[0]):
                    where = (labels[row] != -100).nonzero().flatten()[1: 2 * item_length: 2]  # the answers
                    logp = torch.log_softmax(logits[row, where], dim=-1)
                    nll -= float(logp.gather(1, labels[row, where, None]).sum())
                    right += int((logp.argmax(-1) == labels[row, where]).sum())
                    total += len(where)
            out[f"eval/acc/{lang}"] = right / max(total, 1)
            out[f"eval/answer_loss/{lang}"] = nll / max(total, 1)
    model.train(was_training)  # type: ignore[attr-defined]
    return out
