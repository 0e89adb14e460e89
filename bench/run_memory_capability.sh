#!/usr/bin/env bash
# The memory capability benchmark in one command (issue 8):
#   bench/run_memory_capability.sh           # the result: ~75 min on 2 CPU cores (3 processes, 1 thread each)
#   bench/run_memory_capability.sh --quick   # smoke run, ~7 min; its numbers are not the result
# MiniGrid-MemoryS7-v0 and MiniGrid-MemoryS13Random-v0 run as two processes beside the dual-arm run,
# then one table: bench/results/memory_capability_<preset>_table.{md,json}. Run ./scripts/setup.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
QUICK=()
DUAL_STEPS=(--steps 800)  # the dual arm's budget on 2 cores: 5 x 800 steps of the small model
PRESET=full
if [[ "${1:-}" == "--quick" ]]; then QUICK=(--quick); DUAL_STEPS=(); PRESET=quick; fi
R=bench/results
export MUJOCO_GL="${MUJOCO_GL:-egl}" OMP_NUM_THREADS=1
pids=()
"$PY" bench/memory_capability.py "${QUICK[@]}" --threads 1 --envs MiniGrid-MemoryS7-v0 \
  --out "$R/memory_capability_${PRESET}_s7" & pids+=($!)
"$PY" bench/memory_capability.py "${QUICK[@]}" --threads 1 --envs MiniGrid-MemoryS13Random-v0 \
  --out "$R/memory_capability_${PRESET}_s13" & pids+=($!)
"$PY" bench/memory_dual_arm.py "${QUICK[@]}" "${DUAL_STEPS[@]}" --threads 1 --model small --out "$R/memory_dual_arm_${PRESET}_small" \
  & pids+=($!)
for pid in "${pids[@]}"; do wait "$pid"; done
"$PY" bench/memory_capability.py --merge "$R/memory_capability_${PRESET}_s7.json" \
  "$R/memory_capability_${PRESET}_s13.json" --out "$R/memory_capability_${PRESET}"
"$PY" bench/memory_table.py "$R/memory_capability_${PRESET}.json" "$R/memory_dual_arm_${PRESET}_small.json" \
  --out "$R/memory_capability_${PRESET}_table"
