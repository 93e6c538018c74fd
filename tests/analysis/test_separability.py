"""Separability: separable-by-construction data gives a near-perfect probe and a high silhouette; shuffled
labels give chance; the model path produces one value per layer on parallel CLDR names."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis.separability import parallel_texts, probe_accuracy, separability, silhouette

K, N, D = 4, 40, 16


def _clusters(seed: int = 0, spread: float = 0.3):
    """K languages, each a tight cluster around its own random direction (separable by construction)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(K, D)) * 3.0
    x = np.concatenate([c + spread * rng.normal(size=(N, D)) for c in centers])
    y = np.repeat([f"l{k}" for k in range(K)], N)
    return x, y


def test_separable_by_construction():
    x, y = _clusters()
    acc, std = probe_accuracy(x, y)
    assert acc >= 0.99 and std <= 0.02
    assert silhouette(x, y) > 0.7


def test_shuffled_labels_are_at_chance():
    x, y = _clusters()
    rng = np.random.default_rng(1)
    accs = [probe_accuracy(x, rng.permutation(y), seed=s)[0] for s in range(3)]
    assert abs(np.mean(accs) - 1 / K) < 0.12
    assert abs(silhouette(x, rng.permutation(y))) < 0.1


def test_probe_needs_two_per_class():
    with pytest.raises(ValueError, match="at least 2 examples per class"):
        probe_accuracy(np.zeros((3, 2)), ["a", "b", "b"])


def test_parallel_texts_are_parallel():
    texts = parallel_texts(["en", "fr", "de"])
    assert len({len(v) for v in texts.values()}) == 1 and len(texts["en"]) > 50
    i = texts["en"].index("Germany")
    assert texts["de"][i] == "Deutschland" and texts["fr"][i] == "Allemagne"


@pytest.mark.slow
def test_model_separability_per_layer():
    from harness.models.loading import load_model

    model, tok = load_model("llama", "tiny")
    res = separability(model, tok, ["en", "fr", "de"], n_per_language=30)
    layers = model.config.num_hidden_layers + 1
    assert len(res.probe_acc) == len(res.silhouette) == layers
    assert all(0.0 <= a <= 1.0 for a in res.probe_acc) and all(-1.0 <= s <= 1.0 for s in res.silhouette)
    # different scripts/words per language: even random-init embeddings carry the language identity
    assert res.probe_acc[0] > res.chance
    m = res.metrics("analysis/before")
    assert "analysis/before/probe_acc/layer0" in m and "analysis/before/silhouette/mean" in m


def test_lab_languages_get_their_parallel_held_out_items():
    """CLDR names no lab language; the lab's held-out items are parallel by construction and stand in for them."""
    from harness.config import DataConfig
    from harness.data.interference import parallel_texts as lab_texts

    cfg = DataConfig(source="interference", conflict=0.75, dissenters=("lab3",), max_examples_per_language=40)
    texts = lab_texts(cfg, ["lab1", "lab2", "lab3"])
    assert {len(v) for v in texts.values()} == {8}  # heldout_fraction 0.2 of 40
    assert texts["lab1"] == texts["lab2"]  # relatedness 1, the same camp: one text
    assert texts["lab1"] != texts["lab3"]  # the dissenter glosses contested words otherwise
    with pytest.raises(ValueError, match="expected only letters"):
        parallel_texts(["lab1", "lab3"])


@pytest.mark.slow
def test_model_separability_on_given_texts():
    from harness.models.loading import load_model

    model, tok = load_model("llama", "tiny")
    texts = {"a": [f" item {i} one" for i in range(12)], "b": [f" item {i} two" for i in range(12)]}
    res = separability(model, tok, ["a", "b"], texts=texts)
    assert res.n_per_language == 12 and len(res.probe_acc) == model.config.num_hidden_layers + 1
    with pytest.raises(ValueError, match="same number of items"):
        separability(model, tok, ["a", "b"], texts={"a": texts["a"], "b": texts["b"][:5]})
