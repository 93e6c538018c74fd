"""`polymoo analyze separability`: before/after a (fake) run, outputs and metrics logged to the run; clear errors."""

from __future__ import annotations

import json

import pytest
import yaml

from harness.cli import main


def test_missing_after_is_a_clear_error(tmp_path, capsys):
    assert main(["analyze", "separability", "--model", "llama", "--after", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unknown_model_is_a_clear_error(tmp_path, capsys):
    assert main(["analyze", "separability", "--model", "llamma", "--out", str(tmp_path)]) == 2
    assert "neither an existing checkpoint folder nor a model name" in capsys.readouterr().err


@pytest.mark.slow
def test_before_after_logged_to_run(tmp_path, capsys):
    import torch

    from harness.models.loading import load_model
    from harness.tracking import client, ensure_experiment
    from tests._store import copy_store

    uri = copy_store(tmp_path / "store")
    c = client(uri)
    run_id = c.create_run(ensure_experiment(c, "polymoo/t"), tags={"polymoo.model": "llama"}).info.run_id
    run = tmp_path / "run"
    model, tok = load_model("llama", "tiny")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    model.save_pretrained(run / "final")
    tok.save_pretrained(run / "final")
    (run / "mlflow_run_id").write_text(run_id)
    (run / "config.yaml").write_text(yaml.safe_dump({"languages": {"seen": ["en", "fr"], "unseen": ["de"]},
                                                     "tracking": {"uri": uri}}))
    out = tmp_path / "out"
    assert main(["analyze", "separability", "--model", "llama", "--after", str(run), "--n-per-language", "20",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "languages: en, fr, de" in printed and "before" in printed and "after" in printed
    saved = json.loads((out / "separability.json").read_text())
    assert len(saved["before"]["probe_acc"]) == len(saved["after"]["probe_acc"]) == model.config.num_hidden_layers + 1
    assert (out / "separability.png").exists()
    metrics = c.get_run(run_id).data.metrics
    assert metrics["analysis/after/probe_acc/layer0"] == pytest.approx(saved["after"]["probe_acc"][0])
    assert "analysis/before/silhouette/mean" in metrics
    assert {a.path for a in c.list_artifacts(run_id, "analysis")} == {"analysis/separability.json",
                                                                      "analysis/separability.png"}
