"""The golden cases: one per registered gradient method (and per Bucket-Level MOO solver), tiny llama twin, seed 0.

Each case is stored at ``results/golden/<label>.json``. A new gradient method needs a case here and a recording
(``nox -s record_golden -- "<reason>"``); ``test_golden.py`` fails until it has both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
GOLDEN_DIR = REPO / "results" / "golden"
MODEL = "llama"
SEED = 0
STEPS = 10
RTOL = 1e-4
# K = 4 languages, so PCGrad's projection order (seeded per step and bucket) matters
SUITE_OVERRIDES: dict[str, Any] = {
    "languages": {"seen": ["en", "fr", "de", "es"], "unseen": []},
    "data": {"source": "chatterbot", "max_examples_per_language": 40},
    "train": {"steps": STEPS, "batch_size_per_language": 2, "lr": 2.0e-3, "max_seq_len": 32, "schedule": "cosine",
              "warmup_steps": 2, "save_model": False},
}
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "joint_sft": ("joint_sft", {}),
    "pcgrad": ("pcgrad", {}),
    "mgda": ("mgda", {}),
    "cagrad": ("cagrad", {}),
    "bkmoo_mgda": ("bkmoo", {"solver": "mgda", "bucket_cap_mb": 0.25}),
    "bkmoo_pcgrad": ("bkmoo", {"solver": "pcgrad", "bucket_cap_mb": 0.25}),
    "bkmoo_cagrad": ("bkmoo", {"solver": "cagrad", "bucket_cap_mb": 0.25}),
    "bkmoo_mgda_l2_meannorm": ("bkmoo", {"solver": "mgda", "bucket_cap_mb": 0.25, "normalize": "l2",
                                         "output_scale": "mean_norm"}),
}


def golden_path(label: str) -> Path:
    return GOLDEN_DIR / f"{label}.json"


def run_case(label: str, tmp_path: Path) -> dict[str, Any]:
    """Train the case; per-step total and per-language losses."""
    from tests.methods._tiny import train

    name, options = CASES[label]
    out = train(name, options, tmp_path=tmp_path, overrides=SUITE_OVERRIDES, seed=SEED, model_name=MODEL)
    languages = SUITE_OVERRIDES["languages"]["seen"]
    return {
        "loss": out.tracker.series("train/loss"),
        "loss_by_language": {lang: out.tracker.series(f"train/loss/{lang}") for lang in languages},
        "skipped_steps": out.metrics.get("train/skipped_steps", 0.0),
    }
