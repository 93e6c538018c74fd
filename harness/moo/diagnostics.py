"""MOO diagnostics computed from the per-block Gram matrices the combiners already hold (no extra pass over P).

Every ``every`` optimizer steps (default: the suite's ``train.log_every``, so the trainer logs what is computed) a
combiner returns, in ``CombineResult.metrics`` (the trainer logs them with the step):

* ``moo/cos/<a>-<b>``: cosine of the gradients of languages a and b over the whole trainable vector;
* ``moo/bucket/<i>/cos/<a>-<b>``, ``moo/bucket/<i>/cos_min``: the same per bucket;
* ``moo/conflict_fraction``: fraction of (bucket, language pair) with a negative cosine;
  ``moo/global_conflict_fraction``: fraction of language pairs with a negative global cosine;
* ``moo/weights/<lang>/{min,mean,max}``: the coefficient of each language's raw gradient over the buckets
  (identical for the whole-vector methods);
* ``moo/residual/global``: ‖min-norm point of the convex hull of the K gradients‖ (0 iff Pareto-stationary),
  ``moo/residual/global_rel`` the same divided by ‖mean gradient‖; ``moo/bucket/<i>/residual`` and
  ``moo/residual/bucket_{mean,max}`` per bucket. Bucket-stationarity does not imply global stationarity (DESIGN.md,
  "Idea 2"), hence both;
* ``moo/dir_norm_ratio``: ‖d‖ / ‖mean gradient‖; ``moo/grad_norm/<lang>``: ‖g_lang‖.

Per-language losses are logged by the trainer (``train/loss/<lang>``). Artifacts (through the run's tracker):

* ``moo/dump/step_NNNNNN.json`` every ``dump_every`` steps and at the last step: per bucket the weights, residual,
  gradient norms and pairwise cosines, plus the global ones;
* ``moo/conflict_heatmap.json``: bucket × language pair, the fraction of diagnosed steps in which the pair conflicts
  (cos < 0) in that bucket; rewritten with every dump, so the last one covers the whole run;
* ``moo/conflict_heatmap.png``: its picture, drawn once by :meth:`Diagnostics.close` when training ends (the trainer
  calls it), so drawing (and importing matplotlib) never lands inside a timed training step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from harness.moo.options import DiagnosticsOptions as DiagnosticsOptions  # re-exported: defined without torch
from harness.moo.weightings import min_norm_residual


def cosines(g: Tensor) -> Tensor:
    """Cosine matrix of a Gram matrix (float64); 0 where a gradient is zero."""
    g = g.to(torch.float64)
    n = torch.sqrt(torch.diagonal(g).clamp_min(0.0))
    den = n[:, None] * n[None, :]
    return torch.where(den > 0, g / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(g)).clamp(-1, 1)


def pair_names(languages: Sequence[str]) -> list[tuple[int, int, str]]:
    return [(i, j, f"{languages[i]}-{languages[j]}") for i in range(len(languages)) for j in range(i + 1, len(languages))]


class Diagnostics:
    """Turns per-bucket Grams and coefficients into metrics, dumps and the conflict heatmap."""

    def __init__(self, tracker: Any, languages: Sequence[str], blocks: Sequence[Any], options: DiagnosticsOptions,
                 total_steps: int, log_every: int = 1):
        self.tracker, self.languages, self.options = tracker, list(languages), options
        self.blocks = [(b.index, b.numel) for b in blocks]
        self.total_steps = total_steps
        self.every = options.every or log_every
        self.last_dump = 0
        self.last_heatmap_step = 0  # the step of the last heatmap data written; close() draws it
        self._drawn = False
        # (bucket index, pair name) -> [steps in conflict, steps observed, sum of cosines]
        self.conflicts: dict[tuple[int, str], list[float]] = {}

    def due(self, step: int) -> bool:
        """``step`` is the trainer's 0-based step; diagnostics are logged with ``step + 1``."""
        return self.options.enabled and ((step + 1) % self.every == 0 or step + 1 == self.total_steps)

    def observe(self, step: int, languages: list[str], grams: Sequence[Tensor], coeffs: Sequence[Tensor] | None,
                global_gram: Tensor, dir_norm: float) -> dict[str, float]:
        m = self._global_metrics(languages, global_gram, dir_norm)
        dump_buckets = self._bucket_metrics(languages, grams, m)
        if coeffs is not None and len(coeffs):
            w = torch.stack([c.to(torch.float64).cpu() for c in coeffs])  # buckets × K
            for i, lang in enumerate(languages):
                m[f"moo/weights/{lang}/min"] = float(w[:, i].min())
                m[f"moo/weights/{lang}/mean"] = float(w[:, i].mean())
                m[f"moo/weights/{lang}/max"] = float(w[:, i].max())
            for entry, row in zip(dump_buckets, w.tolist(), strict=True):
                entry["weights"] = dict(zip(languages, row, strict=True))
        last = step + 1 == self.total_steps
        interval = self.options.dump_every
        if last or (interval and step + 1 - self.last_dump >= interval):
            self.last_dump = step + 1
            self.dump(step + 1, languages, dump_buckets, m)
        return m

    @staticmethod
    def _global_metrics(languages: list[str], global_gram: Tensor, dir_norm: float) -> dict[str, float]:
        """Cosines, gradient norms, conflict fraction and min-norm residual of the whole vector."""
        pairs, k = pair_names(languages), len(languages)
        m: dict[str, float] = {}
        gg = global_gram.to(torch.float64)
        cos_g = cosines(gg).tolist()
        norms = torch.sqrt(torch.diagonal(gg).clamp_min(0.0)).tolist()
        mean_w = torch.full((k,), 1.0 / k, dtype=torch.float64, device=gg.device)
        mean_norm = float(torch.sqrt((mean_w @ gg @ mean_w).clamp_min(0.0)))
        residual = min_norm_residual(gg)
        for i, j, name in pairs:
            m[f"moo/cos/{name}"] = cos_g[i][j]
        for i, lang in enumerate(languages):
            m[f"moo/grad_norm/{lang}"] = norms[i]
        m["moo/global_conflict_fraction"] = sum(cos_g[i][j] < 0 for i, j, _ in pairs) / max(len(pairs), 1)
        m["moo/residual/global"] = residual
        m["moo/residual/global_rel"] = residual / mean_norm if mean_norm > 0 else 0.0
        m["moo/dir_norm_ratio"] = dir_norm / mean_norm if mean_norm > 0 else 0.0
        return m

    def _bucket_metrics(self, languages: list[str], grams: Sequence[Tensor], m: dict[str, float]) -> list[dict[str, Any]]:
        """Per-bucket cosines and residuals into `m` (and the running conflict counts); the per-bucket dump rows."""
        pairs = pair_names(languages)
        dump_buckets = []
        in_conflict, total_pairs, residuals = 0, 0, []
        for (index, numel), g in zip(self.blocks, grams, strict=True):
            cos_b = cosines(g).tolist()  # one conversion, not one per pair
            res_b = min_norm_residual(g)
            residuals.append(res_b)
            m[f"moo/bucket/{index}/residual"] = res_b
            cos_pairs = {}
            for i, j, name in pairs:
                value = cos_b[i][j]
                cos_pairs[name] = value
                if self.options.per_bucket_pairs:
                    m[f"moo/bucket/{index}/cos/{name}"] = value
                acc = self.conflicts.setdefault((index, name), [0.0, 0.0, 0.0])
                acc[0] += value < 0
                acc[1] += 1
                acc[2] += value
                in_conflict += value < 0
                total_pairs += 1
            if pairs:
                m[f"moo/bucket/{index}/cos_min"] = min(cos_pairs.values())
            b_norms = torch.sqrt(torch.diagonal(g.to(torch.float64)).clamp_min(0.0))
            dump_buckets.append({"index": index, "numel": numel, "residual": res_b, "cos": cos_pairs,
                                 "grad_norm": dict(zip(languages, b_norms.tolist(), strict=True))})
        m["moo/conflict_fraction"] = in_conflict / total_pairs if total_pairs else 0.0
        if residuals:
            m["moo/residual/bucket_mean"] = sum(residuals) / len(residuals)
            m["moo/residual/bucket_max"] = max(residuals)
        return dump_buckets

    # -- artifacts ----------------------------------------------------------------------------------------------------
    def dump(self, logged_step: int, languages: list[str], buckets: list[dict[str, Any]], metrics: dict[str, float]) -> None:
        glob = {k.removeprefix("moo/"): v for k, v in metrics.items() if not k.startswith("moo/bucket/")}
        self.tracker.log_dict({"step": logged_step, "languages": languages, "global": glob, "buckets": buckets},
                              f"moo/dump/step_{logged_step:06d}.json")
        if self.options.heatmap and self.conflicts:
            self.tracker.log_dict({**self.heatmap_data(), "step": logged_step}, "moo/conflict_heatmap.json")
            self.last_heatmap_step = logged_step

    def close(self) -> None:
        """End of training: draw the conflict heatmap of the last dump (once)."""
        if self.options.heatmap and self.conflicts and self.last_heatmap_step and not self._drawn:
            self.tracker.log_figure(heatmap_figure(self.heatmap_data(), self.last_heatmap_step),
                                    "moo/conflict_heatmap.png")
            self._drawn = True

    def heatmap_data(self) -> dict[str, Any]:
        buckets = sorted({b for b, _ in self.conflicts})
        pairs = list(dict.fromkeys(p for _, p in self.conflicts))
        freq = [[self.conflicts[(b, p)][0] / self.conflicts[(b, p)][1] if (b, p) in self.conflicts else None
                 for p in pairs] for b in buckets]
        mean_cos = [[self.conflicts[(b, p)][2] / self.conflicts[(b, p)][1] if (b, p) in self.conflicts else None
                     for p in pairs] for b in buckets]
        numel = dict(self.blocks)
        return {"buckets": buckets, "bucket_numel": [numel.get(b, 0) for b in buckets], "pairs": pairs,
                "conflict_frequency": freq, "mean_cos": mean_cos}


def heatmap_figure(data: dict[str, Any], step: int) -> Any:
    """Bucket × language-pair conflict frequency (fraction of diagnosed steps with cos < 0); no pyplot state."""
    import numpy as np
    from matplotlib.figure import Figure

    values = np.array([[np.nan if v is None else v for v in row] for row in data["conflict_frequency"]], dtype=float)
    n_b, n_p = values.shape
    fig = Figure(figsize=(max(4.0, 0.45 * n_p + 2.0), max(2.5, 0.4 * n_b + 1.5)))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="Reds", aspect="auto")
    ax.set_xticks(range(n_p), data["pairs"], rotation=60, ha="right", fontsize=7)
    labels = [f"b{b} ({n / 1e3:.0f}k)" for b, n in zip(data["buckets"], data["bucket_numel"], strict=True)]
    ax.set_yticks(range(n_b), labels, fontsize=7)
    ax.set_xlabel("language pair")
    ax.set_ylabel("bucket (parameters)")
    ax.set_title(f"gradient conflict frequency (cos < 0), steps 1–{step}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.04)
    return fig
