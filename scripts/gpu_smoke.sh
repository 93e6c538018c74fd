#!/usr/bin/env bash
# GPU smoke test: Llama-3.1-8B's shapes with random weights on ONE GPU (nothing downloaded). For joint SFT, global
# MGDA and Bucket-Level MOO, single process, with LoRA and with full fine-tuning, it measures the step time and the
# allocator peak (torch.cuda.max_memory_allocated); a case that runs out of memory is recorded as "does not fit".
# Every case carries the capacity planner's prediction beside the measurement. Run from the repository root:
#
#   scripts/gpu_smoke.sh                                   # -> results/bench/gpu_smoke.json (the GPU named inside)
#   scripts/gpu_smoke.sh --seq 1024 --languages 4          # any option of python -m harness.distributed.gpu_smoke
#   scripts/gpu_smoke.sh --no-master-weights               # pure bf16 weights and AdamW state
#   scripts/gpu_smoke.sh --tiny --out /tmp/smoke.json      # the same path on CPU with tiny shapes (what CI tests)
#
# docs/distributed.md ("GPU smoke test") says how to read the record. Nothing else depends on it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
case " $* " in
  *" --out "*) exec "$PY" -m harness.distributed.gpu_smoke "$@" ;;
esac
case " $* " in
  *" --tiny "*|*" --dry-run "*) OUT=results/bench/gpu_smoke_cpu_tiny.json ;;
  *)
    if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
      echo "gpu_smoke.sh: no CUDA device found; the CPU path is: scripts/gpu_smoke.sh --tiny" >&2
      exit 2
    fi
    OUT=results/bench/gpu_smoke.json ;;
esac
exec "$PY" -m harness.distributed.gpu_smoke --out "$OUT" "$@"
