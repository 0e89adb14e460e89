#!/usr/bin/env bash
# Train a checkpoint that drives the simulated dual arm, through our own pipeline: scripted demos
# (real rosbag2 mcap) -> memorywam-convert -> [memorywam-train-vae] -> memorywam-precompute ->
# memorywam-train (torchrun, 1 CPU process by default) -> --export checkpoints/sim_<task>. Run ./scripts/setup.sh first.
#   ./scripts/train_sim.sh                          # TransferCube: the README's main job (~1.2 h on 2 cores)
#   TASK=look_and_press ./scripts/train_sim.sh      # Look-and-Press (memory; config/train_look_and_press.yaml)
#   TASK=insertion ./scripts/train_sim.sh           # Insertion with TransferCube's recipe (no shipped checkpoint)
# Resumable: run it again after an interruption.
# The shipped TransferCube checkpoint is this script's defaults: observation lead 12 with a committed
# prefix of 12 (measured closed loop: bench/results/realtime_closed_loop_l12_prefix.json; README
# "Simulated dual arm"). LEAD=L (or --observation-lead L) precomputes the latents with observation
# lead L (control steps the node's inference gets before its chunk is due; README "Timing"); the
# exported manifest records it.
#   LEAD=5 OUT=checkpoints/sim_transfer_cube_l5 WORK=runs/sim_pipeline_l5 ./scripts/train_sim.sh
# Look-and-Press: CUE_START / CUE_FRAMES / DELAY_CHUNKS time the cue (default: memorywam_ros/sim/stages.py
# LOOK_AND_PRESS_TIMING, the shipped checkpoint's); MEMORY_POLICY=window|no_gist|full|no_anchor trains
# an ablation (same data and budget); memorywam-demo --task look_and_press runs the result.
# Levers: EPISODES, STEPS, HEAD_FOVY, DART, VAE_STEPS (> 0: first train the tiny VAE on the demos'
# frames, foreground weighted, memorywam-train-vae; 0: it keeps its random weights), NPROC (1 = plain
# single process: ~2x the steps/s of 2 at batch 1 on CPU), TRAIN_ARGS="key=value ..." (memorywam-train overrides, e.g. "state_dropout=0.5")
# with RUN=<folder under $WORK> so a variant trains on the same latents without touching another run.
set -euo pipefail
cd "$(dirname "$0")/.."
TASK="${TASK:-transfer_cube}"
case "$TASK" in
  transfer_cube) CONFIG="${CONFIG:-config/train_sim.yaml}"; INSTRUCTION="transfer the cube"
    WORK="${WORK:-runs/sim_pipeline}"; TASK_ARGS=()
    # the shipped recipe (bench/results/sim_levers.md): head camera at 36°, the VAE trained on the demos, 3000 steps
    HEAD_FOVY="${HEAD_FOVY:-36}"; VAE_STEPS="${VAE_STEPS:-2000}"; STEPS="${STEPS:-3000}" ;;
  insertion) CONFIG="${CONFIG:-config/train_sim.yaml}"; INSTRUCTION="insert the peg into the socket"
    WORK="${WORK:-runs/sim_insertion}"; TASK_ARGS=()
    # TransferCube's recipe unchanged (bench/results/sim_levers.md "Insertion")
    HEAD_FOVY="${HEAD_FOVY:-36}"; VAE_STEPS="${VAE_STEPS:-2000}"; STEPS="${STEPS:-3000}" ;;
  look_and_press) CONFIG="${CONFIG:-config/train_look_and_press.yaml}"; INSTRUCTION="press the button the panel showed"
    read -r CS CF DC < <(.venv/bin/python -c "from memorywam_ros.sim.stages import LOOK_AND_PRESS_TIMING as t; \
print(t['cue_start'], t['cue_frames'], t['delay_chunks'])")
    CUE_START="${CUE_START:-$CS}"; CUE_FRAMES="${CUE_FRAMES:-$CF}"; DELAY_CHUNKS="${DELAY_CHUNKS:-$DC}"
    WORK="${WORK:-runs/sim_look_and_press_c${CUE_START}}"; STEPS="${STEPS:-3000}"  # the shipped checkpoint's budget
    TASK_ARGS=(--cue-start "$CUE_START" --cue-frames "$CUE_FRAMES" --delay-chunks "$DELAY_CHUNKS") ;;
  *) echo "TASK must be transfer_cube, insertion or look_and_press, not $TASK" >&2; exit 2 ;;
esac
MEMORY_POLICY="${MEMORY_POLICY:-hybrid}"
RUN="${RUN:-run_$MEMORY_POLICY}"  # the training run's folder under $WORK (resumes from its checkpoints)
read -r -a TRAIN_ARGS <<< "${TRAIN_ARGS:-}"  # extra memorywam-train overrides, e.g. TRAIN_ARGS="cond_noise_prob=0"
OUT="${OUT:-checkpoints/sim_$TASK}"
EPISODES="${EPISODES:-50}"
STEPS="${STEPS:-1500}"  # (each task sets its own above: TransferCube and Insertion 3000, Look-and-Press 3000)
if [[ "${1:-}" == "--observation-lead" ]]; then LEAD="${2:?--observation-lead needs a value}"; fi
LEAD="${LEAD:-12}"  # observation lead: fits the ~1.2 s closed-loop chunk latency on 2 CPU cores (README "Timing")
PREFIX="${PREFIX:-$LEAD}"  # committed prefix: = LEAD (the model is given the commands still running), or 0
DART="${DART:-0}"  # std (rad) of the noise on the demos' executed arm targets (DART; labels stay clean)
VAE_STEPS="${VAE_STEPS:-0}"  # memorywam-train-vae steps (0: the tiny VAE keeps its random weights; TransferCube: 2000)
HEAD_FOVY="${HEAD_FOVY:-78}"  # (TransferCube: 36) head camera framing of the demos (memorywam_ros/sim/aloha.py); the demo must match
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
stage demos bash -c 'rm -rf "$0/bags" && "$1/memorywam-sim-demos" --task "$5" --episodes "$2" --out "$0/bags" \
  --seed 1000 --camera-rate 10 --head-fovy "$3" --dart "$4" --quiet "${@:6}"' \
  "$WORK" "$BIN" "$EPISODES" "$HEAD_FOVY" "$DART" "$TASK" "${TASK_ARGS[@]}"
stage convert bash -c '"$1/memorywam-convert" "$0"/bags/* --out "$0/episodes" --config config/record_topics_sim.yaml \
  --instruction "$2" --overwrite --quiet' "$WORK" "$BIN" "$INSTRUCTION"
# the tiny Wan2.2-layout VAE (random weights, frozen) that encodes the latents and ships with the export
stage init "$BIN/memorywam-checkpoint" init-random --preset tiny --out "$WORK/init" --overwrite
ENCODER="$WORK/init"
if (( VAE_STEPS > 0 )); then  # the same tiny VAE trained on the demos' mosaics (resumes from $WORK/init_vae)
  stage vae "$BIN/memorywam-train-vae" "$WORK/episodes" --init "$WORK/init" --out "$WORK/init_vae" \
    --steps "$VAE_STEPS" --threads 1
  ENCODER="$WORK/init_vae"
fi
stage precompute bash -c 'rm -rf "$0/latents" && "$1/memorywam-precompute" "$0/episodes" --vae "$3" \
  --random-text-dim 32 --text-len 16 --observation-lead "$2" --out "$0/latents" --quiet' "$WORK" "$BIN" "$LEAD" "$ENCODER"
echo "[train_sim] train ($(date -u +%H:%M:%S))"
"$BIN/torchrun" --standalone --nproc_per_node "${NPROC:-1}" -m memorywam_train.train --config "$CONFIG" \
  latents_dir="$WORK/latents" out_dir="$WORK/$RUN" steps="$STEPS" memory_policy="$MEMORY_POLICY" \
  model.action.committed_prefix="$PREFIX" progress=false "${TRAIN_ARGS[@]}" --export "$OUT"
# the simulator setup the demos were recorded with travels with the checkpoint (memorywam_ros/sim/sim_setup.py)
"$BIN/python" -c 'import sys; from memorywam_ros.sim.sim_setup import write_sim_setup as w; w(*sys.argv[1:3], float(sys.argv[3]))' \
  "$OUT" "$TASK" "$HEAD_FOVY"
echo "checkpoint: $OUT, task $TASK ${TASK_ARGS[*]}, memory $MEMORY_POLICY, observation lead $LEAD, head fovy $HEAD_FOVY"
echo "run it: .venv/bin/memorywam-demo --task $TASK --model $OUT ${TASK_ARGS[*]}   # framing from $OUT/sim.json"
