"""Judges: score a (prompt, response) pair. `self` asks the model with an additive 5-point rubric; `reference`
computes chrF against the prompt's reference answer (deterministic, for offline data and tiny random models).

Score parsing of the `self` judge (`parse_score`), documented behaviour:
- ``empty``: None or whitespace-only text -> dropped (no score), counted;
- ``ok``: the *last* ``Score: X`` (case-insensitive; ``:``, ``=`` or ``-`` or nothing as separator; markdown ``**``
  allowed; optional ``/5`` or ``out of 5``; integer or decimal X) with 0 <= X <= 5 -> X;
- ``recovered``: no ``Score`` label, but a fraction ``X/5`` or ``X out of 5`` (last one) with X in range -> X;
- ``out_of_range``: a number was found by the rules above but lies outside [0, 5] -> dropped (never clamped: the judge
  did not follow the rubric), counted;
- ``unparseable``: anything else -> dropped, counted.
Parsing never raises. The parse rate reported per language is (ok + recovered) / all judgments.
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_SCORE = 5.0
STATUSES = ("ok", "recovered", "out_of_range", "empty", "unparseable")

# The additive 5-point rubric of the self-rewarding recipe (Yuan et al. 2024, Fig. 2), lightly shortened.
RUBRIC_PROMPT = """Review the user's question and the corresponding response using the additive 5-point scoring \
system described below. Points are accumulated based on the satisfaction of each criterion:
- Add 1 point if the response is relevant and provides some information related to the user's inquiry, even if it \
is incomplete or contains some irrelevant content.
- Add another point if the response addresses a substantial portion of the user's question, but does not completely \
resolve the query or provide a direct answer.
- Award a third point if the response answers the basic elements of the user's question in a useful way.
- Grant a fourth point if the response is clearly written from an AI Assistant's perspective, addressing the user's \
question directly and comprehensively, and is well-organized and helpful.
- Bestow a fifth point for a response that is impeccably tailored to the user's question, without extraneous \
information, reflecting expert knowledge, and demonstrating a high-quality, engaging, and insightful answer.
The response must be in the language of the question.

User: {prompt}
<response>{response}</response>

After examining the user's instruction and the response:
- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: "Score: <total points>"
"""

_NUM = r"([-+]?\d+(?:[.,]\d+)?)"
_LABELLED = re.compile(r"score\s*\**\s*(?:[:=\-]\s*)?\**\s*" + _NUM + r"(?:\s*(?:/|out\s+of)\s*5(?:[.,]0)?)?",
                       re.IGNORECASE)
_FRACTION = re.compile(_NUM + r"\s*(?:/|out\s+of)\s*5(?!\d|[.,]\d)", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedScore:
    score: float | None
    status: str  # one of STATUSES

    @property
    def ok(self) -> bool:
        return self.score is not None


def _number(text: str) -> float | None:
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_score(text: str | None, max_score: float = MAX_SCORE) -> ParsedScore:
    """Parse a judgment into a score in [0, max_score]; see the module docstring for every case. Never raises."""
    if text is None or not str(text).strip():
        return ParsedScore(None, "empty")
    text = str(text)
    for pattern, status in ((_LABELLED, "ok"), (_FRACTION, "recovered")):
        matches = pattern.findall(text)
        if matches:
            value = _number(matches[-1])
            if value is None:
                return ParsedScore(None, "unparseable")
            if not 0.0 <= value <= max_score:
                return ParsedScore(None, "out_of_range")
            return ParsedScore(value, status)
    return ParsedScore(None, "unparseable")


# ---------------------------------------------------------------------------------------------------------------------
# chrF (Popović 2015), sacrebleu-compatible defaults: character n-grams 1..6, beta = 2, whitespace removed, no word
# n-grams, no epsilon smoothing: F-beta of the precision and recall averaged over the orders both sides have.
# ---------------------------------------------------------------------------------------------------------------------


def _char_ngrams(text: str, n: int) -> Counter:
    return Counter(text[i: i + n] for i in range(len(text) - n + 1))


def chrf(hypothesis: str, reference: str, order: int = 6, beta: float = 2.0) -> float:
    """Sentence chrF in [0, 100] (sacrebleu `CHRF()` sentence score)."""
    hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
    factor = beta ** 2
    avg_prec = avg_rec = 0.0
    effective = 0
    for n in range(1, order + 1):
        h, r = _char_ngrams(hyp, n), _char_ngrams(ref, n)
        n_hyp, n_ref = sum(h.values()), sum(r.values())
        if n_hyp > 0 and n_ref > 0:
            match = sum((h & r).values())
            avg_prec += match / n_hyp
            avg_rec += match / n_ref
            effective += 1
    if effective == 0:
        return 0.0
    avg_prec, avg_rec = avg_prec / effective, avg_rec / effective
    if avg_prec + avg_rec == 0:
        return 0.0
    return 100.0 * (1 + factor) * avg_prec * avg_rec / (factor * avg_prec + avg_rec)


# ---------------------------------------------------------------------------------------------------------------------
# judges
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Judgments:
    """Scores (None = dropped) and parse statuses of a list of responses, plus raw judge outputs."""

    scores: list[float | None]
    statuses: list[str]
    raw: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        c = Counter(self.statuses)
        return {s: c.get(s, 0) for s in STATUSES}

    @property
    def parse_rate(self) -> float:
        return sum(s is not None for s in self.scores) / max(len(self.scores), 1)


FIT_SLACK = 8
"""Tokens a re-encoded cut may differ by (BPE merges at the cut): generation's own left cut is only a safety net."""


def fit_judge_prompt(tokenizer: Any, prompt: str, response: str, max_tokens: int) -> tuple[str, bool]:
    """The rubric prompt in at most ``max_tokens`` tokens (chat template included): the rubric and the instructions
    always whole, the question kept (up to half the room when both are long), the response cut at its end: the judge
    sees what it is asked to score and how. Returns (prompt, whether anything was cut)."""
    from harness.preference.generation import chat_prompt_ids

    whole = RUBRIC_PROMPT.format(prompt=prompt, response=response)
    if len(chat_prompt_ids(tokenizer, whole)) <= max_tokens:
        return whole, False
    room = max_tokens - len(chat_prompt_ids(tokenizer, RUBRIC_PROMPT.format(prompt="", response=""))) - FIT_SLACK
    if room < 2:
        raise ValueError(f"max_judge_prompt_tokens={max_tokens} leaves no room for the question and the response "
                         "beside the rubric; raise it")
    q = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    r = tokenizer(response, add_special_tokens=False)["input_ids"]
    keep_q = min(len(q), max(room - len(r), room // 2))
    text = RUBRIC_PROMPT.format(prompt=tokenizer.decode(q[:keep_q]), response=tokenizer.decode(r[: room - keep_q]))
    return text, True


class ReferenceJudge:
    """chrF of the response against the reference answer: deterministic, needs no model."""

    name = "reference"
    max_score = 100.0

    def judge(self, model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
              references: Sequence[str]) -> Judgments:
        t0 = time.perf_counter()
        scores: list[float | None] = []
        statuses = []
        for response, reference in zip(responses, references, strict=True):
            if not response.strip():
                scores.append(0.0)  # an empty answer is a valid, worst answer (not a parse failure)
            else:
                scores.append(round(chrf(response, reference), 6))
            statuses.append("ok")
        return Judgments(scores, statuses, [], time.perf_counter() - t0)


class SelfJudge:
    """The model judges its own answers with the additive 5-point rubric (greedy decoding), scores parsed robustly."""

    name = "self"
    max_score = MAX_SCORE

    def __init__(self, max_new_tokens: int = 64, batch_size: int = 16, prompt_max_tokens: int = 1024):
        self.max_new_tokens, self.batch_size, self.prompt_max_tokens = max_new_tokens, batch_size, prompt_max_tokens
        self.truncated = 0  # judge prompts whose response (or question) was shortened to fit

    def judge(self, model: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str],
              references: Sequence[str]) -> Judgments:
        from harness.preference.generation import generate

        t0 = time.perf_counter()
        fitted = [fit_judge_prompt(tokenizer, p, r, self.prompt_max_tokens)
                  for p, r in zip(prompts, responses, strict=True)]
        self.truncated += sum(cut for _, cut in fitted)
        outs = generate(model, tokenizer, [text for text, _ in fitted], n=1, do_sample=False,
                        max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, seed=0,
                        max_prompt_tokens=self.prompt_max_tokens + FIT_SLACK).texts
        raw = [o[0] for o in outs]
        parsed = [parse_score(t) for t in raw]
        return Judgments([p.score for p in parsed], [p.status for p in parsed], raw, time.perf_counter() - t0)


JUDGES = ("self", "reference")


def make_judge(name: str, **kwargs: Any) -> ReferenceJudge | SelfJudge:
    if name == "reference":
        return ReferenceJudge()
    if name == "self":
        return SelfJudge(**kwargs)
    raise ValueError(f"unknown judge {name!r}; allowed: {list(JUDGES)}")
