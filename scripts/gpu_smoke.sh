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
# With two or more GPUs it then runs the FSDP2 engine (distributed.engine: fsdp2; joint SFT, per-unit Bucket-Level
# MOO and global MGDA, one language per rank) on Llama-3.1-8B's hidden, MLP and vocabulary sizes (4 decoder layers,
# random weights) under torchrun/NCCL:
# -> results/bench/gpu_fsdp2_n<N>.json (bytes per step against FSDP2's reduce-scatter, step time, peak memory). One GPU:
# that part is skipped with a message (FSDP2's MOO needs a rank per language; NCCL takes one rank per GPU).
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
"$PY" -m harness.distributed.gpu_smoke --out "$OUT" "$@"
case " $* " in *" --tiny "*|*" --dry-run "*) exit 0 ;; esac
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -lt 2 ]; then
  echo "gpu_smoke.sh: FSDP2 engine part skipped: $NGPU GPU (it needs 2 or more, one language per rank)" >&2
  exit 0
fi
"$PY" -m torch.distributed.run --nproc-per-node="$NGPU" -m harness.distributed.fsdp2_bench \
  --out "results/bench/gpu_fsdp2_n$NGPU.json" --vocab 128256 --hidden 4096 --intermediate 14336 --layers 4 \
  --seq-len 512 --per-rank 1
