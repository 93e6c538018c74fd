#!/usr/bin/env bash
# The communication / memory comparison of the DDP hooks on GPUs with NCCL (the CPU/gloo version is
# tests/bench/test_comm_bench.py). Needs >= 2 GPUs on one node; run from the repository root:
#
#   scripts/gpu_compare.sh                 # N = every power of two up to the GPU count (2, 4, 8)
#   NPROCS="2 4" HIDDEN=2048 LAYERS=8 SEQ=512 scripts/gpu_compare.sh
#
# For every N and hook (mean, sharded, allgather, full, full_gather) it runs
#   torchrun --standalone --nproc-per-node=N -m harness.distributed.bench --hook H --out results/bench/gpu_<H>_n<N>.json
# Each record names the device (GPU model × N, torch version, nccl), bytes per step per collective, the ratio to a
# plain all-reduce, hook time, step time and the allocator peak (max_memory_allocated). A summary table is written to
# results/bench/gpu_summary.md. Compare bytes with `polymoo plan` (same formulas) and with the CPU records.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -lt 2 ]; then
  echo "gpu_compare.sh: needs at least 2 CUDA devices (found $GPUS); the CPU comparison is: pytest -m bench tests/bench/test_comm_bench.py" >&2
  exit 2
fi
if [ -z "${NPROCS:-}" ]; then
  NPROCS=""; n=2; while [ "$n" -le "$GPUS" ]; do NPROCS="$NPROCS $n"; n=$((n * 2)); done
fi
HOOKS=${HOOKS:-"mean sharded allgather full full_gather"}
EXTRA=()
[ -n "${HIDDEN:-}" ] && EXTRA+=(--hidden "$HIDDEN")
[ -n "${LAYERS:-}" ] && EXTRA+=(--layers "$LAYERS")
[ -n "${INTERMEDIATE:-}" ] && EXTRA+=(--intermediate "$INTERMEDIATE")
[ -n "${SEQ:-}" ] && EXTRA+=(--seq-len "$SEQ")
[ -n "${PER_RANK:-}" ] && EXTRA+=(--per-rank "$PER_RANK")
mkdir -p results/bench
for n in $NPROCS; do
  for hook in $HOOKS; do
    echo "== N=$n hook=$hook"
    "$PY" -m torch.distributed.run --standalone --nproc-per-node="$n" -m harness.distributed.bench \
      --hook "$hook" --out "results/bench/gpu_${hook}_n${n}.json" "${EXTRA[@]}"
  done
done
"$PY" - <<'PYEOF'
import json, pathlib
rows = [json.loads(p.read_text()) for p in sorted(pathlib.Path("results/bench").glob("gpu_*_n*.json"))]
rows.sort(key=lambda r: (r["world_size"], r["hook"]))
lines = ["# DDP hooks on GPUs (NCCL) — measured", "", f"Device: {rows[0]['device'] if rows else '?'}", "",
         "| N | hook | bytes/step (MB) | × all-reduce | hook time (s) | step time (s) | peak MB |", "|---|---|---|---|---|---|---|"]
for r in rows:
    lines.append(f"| {r['world_size']} | {r['hook']} | {r['bytes_per_step']/1e6:.2f} | {r['bytes_ratio_allreduce']:.3f} | "
                 f"{r['hook_time_s']:.4f} | {r['step_time_s']:.4f} | {r['peak_mem_delta_mb']:.0f} |")
pathlib.Path("results/bench/gpu_summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF
