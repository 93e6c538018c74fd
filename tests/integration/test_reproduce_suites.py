"""The paper suites and claim files: tiny twins mirror the full suites, claims carry only public numbers."""

from __future__ import annotations

import pytest
import yaml

from harness.reproduce.claims import load_claims
from harness.reproduce.run import PAPERS, claims_file, load_paper_suite, suite_file

# options that legitimately differ between tiny twins on CPU and 8B models on GPUs (sizes, the judge: a random-init
# twin cannot judge itself, so tiny scale uses the deterministic reference judge)
SCALE_KNOBS = {"bucket_cap_mb", "iterations", "prompts_per_language", "max_new_tokens", "judge", "judge_max_new_tokens",
               "dpo_batch_size", "generation_batch_size", "win_rate_prompts_per_language", "eval_each_iteration", "rank"}


@pytest.mark.parametrize("paper", PAPERS)
def test_tiny_twin_mirrors_full_suite(paper):
    full, tiny = load_paper_suite(paper, "full"), load_paper_suite(paper, "tiny")
    assert full.scale == "full" and tiny.scale == "tiny"

    def methods(s):
        return [(m.name, m.display, {k: v for k, v in m.options.items() if k not in SCALE_KNOBS}) for m in s.methods]

    assert methods(full) == methods(tiny)
    assert full.seeds == tiny.seeds and len(full.seeds) >= 3
    assert set(tiny.models) <= set(full.models)
    assert not tiny.eval.lm_eval_tasks and full.eval.lm_eval_tasks
    assert set(full.eval.lm_eval_tasks.values()) <= set(full.languages.all)
    for path in (suite_file(paper, "full"), suite_file(paper, "tiny")):
        assert path.read_text().startswith(f"# suites/{path.name} — run: polymoo reproduce {paper}")


def test_paper_models():
    assert load_paper_suite("bkmoo", "full").models == ("llama3.1-8b", "qwen3-8b", "gemma2-9b", "mistral-7b")
    congrad = load_paper_suite("congrad", "full")
    assert congrad.models == ("llama3-8b", "gemma2-2b") and len(congrad.languages.all) == 10


def test_claims_public_figures_only():
    bk = {c["id"]: c for c in load_claims(claims_file("bkmoo"))["claims"]}
    assert bk["seen_gain"]["value"] == {"min": 1.6, "max": 2.9}
    assert bk["unseen_gain"]["value"] == {"max": 2.7}
    assert bk["memory"]["value"]["bkmoo_gb"] == 72 and bk["memory"]["value"]["global_gb"] == 123
    for paper in PAPERS:
        for c in load_claims(claims_file(paper))["claims"]:
            if not c["public"]:
                assert c["value"] == "not public", c["id"]
    assert all(c["value"] == "not public" for c in load_claims(claims_file("congrad"))["claims"])


def test_claims_file_errors(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text(yaml.safe_dump({"paper": {}, "claims": [{"id": "a", "claim": "c", "public": False, "value": 3.0}]}))
    with pytest.raises(ValueError, match="numeric value must be public"):
        load_claims(bad)
