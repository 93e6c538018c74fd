#!/usr/bin/env bash
# Re-compile requirements/lock-cpu.txt and lock-cuda.txt from pyproject.toml (extras: dev) and the torch pins.
# Extra arguments go to `uv pip compile` (e.g. --upgrade, --upgrade-package transformers). Run as `nox -s lock`.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
PYTHON_VERSION=3.11                   # the lock's Python (these machines run CPython 3.11)
PLATFORM=x86_64-manylinux_2_28        # the CPU torch wheel is manylinux_2_28
CPU_WHEELS=${CPU_WHEELS:-/opt/wheels} # where the CPU torch wheel lies on this project's machines
if [ -d "$CPU_WHEELS" ]; then cpu_source=(--find-links "$CPU_WHEELS");
else cpu_source=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match); fi
common=(pyproject.toml --extra dev --python-version "$PYTHON_VERSION" --python-platform "$PLATFORM"
        --custom-compile-command "nox -s lock" --quiet)
"$UV" pip compile "${common[@]}" -c requirements/torch-cpu.in "${cpu_source[@]}" -o requirements/lock-cpu.txt "$@"
"$UV" pip compile "${common[@]}" -c requirements/torch-cuda.in -o requirements/lock-cuda.txt "$@"
echo "locked: requirements/lock-cpu.txt ($(grep -c '==' requirements/lock-cpu.txt) packages)," \
     "requirements/lock-cuda.txt ($(grep -c '==' requirements/lock-cuda.txt) packages)"
echo "commit them with the reason; if numbers moved, re-record the golden trajectories (nox -s record_golden -- \"why\")"
