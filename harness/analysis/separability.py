"""Language separability of hidden states, per layer (the Bucket-Level MOO paper's analysis: multilingual
fine-tuning builds language-specific dimensions).

Inputs are *parallel*: the same CLDR names (countries, languages, months, weekdays; babel) in every language,
so what separates the clusters is the language, not the content. For each layer (0 = embeddings):
- `probe_acc`: accuracy of a linear probe (multinomial logistic regression on standardised features)
  identifying the language, stratified k-fold cross-validated; chance is 1/K;
- `silhouette`: silhouette score (cosine distance) of the language clusters of the mean-pooled states;
  ~1 for separated clusters, ~0 for overlapping ones.

`probe_accuracy` and `silhouette` are pure functions of (features, labels), tested on synthetic data that
is separable by construction (probe ~1, silhouette high) and with shuffled labels (probe ~ chance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Separability:
    languages: list[str]
    n_per_language: int
    probe_acc: list[float] = field(default_factory=list)  # per layer
    probe_std: list[float] = field(default_factory=list)
    silhouette: list[float] = field(default_factory=list)

    @property
    def chance(self) -> float:
        return 1.0 / len(self.languages)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"chance": self.chance}

    def metrics(self, prefix: str = "analysis") -> dict[str, float]:
        out = {}
        for i, (acc, sil) in enumerate(zip(self.probe_acc, self.silhouette, strict=True)):
            out[f"{prefix}/probe_acc/layer{i}"] = acc
            out[f"{prefix}/silhouette/layer{i}"] = sil
        out[f"{prefix}/probe_acc/mean"] = float(np.mean(self.probe_acc))
        out[f"{prefix}/silhouette/mean"] = float(np.mean(self.silhouette))
        return out


def probe_accuracy(features: np.ndarray, labels: Sequence[Any], folds: int = 5, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the cross-validated accuracy of a linear probe predicting `labels` from `features`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    _, counts = np.unique(y, return_counts=True)
    k = int(min(folds, counts.min()))
    if k < 2:
        raise ValueError(f"need at least 2 examples per class for cross-validation, got {counts.min()}")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    scores = cross_val_score(probe, np.asarray(features, dtype=np.float64), y, cv=cv)
    return float(scores.mean()), float(scores.std())


def silhouette(features: np.ndarray, labels: Sequence[Any]) -> float:
    """Silhouette score of the label clusters under cosine distance (in [-1, 1])."""
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(np.asarray(features, dtype=np.float64), np.asarray(labels), metric="cosine"))


def parallel_texts(languages: Sequence[str], n_per_language: int | None = None) -> dict[str, list[str]]:
    """The same CLDR concepts named in every language (keys present in all of them), fixed order."""
    from harness.data.babel_mc import _names

    names = {lang: _names(lang) for lang in languages}
    keys = [(cat, key) for cat in ("country", "language", "month", "weekday") for key in names[languages[0]][cat]
            if all(key in names[lang][cat] for lang in languages)]
    keys = keys[:n_per_language] if n_per_language else keys
    return {lang: [names[lang][cat][key] for cat, key in keys] for lang in languages}


def mean_pooled_states(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """(layers + 1, N, hidden) mean over the non-padding tokens of every hidden state."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    chunks = []
    try:
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(list(texts[i: i + batch_size]), return_tensors="pt", padding=True)
                enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
                out = model(**enc, output_hidden_states=True)
                mask = enc["attention_mask"].unsqueeze(-1).float()
                pooled = [(h.float() * mask).sum(1) / mask.sum(1).clamp_min(1.0) for h in out.hidden_states]
                chunks.append(torch.stack(pooled).cpu().numpy())
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return np.concatenate(chunks, axis=1)


def separability(model: Any, tokenizer: Any, languages: Sequence[str], n_per_language: int | None = None,
                 folds: int = 5, seed: int = 0, texts: Mapping[str, Sequence[str]] | None = None) -> Separability:
    """Probe accuracy and silhouette per layer of `model` on parallel texts in `languages`: CLDR names by default, or
    `texts` (the same items in every language, e.g. the interference lab's held-out items, which CLDR cannot name)."""
    if len(languages) < 2:
        raise ValueError("separability needs at least two languages")
    if texts is None:
        texts = parallel_texts(list(languages), n_per_language)
    sizes = {lang: len(texts[lang]) if lang in texts else 0 for lang in languages}
    if len(set(sizes.values())) != 1 or not sizes[languages[0]]:
        raise ValueError(f"separability: parallel texts need the same number of items in every language, got {sizes}")
    flat = [t for lang in languages for t in texts[lang]]
    labels = [lang for lang in languages for _ in texts[lang]]
    states = mean_pooled_states(model, tokenizer, flat)
    n = len(texts[languages[0]])
    res = Separability(list(languages), n)
    for layer in states:
        acc, std = probe_accuracy(layer, labels, folds, seed)
        res.probe_acc.append(acc)
        res.probe_std.append(std)
        res.silhouette.append(silhouette(layer, labels))
    return res
