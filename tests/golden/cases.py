"""The golden cases: one per registered gradient method (and per Bucket-Level MOO solver), tiny llama twin, seed 0.

Each case is stored at ``results/golden/<label>.json``. A new gradient method needs a case here and a recording
(``nox -s record_golden -- "<reason>"``); ``test_golden.py`` fails until it has both.
"""

from __future__ import annotations

import hashlib
import platform
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from tests.conftest import DATA_SLICE, REPO

GOLDEN_DIR = REPO / "results" / "golden"
MODEL = "llama"
SEED = 0
STEPS = 10
RTOL = 1e-4
# the packages whose release can move a tiny-twin trajectory (the lock pins them; a record names the ones it saw)
GOLDEN_PACKAGES = ("torch", "transformers", "tokenizers", "accelerate", "peft", "trl", "numpy")
# K = 4 languages, so PCGrad's projection order (seeded per step and bucket) matters
SUITE_OVERRIDES: dict[str, Any] = {
    "languages": {"seen": ["en", "fr", "de", "es"], "unseen": []},
    "data": {"source": "json", "path": str(DATA_SLICE), "max_examples_per_language": 40},
    "train": {"steps": STEPS, "batch_size_per_language": 2, "lr": 2.0e-3, "max_seq_len": 32, "schedule": "cosine",
              "warmup_steps": 2, "save_model": False},
}
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "joint_sft": ("joint_sft", {}),
    "pcgrad": ("pcgrad", {}),
    "mgda": ("mgda", {}),
    "cagrad": ("cagrad", {}),
    "upgrad": ("upgrad", {}),
    "imtl_g": ("imtl_g", {}),
    "aligned_mtl": ("aligned_mtl", {}),
    "gradvac": ("gradvac", {}),
    "famo": ("famo", {}),
    "bkmoo_mgda": ("bkmoo", {"solver": "mgda", "bucket_cap_mb": 0.25}),
    "bkmoo_pcgrad": ("bkmoo", {"solver": "pcgrad", "bucket_cap_mb": 0.25}),
    "bkmoo_cagrad": ("bkmoo", {"solver": "cagrad", "bucket_cap_mb": 0.25}),
    "bkmoo_gradvac": ("bkmoo", {"solver": "gradvac", "bucket_cap_mb": 0.25}),
    "bkmoo_mgda_l2_meannorm": ("bkmoo", {"solver": "mgda", "bucket_cap_mb": 0.25, "normalize": "l2",
                                         "output_scale": "mean_norm"}),
}


INPUT_NAMES = {
    "data_file": f"data fixture {DATA_SLICE.relative_to(REPO)} (sha256)",
    "data": "training / held-out examples of the case (LanguageData.fingerprint)",
    "tokenizer": "tiny tokenizer (harness/models/tiny_tokenizer)",
    "initial_weights": f"initial weights of the tiny {MODEL} twin",
    "config": "resolved suite config (config_hash)",
}


def golden_path(label: str) -> Path:
    return GOLDEN_DIR / f"{label}.json"


def package_versions() -> dict[str, str]:
    out = {"python": ".".join(platform.python_version_tuple()[:2])}  # patch releases do not move numbers
    for pkg in GOLDEN_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not-installed"
    return out


def golden_inputs(label: str, data_file: Path = DATA_SLICE) -> dict[str, Any]:
    """Fingerprints of everything a case's trajectory depends on besides the code: the data fixture and the examples
    taken from it, the tokenizer, the initial weights, the resolved config, and the package versions."""
    from harness.data.sft import load_language_data
    from harness.models.loading import load_model
    from harness.models.tiny import weights_fingerprint
    from harness.models.tokenizer import tokenizer_fingerprint
    from tests.methods._tiny import make_suite

    name, options = CASES[label]
    overrides = {**SUITE_OVERRIDES, "data": {**SUITE_OVERRIDES["data"], "path": str(data_file)}}
    suite = make_suite(overrides, {"name": name, "options": dict(options)})
    model, tokenizer = load_model(MODEL, suite.scale, suite.train.dtype, suite.train.lora)
    # the config is hashed with the fixture's repository path, so the hash does not depend on where the clone lives
    portable = replace(suite, data=replace(suite.data, path=str(DATA_SLICE.relative_to(REPO))))
    return {
        "data_file": hashlib.sha256(Path(data_file).read_bytes()).hexdigest()[:12],
        "data": load_language_data(suite.data, suite.languages.all).fingerprint(),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "initial_weights": weights_fingerprint(model),
        "config": portable.config_hash(),
        "versions": package_versions(),
    }


def moved_inputs(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One line per input whose fingerprint differs from the record's (versions: one line per package)."""
    lines = [f"{INPUT_NAMES[key]}: recorded {recorded.get(key)}, now {current[key]}"
             for key in INPUT_NAMES if recorded.get(key) != current[key]]
    old, new = recorded.get("versions", {}), current["versions"]
    lines += [f"package {pkg}: recorded {old.get(pkg, 'absent')}, now {new.get(pkg, 'absent')}"
              for pkg in sorted(set(old) | set(new)) if old.get(pkg) != new.get(pkg)]
    return lines


def trajectory_mismatch(recorded: dict[str, Any], result: dict[str, Any], rtol: float = RTOL) -> str | None:
    """None when every total and per-language loss is within `rtol`; else where it first departs."""
    series = [("loss", recorded["loss"], result["loss"])]
    series += [(f"loss/{lang}", s, result["loss_by_language"].get(lang, [])) for lang, s in recorded["loss_by_language"].items()]
    for key, want, got in series:
        if len(want) != len(got):
            return f"{key}: {len(got)} steps, recorded {len(want)}"
        for step, (w, g) in enumerate(zip(want, got, strict=True)):
            if abs(g - w) > rtol * abs(w):
                return f"{key} departs at step {step}: {g:.6f}, recorded {w:.6f} (rtol {rtol:g})"
    return None


def golden_verdict(label: str, record: dict[str, Any], current: dict[str, Any], result: dict[str, Any]) -> str | None:
    """The failure message of a golden comparison, or None. Inputs that moved are named first: a record no longer
    describes a case whose inputs changed, even if the numbers happen to agree. Only when every input is the
    recorded one does a moved trajectory mean the code changed."""
    moved = moved_inputs(record.get("inputs", {}), current)
    departure = trajectory_mismatch(record, result)
    rerecord = f"if intended, re-record with the reason: nox -s record_golden -- \"<why>\" {label}"
    if moved:
        return (f"{label}: golden inputs changed since the recording ({record.get('git_commit', '?')[:10]}):\n  "
                + "\n  ".join(moved) + f"\ntrajectory: {departure or 'still matches'}\n{rerecord}")
    if departure:
        return (f"{label}: no input changed (data, tokenizer, initial weights, config and versions equal the record), "
                f"so the code changed the numbers: {departure}\n{rerecord}")
    return None


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
