"""`memorywam-demo`: the policy node drives the simulated dual arm over real ROS 2 topics.

    .venv/bin/memorywam-demo                      # 3 episodes with the shipped sim checkpoint
    .venv/bin/memorywam-demo --episodes 20 --results bench/results/closed_loop.json
    .venv/bin/memorywam-demo --task look_and_press   # memory: press the button a panel showed ~11 s before

Starts `memorywam_sim` (MuJoCo ALOHA, three cameras, /joint_states) and `memorywam_policy` (the
robot node, with config/robots/aloha_sim.yaml) as separate processes, exactly as on a robot, and
supervises them from a third ROS 2 participant: per episode it resets the simulator and the
policy's memory, enables the policy, and waits for task success or a timeout. It prints each
chunk's latency (observation stamp to chunk publication) and inter-chunk gap, task success per
episode, and checks every streamed command against the robot file's limits.

DDS stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and gets a domain id of its own
unless you set either variable yourself.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from memorywam_ros.ros.launch_utils import FASTDDS_PROFILE_VARS, dds_environment
from memorywam_ros.sim.sim_setup import SIM_SETUP_FILE, checkpoint_sim_setup, head_fovy_for
from memorywam_ros.sim.stages import LOOK_AND_PRESS_TIMING, MAX_REWARD, REWARD_STAGES

REPO = Path(__file__).resolve().parents[2]
TASKS = ("transfer_cube", "look_and_press", "insertion")  # default model checkpoints/sim_<task> (none for insertion)
EPISODE_TIMEOUT_S = {"transfer_cube": 25.0, "insertion": 25.0}  # look_and_press: from its cue timing (episode_timeout)


def default_model(task: str) -> Path:
    return REPO / "checkpoints" / f"sim_{task}"


def episode_timeout(args: argparse.Namespace) -> float:
    """--episode-timeout, or the task's: Look-and-Press presses after cue + delay chunks (1.6 s each),
    plus the first inference, the reach and the 0.3 s hold (~5 s), plus 5 s of slack."""
    if args.episode_timeout is not None:
        return float(args.episode_timeout)
    if args.task == "look_and_press":
        t = look_and_press_timing(args)
        return 1.6 * (t["cue_start"] + t["cue_frames"] + t["delay_chunks"]) + 10.0
    return EPISODE_TIMEOUT_S[args.task]


def look_and_press_timing(args: argparse.Namespace) -> dict[str, int]:
    """The cue timing the simulator runs: the options given, else the defaults (stages.py)."""
    return {k: (v if getattr(args, k) is None else int(getattr(args, k))) for k, v in LOOK_AND_PRESS_TIMING.items()}
POLICY = "/memorywam_policy"
SIM = "/memorywam_sim"


@dataclass
class Episode:
    seed: int
    success: bool = False
    duration_s: float = 0.0
    chunks: list[dict] = field(default_factory=list)  # {"latency_s", "gap_s"}
    commands: int = 0
    max_joint_motion: float = 0.0  # largest measured joint change from the episode's start (rad)
    max_reward: int = 0  # the simulator's highest reward stage in the episode (sim/aloha.py REWARD_STAGES)
    violations: list[str] = field(default_factory=list)
    # the policy's /diagnostics values before enabling and after disabling (bench/realtime.py)
    diagnostics: dict[str, dict[str, str]] = field(default_factory=dict)


def _ros_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(101, 199)))
    env.setdefault("MUJOCO_GL", "egl")
    env.update(dds_environment(env))  # the shipped Fast DDS profile for the camera images
    return env


def _start(module: str, ros_args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", module, "--ros-args", *ros_args]
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # the policy node publishes its hold command on SIGINT
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sim_arguments(args: argparse.Namespace, model: Path) -> list[str]:
    """The simulator node's parameters: seed, task (and its options), and the head camera framing
    the checkpoint's demos were recorded with (its sim.json; --head-fovy overrides)."""
    sim_args = ["-p", f"seed:={args.seed}", "-p", f"task:={args.task}"]
    if args.task == "look_and_press":
        sim_args += [a for k, v in look_and_press_timing(args).items() for a in ("-p", f"{k}:={v}")]
    try:
        fovy = head_fovy_for(model, args.head_fovy)
        trained_for = checkpoint_sim_setup(model).get("task")
    except ValueError as err:
        raise SystemExit(f"[demo] {err}") from None
    if trained_for is not None and trained_for != args.task:
        raise SystemExit(f"[demo] {model} was trained for the {trained_for} task ({model / SIM_SETUP_FILE}), "
                         f"not {args.task}: run it with --task {trained_for}")
    if fovy is not None:
        sim_args += ["-p", f"head_fovy_deg:={fovy}"]
        print(f"[demo] head camera field of view {fovy:g}° "
              f"({'--head-fovy' if args.head_fovy is not None else model / SIM_SETUP_FILE})", flush=True)
    return sim_args


def run(args: argparse.Namespace) -> dict:
    env = _ros_environment()
    os.environ.update({k: env[k] for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "MUJOCO_GL",
                                           *FASTDDS_PROFILE_VARS) if k in env})
    import rclpy  # after the environment: DDS reads it at init

    from memorywam_ros.ros.params import resolve_robot_config
    from memorywam_ros.runtime.robot_config import RobotConfig

    model = Path(args.model or default_model(args.task))
    if not (model / "memorywam.json").is_file():
        raise SystemExit(f"{model} is not a checkpoint directory. Train the simulator checkpoint with "
                         f"TASK={args.task} scripts/train_sim.sh, or pass --model DIR.")
    timeout = episode_timeout(args)
    robot = RobotConfig.from_yaml(resolve_robot_config("aloha_sim.yaml"))
    logs = Path(args.log_dir)
    logs.mkdir(parents=True, exist_ok=True)
    print(f"[demo] ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} discovery={env['ROS_AUTOMATIC_DISCOVERY_RANGE']}; "
          f"node logs in {logs}/", flush=True)
    sim = _start("memorywam_ros.ros.sim_node", sim_arguments(args, model), env, logs / "sim.log")
    policy = _start("memorywam_ros.ros.policy_node", [
        "--params-file", str(REPO / "config" / "memorywam.yaml"),
        "-p", f"model_path:={model}", "-p", "robot_config:=aloha_sim.yaml", "-p", f"device:={args.device}",
        *(["-p", f"instruction:={args.instruction}"] if args.instruction else []),  # else the checkpoint's
        "-p", f"num_steps:={args.num_steps}",
        "-p", f"torch_threads:={args.torch_threads}",
    ], env, logs / "policy.log")
    from memorywam_ros.ros.demo_supervisor import DemoSupervisor

    rclpy.init()
    supervisor = DemoSupervisor(robot)
    executor = rclpy.executors.MultiThreadedExecutor(num_threads=2)
    executor.add_node(supervisor)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        supervisor.wait_ready(args.startup_timeout, (sim, policy))
        episodes = []
        for i in range(args.episodes):
            episode = supervisor.run_episode(args.seed + i, timeout)
            episodes.append(episode)
            lat = [c["latency_s"] * 1e3 for c in episode.chunks]
            print(f"[demo] episode {i + 1}/{args.episodes} seed {episode.seed}: "
                  f"{'SUCCESS' if episode.success else 'no success'} after {episode.duration_s:.1f} s, "
                  f"{len(episode.chunks)} chunks (latency p50 {np.median(lat) if lat else float('nan'):.0f} ms), "
                  f"{episode.commands} commands, {len(episode.violations)} limit violations; "
                  f"reached: {REWARD_STAGES[args.task][min(episode.max_reward, MAX_REWARD)]}", flush=True)
    finally:
        supervisor.enable(False)
        _stop(policy)
        _stop(sim)
        executor.shutdown()
        spinner.join(timeout=5.0)
        supervisor.destroy_node()
        rclpy.try_shutdown()
    return summarize(episodes, args)


def _repo_relative(path: str | Path) -> str:
    """A checkpoint path as the results files name it: relative to the repository when inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


def _diagnostic_int(e: Episode, key: str, when: str = "end") -> int | None:
    """A policy /diagnostics value before enabling ("start") or after the episode ("end"); None: not reported."""
    try:
        return int(e.diagnostics[when][key])
    except (KeyError, ValueError):
        return None


def _counter_delta(e: Episode, key: str) -> int | None:
    """A policy /diagnostics counter's change over the episode (None: not reported)."""
    end, start = _diagnostic_int(e, key), _diagnostic_int(e, key, "start")
    return None if end is None or start is None else end - start


def summarize(episodes: list[Episode], args: argparse.Namespace) -> dict:
    chunks = [c for e in episodes for c in e.chunks]
    lat = np.array([c["latency_s"] for c in chunks]) * 1e3
    gap = np.array([c["gap_s"] for c in chunks if c["gap_s"] is not None]) * 1e3

    def stats(x: np.ndarray) -> dict:
        if not len(x):
            return {"n": 0}
        return {"n": len(x), "p50_ms": float(np.percentile(x, 50)), "p99_ms": float(np.percentile(x, 99)),
                "max_ms": float(x.max())}

    stages = REWARD_STAGES[args.task]
    result = {
        "task": args.task,
        **({"look_and_press": look_and_press_timing(args)} if args.task == "look_and_press" else {}),
        "model": _repo_relative(args.model or default_model(args.task)),
        "episodes": len(episodes),
        "successes": sum(e.success for e in episodes),
        "success_rate": sum(e.success for e in episodes) / max(1, len(episodes)),
        "chunk_latency": stats(lat),
        "inter_chunk_gap": stats(gap),
        "commands": sum(e.commands for e in episodes),
        "violations": [v for e in episodes for v in e.violations],
        "cache_bytes_end_max": max((b for e in episodes if (b := _diagnostic_int(e, "cache_bytes")) is not None),
                                   default=None),
        "per_episode": [{"seed": e.seed, "success": e.success, "duration_s": e.duration_s, "chunks": len(e.chunks),
                         "max_joint_motion": e.max_joint_motion, "max_reward": e.max_reward,
                         "stage": stages[min(e.max_reward, MAX_REWARD)],
                         "chunks_rejected": _counter_delta(e, "chunks_rejected"),
                         "inference_errors": _counter_delta(e, "inference_errors"),
                         "stalls": _counter_delta(e, "stalls"),
                         "deadline_misses": _counter_delta(e, "deadline_misses"),
                         "cache_bytes_end": _diagnostic_int(e, "cache_bytes")}
                        for e in episodes],
        "stages": {name: sum(min(e.max_reward, MAX_REWARD) == k for e in episodes)
                   for k, name in enumerate(stages)},
        "device": args.device,
        "num_steps": args.num_steps,
    }
    print(f"[demo] {result['successes']}/{result['episodes']} episodes successful; chunk latency "
          f"p50 {result['chunk_latency'].get('p50_ms', float('nan')):.0f} ms "
          f"p99 {result['chunk_latency'].get('p99_ms', float('nan')):.0f} ms; inter-chunk gap "
          f"p50 {result['inter_chunk_gap'].get('p50_ms', float('nan')):.0f} ms "
          f"p99 {result['inter_chunk_gap'].get('p99_ms', float('nan')):.0f} ms; "
          f"{result['commands']} commands, {len(result['violations'])} limit violations", flush=True)
    return result


def build_parser() -> argparse.ArgumentParser:
    """memorywam-demo's options (bench/realtime.py builds its runs from the same parser)."""
    parser = argparse.ArgumentParser(prog="memorywam-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="transfer_cube", choices=TASKS,
                        help="simulated task (memorywam_ros/sim/tasks.py)")
    parser.add_argument("--model", default=None, help="checkpoint directory (default: checkpoints/sim_<task>)")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--episode-timeout", type=float, default=None,
                        help="seconds per episode without success (default: transfer_cube and insertion 25, "
                             "look_and_press 1.6 x (cue start + cue frames + delay) + 10)")
    parser.add_argument("--seed", type=int, default=100000,
                        help="the simulator node's seed parameter; the demo resets before each episode and the "
                             "node's k-th reset uses seed + k, so episode k runs seed + k (demos used 1000..)")
    for k, v in LOOK_AND_PRESS_TIMING.items():
        parser.add_argument(f"--{k.replace('_', '-')}", type=int, default=None, metavar="N",
                            help=f"look_and_press: simulator {k} (default {v}, the shipped checkpoint's)")
    parser.add_argument("--instruction", default="", help="instruction (default: the checkpoint's first)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-steps", type=int, default=0, help="denoising steps per chunk (0: the checkpoint's)")
    parser.add_argument("--head-fovy", type=float, default=None, metavar="DEG",
                        help="simulator head camera field of view (default: the checkpoint's sim.json, the framing "
                             "its demos were recorded with; without one the sim node's 78°)")
    parser.add_argument("--torch-threads", type=int, default=1, help="policy torch threads (leave cores to the sim)")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--log-dir", default="runs/demo_logs")
    parser.add_argument("--results", default=None, help="write the summary JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.task != "look_and_press" and any(getattr(args, k) is not None for k in LOOK_AND_PRESS_TIMING):
        parser.error("--cue-start / --cue-frames / --delay-chunks apply to --task look_and_press only")
    started = time.monotonic()
    result = run(args)
    result["wall_s"] = time.monotonic() - started
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(json.dumps(result, indent=2) + "\n")
        print(f"[demo] wrote {args.results}")
    return 1 if result["violations"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
