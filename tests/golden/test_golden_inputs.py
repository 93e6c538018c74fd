"""The golden comparison names what moved: an input whose fingerprint changed (a fixture example, the tokenizer,
the initial weights, the config, a package version) first, and says "the code changed" only when none did."""

from __future__ import annotations

import json

import pytest

from tests.conftest import DATA_SLICE
from tests.golden.cases import golden_inputs, golden_path, golden_verdict, moved_inputs

LABEL = "joint_sft"


@pytest.fixture(scope="module")
def current():
    return golden_inputs(LABEL)


def _record() -> dict:
    return json.loads(golden_path(LABEL).read_text())


def _result(record: dict, shift: float = 0.0) -> dict:
    return {"loss": [x + shift for x in record["loss"]], "loss_by_language": record["loss_by_language"]}


def test_inputs_of_the_committed_record_are_todays(current):
    assert moved_inputs(_record()["inputs"], current) == [], "the golden inputs moved: see test_golden.py's message"


def test_unchanged_inputs_and_trajectory_pass(current):
    assert golden_verdict(LABEL, _record(), current, _result(_record())) is None


def test_a_moved_trajectory_with_unchanged_inputs_blames_the_code(current):
    message = golden_verdict(LABEL, _record(), current, _result(_record(), shift=0.01))
    assert "no input changed" in message and "the code changed" in message and "departs at step 0" in message


def test_one_changed_fixture_example_is_named_before_the_trajectory(tmp_path, current):
    from harness.data.sft import load_language_data
    from tests.methods._tiny import make_suite

    # change one example the case trains on (found through the case's own split), in a scratch copy of the fixture
    suite = make_suite({"languages": {"seen": ["en", "fr", "de", "es"], "unseen": []},
                        "data": {"source": "json", "path": str(DATA_SLICE), "max_examples_per_language": 40}})
    used = load_language_data(suite.data, suite.languages.all).train["fr"][0]
    lines = DATA_SLICE.read_text(encoding="utf-8").splitlines()
    index = next(i for i, line in enumerate(lines) if json.loads(line) == {"language": "fr", "prompt": used.prompt,
                                                                           "response": used.response})
    lines[index] = json.dumps({"language": "fr", "prompt": used.prompt, "response": used.response + " !"},
                              ensure_ascii=False)
    scratch = tmp_path / DATA_SLICE.name
    scratch.write_text("\n".join(lines) + "\n", encoding="utf-8")

    changed = golden_inputs(LABEL, data_file=scratch)
    assert {k for k in current if current[k] != changed[k]} == {"data_file", "data"}
    message = golden_verdict(LABEL, _record(), changed, _result(_record()))
    assert message.index("data fixture tests/fixtures/chatterbot_slice.jsonl") < message.index("trajectory: still matches")
    assert "training / held-out examples" in message


def test_a_changed_package_version_is_named(current):
    moved = {**current, "versions": {**current["versions"], "transformers": "5.25.0"}}
    message = golden_verdict(LABEL, _record(), moved, _result(_record(), shift=0.01))
    assert f"package transformers: recorded {current['versions']['transformers']}, now 5.25.0" in message
    assert "the code changed" not in message and "departs at step 0" in message


def test_each_fingerprinted_input_is_named(current):
    for key, words in [("tokenizer", "tiny tokenizer"), ("initial_weights", "initial weights"),
                       ("config", "resolved suite config")]:
        message = golden_verdict(LABEL, _record(), {**current, key: "000000000000"}, _result(_record()))
        assert words in message and "000000000000" in message, key
