"""`polymoo analyze separability`: a model before (and optionally after) fine-tuning, per layer.

--model is a checkpoint folder or a catalog model name (its tiny twin at --scale tiny); --after RUN_DIR adds
the run's saved model (`<run_dir>/final`) and logs the metrics `analysis/{before,after}/{probe_acc,silhouette}/
layer<i>` and the plot to that run in MLflow. Outputs: separability.json and separability.png under --out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

DEFAULT_LANGUAGES = ("en", "fr", "de", "es", "it", "pt", "nl", "tr")


def run_languages(run_dir: Path) -> list[str] | None:
    cfg = run_dir / "config.yaml"
    if not cfg.exists():
        return None
    langs = yaml.safe_load(cfg.read_text()).get("languages", {})
    return [*langs.get("seen", []), *langs.get("unseen", [])] or None


def analyze_separability(model: str, after: str | None = None, languages: list[str] | None = None,
                         scale: str = "tiny", out_dir: Path | None = None, n_per_language: int | None = None,
                         log: bool = True) -> dict[str, Any]:
    from harness.analysis.separability import separability
    from harness.evaluate.checkpoint import load_any, resolve_checkpoint
    from harness.plots import separability_curves

    after_dir = Path(after) if after else None
    if after_dir is not None:
        resolve_checkpoint(after_dir)  # clear error before any work
    langs = languages or (run_languages(after_dir) if after_dir else None) or list(DEFAULT_LANGUAGES)
    out_dir = out_dir or Path("results") / "analysis" / "separability" / Path(after or model).name
    base, tok, label = load_any(model, scale)
    results = {"before": separability(base, tok, langs, n_per_language)}
    if after_dir is not None:
        tuned, tok2, _ = load_any(str(after_dir), scale)
        results["after"] = separability(tuned, tok2, langs, n_per_language)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"model": label, "after": after, "languages": langs, **{k: v.as_dict() for k, v in results.items()}}
    (out_dir / "separability.json").write_text(json.dumps(payload, indent=2))
    curves = {k: {"probe_acc": v.probe_acc, "silhouette": v.silhouette} for k, v in results.items()}
    plot = separability_curves(curves, out_dir / "separability.png", chance=results["before"].chance)
    if log and after_dir is not None and (after_dir / "mlflow_run_id").exists():
        _log_to_run(after_dir, results, [out_dir / "separability.json", plot])
    return payload


def _log_to_run(run_dir: Path, results: dict[str, Any], files: list[Path | None]) -> None:
    from harness.tracking import Tracker, client

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    c = client((cfg.get("tracking") or {}).get("uri"))
    tracker = Tracker(c, (run_dir / "mlflow_run_id").read_text().strip())
    metrics: dict[str, float] = {}
    for stage, res in results.items():
        metrics |= res.metrics(f"analysis/{stage}")
    tracker.log_metrics(metrics)
    for f in files:
        if f is not None:
            tracker.log_artifact(f, "analysis")
