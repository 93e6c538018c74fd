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
