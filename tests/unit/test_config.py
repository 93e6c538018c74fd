"""Suites validate into typed objects; every error names the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.suite import ConfigError, load_suite
from tests.conftest import BASE_SUITE

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def errors_of(path: Path, overrides=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_suite(path, overrides)
    return str(info.value)


def test_every_committed_suite_validates():
    for path in sorted((REPO / "suites").glob("*.yaml")):
        suite = load_suite(path)
        assert suite.methods and suite.models


def test_valid_suite_resolves_defaults(tmp_path):
    suite = load_suite(write(tmp_path, BASE_SUITE))
    assert suite.languages.seen == ("en", "fr", "de")
    assert suite.train.steps == 4 and suite.train.optimizer == "adamw_torch"
    resolved = suite.resolved()
    assert resolved["train"]["max_grad_norm"] == 1.0 and "source" not in resolved
    assert len(suite.config_hash()) == 12


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d["methods"].append({"name": "pcgradd"}), "methods[1].name: unknown method 'pcgradd'"),
    (lambda d: d["languages"]["seen"].append("xx"), "languages.seen[3]: unknown language 'xx'"),
    (lambda d: (d["languages"]["unseen"].append("sw"), d.__setitem__("data", {"source": "chatterbot"})),
     "languages.unseen[1]: no offline data for 'sw'"),
    (lambda d: d.__setitem__("models", ["llamma"]), "models[0]: unknown model 'llamma' (did you mean 'llama'?)"),
    (lambda d: d["train"].__setitem__("steps", -3), "train.steps: expected a positive integer, got -3"),
    (lambda d: d["train"].__setitem__("lr", "fast"), "train.lr: expected float, got 'fast'"),
    (lambda d: d["train"].__setitem__("schedule", "cosin"), "train.schedule: expected constant|linear|cosine"),
    (lambda d: d.pop("methods"), "methods: missing required key"),
    (lambda d: d.pop("languages"), "languages: missing required key"),
    (lambda d: d["train"].__setitem__("stepz", 3), "train.stepz: unknown key (did you mean 'steps'?)"),
    (lambda d: d["methods"][0].__setitem__("options", {"bogus": 1}), "methods[0].options.bogus: unknown key"),
    (lambda d: d["languages"].__setitem__("unseen", ["en"]), "languages.unseen: languages both seen and unseen"),
    (lambda d: d.__setitem__("seeds", "0"), "seeds: expected a list of int"),
])
def test_bad_suite_names_file_and_key(tmp_path, mutate, expected):
    import copy

    data = copy.deepcopy(BASE_SUITE)
    mutate(data)
    path = write(tmp_path, data)
    message = errors_of(path)
    assert str(path) in message
    assert expected in message


def test_all_problems_reported_at_once(tmp_path):
    import copy

    data = copy.deepcopy(BASE_SUITE)
    data["train"]["steps"] = 0
    data["models"] = ["nope"]
    message = errors_of(write(tmp_path, data))
    assert "train.steps" in message and "models[0]" in message


def test_malformed_yaml_and_missing_file(tmp_path):
    assert "malformed YAML" in errors_of(write(tmp_path, "suite: {name: x\nmodels: [", "bad.yaml"))
    assert "file not found" in errors_of(tmp_path / "absent.yaml")
    assert "expected a mapping at the top level" in errors_of(write(tmp_path, "- a\n- b\n", "list.yaml"))


def test_overrides_apply_before_validation(tmp_path):
    path = write(tmp_path, BASE_SUITE)
    suite = load_suite(path, ["train.steps=7", "languages.unseen=[tr]", "methods.0.label=ref"])
    assert suite.train.steps == 7 and suite.languages.unseen == ("tr",) and suite.methods[0].display == "ref"
    assert "train.steps: expected a positive integer, got -1" in errors_of(path, ["train.steps=-1"])
    assert "expected key.path=value" in errors_of(path, ["train.steps"])


def test_include_merges_one_level(tmp_path):
    write(tmp_path, BASE_SUITE, "base.yaml")
    path = write(tmp_path, {"include": "base.yaml", "train": {"steps": 9}}, "child.yaml")
    suite = load_suite(path)
    assert suite.train.steps == 9 and suite.train.lr == BASE_SUITE["train"]["lr"]


def test_cli_rejects_bad_suite_before_training(tmp_path, capsys, monkeypatch):
    import harness.models.loading as loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("model built for an invalid suite"))
    import copy

    data = copy.deepcopy(BASE_SUITE)
    data["methods"] = [{"name": "nosuch"}]
    code = main(["run", str(write(tmp_path, data))])
    assert code == 2
    assert "methods[0].name: unknown method 'nosuch'" in capsys.readouterr().err


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda d: d["train"].__setitem__("lr", float("nan")), "train.lr: expected a finite number, got nan"),
    (lambda d: d["train"].__setitem__("lr", float("inf")), "train.lr: expected a finite number, got inf"),
    (lambda d: d.__setitem__("seeds", [0, 1, 0]), "seeds: listed twice: 0"),
    (lambda d: d.__setitem__("models", ["llama", "llama"]), "models: listed twice: llama"),
    (lambda d: d["languages"].__setitem__("unseen", ["nl", "nl"]), "languages.unseen: duplicate languages: nl"),
    (lambda d: d["suite"].__setitem__("name", "../../escape"), "suite.name: '../../escape' becomes a folder name"),
    (lambda d: d["methods"][0].__setitem__("label", "a/b"), "methods[0].label: 'a/b' becomes a folder name"),
])
def test_silently_wrong_inputs_are_refused(tmp_path, mutate, expected):
    data = yaml.safe_load(yaml.safe_dump(BASE_SUITE))
    mutate(data)
    assert expected in errors_of(write(tmp_path, data))


def test_a_duplicate_yaml_key_is_refused_with_its_lines(tmp_path):
    text = yaml.safe_dump(BASE_SUITE) + "seeds: [1]\n"
    message = errors_of(write(tmp_path, text))
    assert "duplicate key 'seeds'" in message and "suite.yaml" in message


def test_a_suite_that_includes_itself_is_refused(tmp_path):
    path = write(tmp_path, "include: suite.yaml\n" + yaml.safe_dump(BASE_SUITE))
    assert "include: the suite includes itself" in errors_of(path)


@pytest.mark.parametrize(("override", "expected"), [
    ("train.steps=[", "--set train.steps=[: the value is not valid YAML"),
    ("models.0.x=1", "--set models.0.x=1: models.0 is 'llama', not a mapping or a list, so it has no 'x'"),
    ("methods.5.name=mgda", "--set methods.5.name=mgda: methods.5: no item '5' in a list of 1"),
    ("steps", "--set 'steps': expected key.path=value"),
])
def test_bad_overrides_are_refused_with_a_message(tmp_path, override, expected):
    assert expected in errors_of(write(tmp_path, BASE_SUITE), [override])
