#!/usr/bin/env bash
# Install the project's environment (.venv) from a lock: every package at its exact locked version, then the
# project itself (editable, no dependencies), then check that what is installed equals the lock.
#   VENV=.venv LOCK=requirements/lock-cpu.txt PYTHON=python3 scripts/install_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
LOCK=${LOCK:-requirements/lock-cpu.txt}
PYTHON=${PYTHON:-python3}
LOCK_PYTHON=3.11
CPU_WHEELS=${CPU_WHEELS:-/opt/wheels}

[ -f "$LOCK" ] || { echo "install_env: no lock file $LOCK (see requirements/README.md)" >&2; exit 2; }
have=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
  || { echo "install_env: $PYTHON not found; set PYTHON=python$LOCK_PYTHON" >&2; exit 2; }
if [ "$have" != "$LOCK_PYTHON" ]; then
  echo "install_env: $LOCK is locked for Python $LOCK_PYTHON, but $PYTHON is Python $have." >&2
  echo "  use PYTHON=python$LOCK_PYTHON, or re-lock for your Python (requirements/README.md)" >&2
  exit 2
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
uv_version=$(sed -n 's/^uv==\([^ ]*\).*/\1/p' "$LOCK")
if [ "$("$VENV/bin/uv" --version 2>/dev/null | cut -d' ' -f2)" != "$uv_version" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "uv==$uv_version"
fi
if grep -q '^torch==.*+cpu' "$LOCK"; then
  if [ -d "$CPU_WHEELS" ]; then torch_source=(--find-links "$CPU_WHEELS");
  else torch_source=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match); fi
else
  torch_source=()
fi
# --compile-bytecode: write every module's .pyc now. Where PYTHONDONTWRITEBYTECODE is set (this project's machines
# set it) Python never writes them, and every process recompiled torch, transformers and mlflow from source:
# about 14 s of start-up per process (tests, torchrun ranks, the main job). Re-checking costs about 2.5 s.
"$VENV/bin/uv" pip sync --quiet --compile-bytecode --python "$VENV/bin/python" "${torch_source[@]}" "$LOCK"
# the project itself, built with the locked setuptools (no isolated build env with a newer one)
"$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --no-deps --no-build-isolation -e .
"$VENV/bin/python" -m harness.lockfile "$LOCK" --quiet
