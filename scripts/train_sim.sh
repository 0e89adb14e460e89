#!/usr/bin/env bash
# Train the checkpoint the README's main job drives the simulated arm with, through our own
# pipeline: scripted TransferCube demos (real rosbag2 mcap) -> memorywam-convert -> memorywam-precompute
# -> memorywam-train (torchrun, 2 CPU processes) -> --export checkpoints/sim_transfer_cube.
# About 45 minutes on 2 CPU cores (resumable: run it again after an interruption) (EPISODES=50, STEPS=1500; measured on a busy machine). Run ./scripts/setup.sh first.
# The shipped checkpoint is this script's defaults: observation lead 12 with a committed prefix of 12
# (measured closed loop: bench/results/realtime_closed_loop_l12_prefix.json; README "Simulated dual arm").
# LEAD=L (or --observation-lead L) precomputes the latents with observation lead L (control steps the
# node's inference gets before its chunk is due; README "Timing"); the exported manifest records it.
#   LEAD=5 OUT=checkpoints/sim_transfer_cube_l5 WORK=runs/sim_pipeline_l5 ./scripts/train_sim.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${WORK:-runs/sim_pipeline}"
OUT="${OUT:-checkpoints/sim_transfer_cube}"
EPISODES="${EPISODES:-50}"
STEPS="${STEPS:-1500}"
if [[ "${1:-}" == "--observation-lead" ]]; then LEAD="${2:?--observation-lead needs a value}"; fi
LEAD="${LEAD:-12}"  # observation lead: fits the ~1.2 s closed-loop chunk latency on 2 CPU cores (README "Timing")
PREFIX="${PREFIX:-$LEAD}"  # committed prefix: = LEAD (the model is given the commands still running), or 0
DART="${DART:-0}"  # std (rad) of the noise on the demos' executed arm targets (DART; labels stay clean)
HEAD_FOVY="${HEAD_FOVY:-78}"  # head camera framing of the demos (memorywam_ros/sim/aloha.py); the demo must match
BIN=.venv/bin
export MUJOCO_GL="${MUJOCO_GL:-egl}" GLOO_SOCKET_IFNAME=lo OMP_NUM_THREADS=1

# Resumable: each finished stage leaves $WORK/.done_<stage> and is skipped when the script runs again
# (an unfinished stage starts over: delete $WORK to start from scratch); training resumes from its
# last checkpoint (resume: auto, every ckpt_every steps).
stage() {  # stage NAME COMMAND...
  local name="$1"; shift
  if [[ -f "$WORK/.done_$name" ]]; then echo "[train_sim] $name: done before, skipped"; return; fi
  echo "[train_sim] $name ($(date -u +%H:%M:%S))"
  "$@"
  touch "$WORK/.done_$name"
}
mkdir -p "$WORK"
stage demos bash -c 'rm -rf "$0/bags" && "$1/memorywam-sim-demos" --episodes "$2" --out "$0/bags" --seed 1000 \
  --camera-rate 10 --head-fovy "$3" --dart "$4" --quiet' "$WORK" "$BIN" "$EPISODES" "$HEAD_FOVY" "$DART"
stage convert bash -c '"$1/memorywam-convert" "$0"/bags/* --out "$0/episodes" --config config/record_topics_sim.yaml \
  --instruction "transfer the cube" --overwrite --quiet' "$WORK" "$BIN"
# the tiny Wan2.2-layout VAE (random weights, frozen) that encodes the latents and ships with the export
stage init "$BIN/memorywam-checkpoint" init-random --preset tiny --out "$WORK/init" --overwrite
stage precompute bash -c 'rm -rf "$0/latents" && "$1/memorywam-precompute" "$0/episodes" --vae "$0/init" \
  --random-text-dim 32 --text-len 16 --observation-lead "$2" --out "$0/latents" --quiet' "$WORK" "$BIN" "$LEAD"
echo "[train_sim] train ($(date -u +%H:%M:%S))"
"$BIN/torchrun" --standalone --nproc_per_node 2 -m memorywam_train.train --config config/train_sim.yaml \
  latents_dir="$WORK/latents" out_dir="$WORK/run" steps="$STEPS" model.action.committed_prefix="$PREFIX" \
  progress=false --export "$OUT"
echo "checkpoint: $OUT, observation lead $LEAD, head fovy $HEAD_FOVY  (run it: .venv/bin/memorywam-demo --model $OUT --head-fovy $HEAD_FOVY)"
