"""Re-record the golden loss trajectories: ``python -m tests.golden.record "<reason>" [label ...]``
(or ``nox -s record_golden -- "<reason>"``). Deliberately only: put the reason in the commit message too.

Writes ``results/golden/<label>.json`` with the trajectory, the case, the fingerprints of its inputs (data fixture,
examples, tokenizer, initial weights, resolved config, package versions), the git commit and the reason.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("POLYMOO_CACHE", str(Path(__file__).resolve().parents[2] / "results" / "cache"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str]) -> int:
    import torch

    from harness.tracking import git_commit
    from tests.conftest import DATA_SLICE, REPO
    from tests.golden.cases import (
        CASES,
        GOLDEN_DIR,
        MODEL,
        RTOL,
        SEED,
        STEPS,
        SUITE_OVERRIDES,
        golden_inputs,
        golden_path,
        run_case,
    )

    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    reason, labels = argv[0], argv[1:] or list(CASES)
    unknown = [label for label in labels if label not in CASES]
    if unknown:
        print(f"unknown cases {unknown}; known: {list(CASES)}", file=sys.stderr)
        return 2
    torch.use_deterministic_algorithms(True, warn_only=True)
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for label in labels:
        name, options = CASES[label]
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = run_case(label, Path(tmp))
        portable = {**SUITE_OVERRIDES, "data": {**SUITE_OVERRIDES["data"], "path": str(DATA_SLICE.relative_to(REPO))}}
        record = {
            "label": label, "method": name, "options": options, "model": MODEL, "seed": SEED, "steps": STEPS,
            "suite_overrides": portable, "rtol": RTOL, **result, "inputs": golden_inputs(label),
            "torch_threads": torch.get_num_threads(), "git_commit": git_commit(),
            "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "reason": reason,
        }
        golden_path(label).write_text(json.dumps(record, indent=2) + "\n")
        print(f"{label:<28} {time.perf_counter() - started:6.1f} s  loss {result['loss'][0]:.4f} -> "
              f"{result['loss'][-1]:.4f}  -> {golden_path(label).relative_to(GOLDEN_DIR.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
