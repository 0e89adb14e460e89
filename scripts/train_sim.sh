#!/usr/bin/env bash
# Train the checkpoint the README's main job drives the simulated arm with, through our own
# pipeline: scripted TransferCube demos (real rosbag2 mcap) -> memorywam-convert -> memorywam-precompute
# -> memorywam-train (torchrun, 2 CPU processes) -> --export checkpoints/sim_transfer_cube.
# About 45 minutes on 2 CPU cores (EPISODES=50, STEPS=1500; measured on a busy machine). Run ./scripts/setup.sh first.
# LEAD=L (or --observation-lead L) precomputes the latents with observation lead L (control steps the
# node's inference gets before its chunk is due; README "Timing"); the exported manifest records it.
#   LEAD=5 OUT=checkpoints/sim_transfer_cube_l5 WORK=runs/sim_pipeline_l5 ./scripts/train_sim.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${WORK:-runs/sim_pipeline}"
OUT="${OUT:-checkpoints/sim_transfer_cube}"
EPISODES="${EPISODES:-50}"
STEPS="${STEPS:-1500}"
LEAD="${LEAD:-0}"
if [[ "${1:-}" == "--observation-lead" ]]; then LEAD="${2:?--observation-lead needs a value}"; fi
BIN=.venv/bin
export MUJOCO_GL="${MUJOCO_GL:-egl}" GLOO_SOCKET_IFNAME=lo OMP_NUM_THREADS=1

"$BIN/memorywam-sim-demos" --episodes "$EPISODES" --out "$WORK/bags" --seed 1000 --camera-rate 10 --quiet
"$BIN/memorywam-convert" "$WORK"/bags/* --out "$WORK/episodes" --config config/record_topics_sim.yaml \
  --instruction "transfer the cube" --quiet
# the tiny Wan2.2-layout VAE (random weights, frozen) that encodes the latents and ships with the export
"$BIN/memorywam-checkpoint" init-random --preset tiny --out "$WORK/init" --overwrite
"$BIN/memorywam-precompute" "$WORK/episodes" --vae "$WORK/init" --random-text-dim 32 --text-len 16 \
  --observation-lead "$LEAD" --out "$WORK/latents" --quiet
"$BIN/torchrun" --standalone --nproc_per_node 2 -m memorywam_train.train --config config/train_sim.yaml \
  latents_dir="$WORK/latents" out_dir="$WORK/run" steps="$STEPS" progress=false --export "$OUT"
echo "checkpoint: $OUT, observation lead $LEAD  (run it: .venv/bin/memorywam-demo --model $OUT)"
