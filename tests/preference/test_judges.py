"""Judge parsing (every documented case), chrF, the reference judge, and pair building."""

from __future__ import annotations

import pytest

from harness.preference.judges import RUBRIC_PROMPT, ReferenceJudge, chrf, make_judge, parse_score
from harness.preference.pairs import build_pairs


@pytest.mark.parametrize("text, score, status", [
    # well-formed
    ("The answer is relevant and helpful.\nScore: 4", 4.0, "ok"),
    ("Score: 5", 5.0, "ok"),
    ("Score: 0", 0.0, "ok"),
    ("score:3", 3.0, "ok"),
    ("**Score:** 2", 2.0, "ok"),
    ("Score = 3/5", 3.0, "ok"),
    ("Score: 4 out of 5", 4.0, "ok"),
    ("Score: 3.5", 3.5, "ok"),
    ("Score: 3,5", 3.5, "ok"),
    ("First I thought Score: 2, but on reflection Score: 4", 4.0, "ok"),  # the last labelled score wins
    # malformed but recoverable
    ("I would give this 3/5.", 3.0, "recovered"),
    ("Overall: 4 out of 5 points", 4.0, "recovered"),
    # out of range: dropped, never clamped
    ("Score: 7", None, "out_of_range"),
    ("Score: -1", None, "out_of_range"),
    ("Score: 12/5", None, "out_of_range"),
    ("This deserves 9/5!", None, "out_of_range"),
    # empty
    ("", None, "empty"),
    ("   \n\t ", None, "empty"),
    (None, None, "empty"),
    # unparseable
    ("The response is fine.", None, "unparseable"),
    ("Score: great", None, "unparseable"),
    ("4", None, "unparseable"),  # a bare number is not a judgment
    ("�emozioneさ емоধHi複self", None, "unparseable"),
])
def test_parse_score_cases(text, score, status):
    parsed = parse_score(text)
    assert parsed.status == status
    assert parsed.score == score


def test_parse_score_never_raises_on_garbage():
    for text in ["Score: 1e999", "Score: ", "Score:::::", "/5/5/5", "score 5/5/5", "\x00\x01", "Score: ٣", "9" * 5000]:
        parsed = parse_score(text)
        assert parsed.status in ("ok", "recovered", "out_of_range", "empty", "unparseable")
        assert parsed.score is None or 0 <= parsed.score <= 5


def test_rubric_prompt_mentions_format():
    text = RUBRIC_PROMPT.format(prompt="Q", response="A")
    assert "Score: <total points>" in text and "additive 5-point" in text


def test_chrf_matches_sacrebleu():
    sacrebleu = pytest.importorskip("sacrebleu")
    metric = sacrebleu.metrics.CHRF()
    cases = [("the cat sat on the mat", "the cat is on the mat"), ("Bonjour à tous", "Bonjour tout le monde"),
             ("", "reference"), ("abc", ""), ("identical text", "identical text"), ("x", "y"),
             ("Guten Tag, wie geht's?", "Mir geht es gut."), ("日本語のテキスト", "日本語の文章")]
    for hyp, ref in cases:
        assert chrf(hyp, ref) == pytest.approx(metric.sentence_score(hyp, [ref]).score, abs=1e-6), (hyp, ref)


def test_chrf_properties():
    assert chrf("same", "same") == pytest.approx(100.0)
    assert chrf("", "abc") == 0.0
    assert chrf("abcd", "xyz") == 0.0
    assert chrf("the cat sat", "the cat sat on the mat") > chrf("dog", "the cat sat on the mat")


def test_reference_judge_deterministic_and_empty_is_worst():
    judge = make_judge("reference")
    assert isinstance(judge, ReferenceJudge)
    args = (None, None, ["p"] * 3, ["hello world", "", "hello"], ["hello world"] * 3)
    a, b = judge.judge(*args), judge.judge(*args)
    assert a.scores == b.scores
    assert a.scores[0] == pytest.approx(100.0) and a.scores[1] == 0.0 and 0 < a.scores[2] < 100
    assert a.parse_rate == 1.0


def test_unknown_judge():
    with pytest.raises(ValueError, match="unknown judge"):
        make_judge("gpt4")


def test_build_pairs_best_vs_worst_ties_and_too_few():
    prompts = ["p1", "p2", "p3", "p4", "p5"]
    responses = [["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c"], ["s1", "s2", "x"], ["a", "b", "c"]]
    scores = [[1.0, 3.0, 2.0], [2.0, 2.0, 2.0], [None, 4.0, None], [3.0, 1.0, None], [1.0, 5.0, 1.0]]
    pairs, stats = build_pairs("en", prompts, responses, scores, ["r"] * 5)
    assert stats.prompts == 5 and stats.ties == 1 and stats.too_few_scored == 1
    by_prompt = {p.prompt: p for p in pairs}
    assert set(by_prompt) == {"p1", "p4", "p5"}
    assert (by_prompt["p1"].chosen, by_prompt["p1"].rejected) == ("b", "a")
    assert by_prompt["p5"].rejected == "a"  # equal worst scores: first occurrence
    assert by_prompt["p4"].chosen_score == 3.0 and by_prompt["p4"].rejected_score == 1.0


def test_build_pairs_identical_texts_and_min_gap():
    pairs, stats = build_pairs("en", ["p"], [["same", "same"]], [[4.0, 1.0]])
    assert not pairs and stats.ties == 1
    pairs, stats = build_pairs("en", ["p"], [["a", "b"]], [[1.5, 1.0]], min_gap=0.5)
    assert not pairs and stats.ties == 1


def test_judge_prompt_keeps_the_rubric_and_question_and_cuts_the_response():
    """A long response no longer pushes the rubric out of the judge's prompt (it was cut from the left at 512)."""
    from harness.models.tokenizer import offline_tokenizer
    from harness.preference.generation import chat_prompt_ids
    from harness.preference.judges import FIT_SLACK, fit_judge_prompt

    tok = offline_tokenizer()
    short, cut = fit_judge_prompt(tok, "How are you?", "Fine.", 2048)
    assert not cut and short == RUBRIC_PROMPT.format(prompt="How are you?", response="Fine.")
    text, cut = fit_judge_prompt(tok, "How are you?", "very long answer " * 400, 700)
    assert cut and len(chat_prompt_ids(tok, text)) <= 700 + FIT_SLACK
    assert text.startswith(RUBRIC_PROMPT.split("{prompt}")[0]) and "User: How are you?\n" in text
    assert 'Conclude with the score using the format: "Score: <total points>"' in text
    assert "very long answer" in text  # the response is cut, not dropped
    with pytest.raises(ValueError, match="max_judge_prompt_tokens=50"):
        fit_judge_prompt(tok, "q", "r" * 2000, 50)


def test_generation_stops_at_the_chat_templates_end_of_turn():
    from harness.preference.generation import _until_stop, stop_token_ids

    class Tok:  # Gemma's layout: eos is <eos>, turns end with <end_of_turn>
        eos_token_id = 1

        def get_vocab(self):
            return {"<eos>": 1, "<end_of_turn>": 107, "hello": 5}

    stops = stop_token_ids(Tok())
    assert stops == [1, 107]
    assert _until_stop([5, 5, 107, 9, 9], set(stops)) == [5, 5, 107]
    assert _until_stop([5, 5], set(stops)) == [5, 5]
