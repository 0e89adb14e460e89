#!/usr/bin/env bash
# The passkey probe with one process per (policy, D) cell, JOBS at a time, merged into one result
# (bench/passkey.py --merge): the cells are independent, so a machine with more cores (or one GPU,
# `--device cuda`) runs them side by side instead of one after another.
#   bench/run_passkey_grid.sh STEM [bench/passkey.py options]     # -> STEM.{json,md,png}
#   JOBS=15 PY=python3 bench/run_passkey_grid.sh bench/results/passkey_patch_pooled_sup8_2000steps \
#     --cue patch --gist-init pooled --steps 2000 --supervised-chunks 8 --device cuda
# POLICIES and DELAYS choose the cells (default: every policy at D = 8, 32, 128). Each cell writes
# STEM.parts/<policy>_<D>.{json,log} (and resumes from STEM.parts/<policy>_<D>.ckpt/ when stopped);
# the merge takes the parts that finished and trains any missing cell itself. Run ./scripts/setup.sh first.
set -uo pipefail
cd "$(dirname "$0")/.."
STEM="${1:?usage: bench/run_passkey_grid.sh STEM [bench/passkey.py options]}"; shift
PY="${PY:-.venv/bin/python}"
POLICIES="${POLICIES:-hybrid full window no_gist no_anchor}"
DELAYS="${DELAYS:-8 32 128}"
JOBS="${JOBS:-2}"
PARTS="$STEM.parts"
mkdir -p "$PARTS"
export OMP_NUM_THREADS=1
for D in $DELAYS; do
  for P in $POLICIES; do
    while (( $(jobs -rp | wc -l) >= JOBS )); do wait -n; done
    echo "[passkey grid] $P at D = $D ($(date -u +%H:%M:%S))"
    "$PY" bench/passkey.py "$@" --delays "$D" --policies "$P" --out "$PARTS/${P}_$D" > "$PARTS/${P}_$D.log" 2>&1 &
  done
done
wait
# shellcheck disable=SC2086  # POLICIES and DELAYS are word lists
"$PY" bench/passkey.py "$@" --delays $DELAYS --policies $POLICIES --out "$STEM" --merge "$PARTS"/*.json
