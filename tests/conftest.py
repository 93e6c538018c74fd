"""Shared fixtures: determinism, one cached tiny-twin folder per machine, a throw-away MLflow store per test,
and a factory for small suites."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
# tiny twins and the offline tokenizer are cached once per machine (results/cache is git-ignored)
os.environ.setdefault("POLYMOO_CACHE", str(REPO / "results" / "cache"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

# Tests and golden records read this committed slice of the offline corpus, never the installed package: a
# chatterbot-corpus release changes its files (and moved every golden loss). Re-freeze: python -m tests.fixtures.freeze
DATA_SLICE = REPO / "tests" / "fixtures" / "chatterbot_slice.jsonl"

BASE_SUITE: dict[str, Any] = {
    "suite": {"name": "test", "version": 1},
    "scale": "tiny",
    "models": ["llama"],
    "languages": {"seen": ["en", "fr", "de"], "unseen": ["nl"]},
    "data": {"source": "json", "path": str(DATA_SLICE), "max_examples_per_language": 24},
    "train": {"steps": 4, "batch_size_per_language": 2, "lr": 1.0e-3, "max_seq_len": 32, "schedule": "constant",
              "save_model": False},
    "methods": [{"name": "joint_sft"}],
    "eval": {"heldout_loss": True, "tasks": [], "mc_items_per_language": 8},
    "seeds": [0],
}


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield


@pytest.fixture
def tmp_store(tmp_path, monkeypatch) -> str:
    """A fresh sqlite MLflow store and run folder for one test (a copy of a cached empty store: creating one
    runs MLflow's migrations, seconds each); returns the tracking URI."""
    from tests._store import copy_store

    uri = copy_store(tmp_path / "store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("POLYMOO_RESULTS", str(tmp_path / "results"))
    return uri


@pytest.fixture
def make_suite(tmp_path):
    """make_suite(**overrides) -> validated Suite based on BASE_SUITE, writing runs under tmp_path."""
    from harness.suite import suite_from_data

    def _make(**overrides: Any):
        data = copy.deepcopy(BASE_SUITE)
        data["output_dir"] = str(tmp_path / "runs")
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return suite_from_data(data, "test-suite.yaml")

    return _make


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from harness.models.tokenizer import offline_tokenizer

    return offline_tokenizer()
