"""`polymoo data prepare`: the paper suites' JSONL built offline from fixtures with the hub datasets' schema and file
layout (Bactrian-X: data/<lang>.json.gz; Aya: data/train-*.parquet), through the same `datasets` builder call the hub
path uses; deterministic, atomic, with provenance; one clear line when the hub is out of reach."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest
import yaml

from harness.cli import main
from harness.config import DataConfig
from harness.data.hub_sources import RECIPES, SOURCES
from harness.data.prepare import language_caps
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "hub"
SUITE_LANGUAGES = ("en", "fr", "de", "es", "ru", "zh", "sw", "tr", "th", "vi")


@pytest.fixture(scope="module")
def bactrian_repo(tmp_path_factory) -> Path:
    """A local copy of the Bactrian-X repository's data files: one gzipped JSON array per language."""
    root = tmp_path_factory.mktemp("bactrian_x")
    (root / "data").mkdir()
    for lang, rows in json.loads((FIXTURES / "bactrian_x.json").read_text()).items():
        with gzip.open(root / "data" / f"{lang}.json.gz", "wt", encoding="utf-8") as f:
            json.dump(rows, f, ensure_ascii=False)
    return root


@pytest.fixture(scope="module")
def aya_repo(tmp_path_factory) -> Path:
    """A local copy of the Aya dataset repository: its train split as one parquet shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("aya")
    (root / "data").mkdir()
    rows = [json.loads(line) for line in (FIXTURES / "aya_dataset.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), root / "data" / "train-00000-of-00001.parquet")
    return root


def _prepare(capsys, *argv) -> tuple[int, str]:
    code = main(["data", "prepare", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out + out.err


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_bkmoo_sft_from_a_local_copy_has_the_suites_shape_and_provenance(capsys, tmp_path, bactrian_repo):
    out = tmp_path / "data" / "sft.jsonl"
    code, text = _prepare(capsys, "bkmoo_sft", "--from", bactrian_repo, "--out", out, "--cache-dir", tmp_path / "c",
                          "--set", "data.max_examples_per_language=5")
    assert code == 0, text
    rows = _rows(out)
    cap = language_caps(["en"], 5, {}, 0.02)["en"]
    assert cap == 6  # ceil(5 / 0.98): after the loader's 2 % held-out split, training keeps 5
    by_lang = {lang: [r for r in rows if r["language"] == lang] for lang in SUITE_LANGUAGES}
    assert {lang: len(v) for lang, v in by_lang.items()} == dict.fromkeys(SUITE_LANGUAGES, cap)
    en_prompts = [r["prompt"] for r in by_lang["en"]]
    assert "(en) No answer." not in en_prompts  # empty response dropped
    assert len(set(en_prompts)) == len(en_prompts)  # the repeated instruction kept once
    assert all(r["response"] for r in rows) and all(r["source"] == "MBZUAI/Bactrian-X" for r in rows)
    assert any("水" in r["prompt"] for r in by_lang["zh"])  # UTF-8 text, not escapes
    assert "\\u6c34" not in out.read_text(encoding="utf-8")

    record = json.loads(out.with_name("sft.jsonl.provenance.json").read_text())
    assert record["dataset"] == "MBZUAI/Bactrian-X" and record["licence"] == "CC BY-NC 4.0"
    assert record["revision"] == SOURCES["bactrian_x"].revision and record["read_from"] == "local copy"
    assert record["languages"]["en"] == {"codes": ["en"], "available": 8, "cap": 6, "written": 6}
    assert record["short"] == [] and record["rows"] == 60
    assert record["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert sorted(p.name for p in out.parent.iterdir()) == ["sft.jsonl", "sft.jsonl.provenance.json"]  # no temp left
    assert "wrote" in text and "en: 6 of 8 usable rows (cap 6)" in text


def test_the_file_loads_through_the_suites_loader_with_the_cap(tmp_path, bactrian_repo, capsys):
    from harness.data.sft import load_language_data

    out = tmp_path / "sft.jsonl"
    assert _prepare(capsys, "bkmoo_sft", "--from", bactrian_repo, "--out", out, "--cache-dir", tmp_path / "c",
                    "--set", "data.max_examples_per_language=5")[0] == 0
    data = load_language_data(DataConfig(source="json", path=str(out), max_examples_per_language=5,
                                         heldout_fraction=0.02), SUITE_LANGUAGES)
    assert {lang: len(v) for lang, v in data.train.items()} == dict.fromkeys(SUITE_LANGUAGES, 5)
    assert all(len(v) == 1 for v in data.heldout.values())


def test_deterministic_and_seeded(capsys, tmp_path, bactrian_repo):
    common = ("bkmoo_sft", "--from", bactrian_repo, "--cache-dir", tmp_path / "c",
              "--set", "data.max_examples_per_language=3")
    paths = [tmp_path / f"{name}.jsonl" for name in ("a", "b", "seed1")]
    assert _prepare(capsys, *common, "--out", paths[0])[0] == 0
    assert _prepare(capsys, *common, "--out", paths[1])[0] == 0
    assert _prepare(capsys, *common, "--out", paths[2], "--seed", "1")[0] == 0
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_bytes() != paths[2].read_bytes()  # 4 of 8 rows per language: another sample
    again = _prepare(capsys, *common, "--out", paths[0])  # rebuilding its own file is allowed (the sidecar says so)
    assert again[0] == 0 and paths[0].read_bytes() == paths[1].read_bytes()


def test_congrad_prompts_from_aya_names_short_languages(capsys, tmp_path, aya_repo):
    out = tmp_path / "prompts.jsonl"
    code, text = _prepare(capsys, "congrad_prompts", "--source", "aya", "--from", aya_repo, "--out", out,
                          "--cache-dir", tmp_path / "c", "--set", "data.max_examples_per_language=4")
    assert code == 0, text
    rows = _rows(out)
    counts = {lang: sum(r["language"] == lang for r in rows) for lang in SUITE_LANGUAGES}
    assert counts == {**dict.fromkeys(SUITE_LANGUAGES, 5), "th": 3}  # cap ceil(4 / 0.95) = 5; Thai has 3 rows
    assert all(r["language"] != "yo" for r in rows)  # a language outside the suite is left out
    record = json.loads(out.with_name("prompts.jsonl.provenance.json").read_text())
    assert record["dataset"] == "CohereLabs/aya_dataset" and record["licence"] == "Apache-2.0"
    assert record["short"] == ["th"] and record["languages"]["sw"]["codes"] == ["swa", "swh"]
    assert "th: 3 of 3 usable rows (cap 5)  (short of the cap)" in text


def test_without_the_hub_one_line_names_the_dataset_and_the_way_out(capsys, tmp_path, monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # no request leaves the machine
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code, text = _prepare(capsys, "bkmoo_sft", "--out", tmp_path / "x.jsonl", "--cache-dir", tmp_path / "c")
    assert code == 2 and "Traceback" not in text
    line = text.strip().splitlines()[-1]
    assert line.startswith("polymoo: error: cannot read MBZUAI/Bactrian-X")
    assert "huggingface.co is reachable" in line and "--from DIR" in line and "HF_HUB_OFFLINE=1 huggingface-cli " \
        "download MBZUAI/Bactrian-X --repo-type dataset --revision 3698480a001cb3f62c61c314d4acb181eb31e983" in line
    assert not (tmp_path / "x.jsonl").exists()


def test_refusals_are_one_line(capsys, tmp_path, bactrian_repo):
    foreign = tmp_path / "mine.jsonl"
    foreign.write_text('{"language": "en", "prompt": "p", "response": "r"}\n')
    code, text = _prepare(capsys, "bkmoo_sft", "--from", bactrian_repo, "--out", foreign)
    assert code == 2 and "was not built by `polymoo data prepare`" in text and "--force" in text
    assert foreign.read_text().startswith('{"language": "en", "prompt": "p"')
    code, text = _prepare(capsys, "bkmoo_sfft", "--from", bactrian_repo)
    assert code == 2 and "no data recipe 'bkmoo_sfft' (did you mean 'bkmoo_sft'?)" in text
    code, text = _prepare(capsys, "bkmoo_sft", "--from", bactrian_repo, "--out", tmp_path / "y.jsonl",
                          "--set", "languages.unseen=[yo]")
    assert code == 2 and "MBZUAI/Bactrian-X has no language(s) ['yo']" in text


def test_recipes_follow_their_suites_and_check_names_the_command(tmp_path):
    from harness.check import check_data
    from harness.suite import load_suite

    for recipe in RECIPES.values():
        raw = yaml.safe_load((REPO / recipe.suite).read_text())
        assert raw["data"]["path"] == recipe.path, recipe.name
        languages = [*raw["languages"]["seen"], *raw["languages"]["unseen"]]
        for key in (recipe.source, *recipe.alternatives):
            assert set(languages) <= set(SOURCES[key].codes), (recipe.name, key)
        [finding] = check_data(load_suite(REPO / recipe.suite), tmp_path)  # nothing under tmp_path: missing
        assert finding.status == "fail"
        assert f"data.path {recipe.path}: no such file" in finding.message
        assert f"build it with `polymoo data prepare {recipe.name}`" in finding.message


def test_data_list_names_every_recipe_and_licence(capsys):
    assert main(["data", "list"]) == 0
    text = capsys.readouterr().out
    for recipe in RECIPES.values():
        assert recipe.name in text and recipe.path in text
    assert "CC BY-NC 4.0" in text and "Apache-2.0" in text


def test_any_hub_failure_carries_the_way_out_a_local_one_does_not(capsys, tmp_path, monkeypatch):
    import datasets

    class ConnectError(Exception):  # an HTTP client's own class (httpx's is not an OSError)
        pass

    def unreachable(*args, **kwargs):
        raise ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    code, text = _prepare(capsys, "bkmoo_sft", "--out", tmp_path / "x.jsonl")
    assert code == 2 and "ConnectError: [Errno -2] Name or service not known; run `polymoo data prepare` where" in text
    code, text = _prepare(capsys, "bkmoo_sft", "--out", tmp_path / "x.jsonl", "--from", tmp_path / "nowhere")
    assert code == 2 and "ConnectError" in text and "HF_HUB_OFFLINE" not in text
