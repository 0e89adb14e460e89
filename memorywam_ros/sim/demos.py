"""`memorywam-sim-demos`: scripted gym-aloha episodes written as real rosbag2 MCAP bags.

Each kept episode becomes one bag directory `OUT/episode_NNNN_seed_S/` (metadata.yaml + .mcap,
written by the `rosbags` library, ROS 2 Kilted message definitions) with exactly the topics and
types a recording of the simulated robot (`memorywam_sim` + policy node) has:

    /cam_high/camera/color/image_raw         sensor_msgs/msg/Image rgb8   --camera-rate (30 Hz)
    /cam_left_wrist/camera/color/image_raw   sensor_msgs/msg/Image rgb8   --camera-rate
    /cam_right_wrist/camera/color/image_raw  sensor_msgs/msg/Image rgb8   --camera-rate
    /joint_states                            sensor_msgs/msg/JointState   --joint-rate (50 Hz), 14 names
    /memorywam_policy/joint_command          sensor_msgs/msg/JointState   10 Hz, the action
    /instruction                             std_msgs/msg/String          once, at the start

so `memorywam-convert --config config/record_topics_sim.yaml` processes them unchanged.

Time: all events lie on the sim's 2 ms physics grid; header.stamp = episode start (wall clock at
generation, like a live recording) + sim time of the event; the bag's log time equals the stamp.
Camera events at 30 Hz are rounded to the grid (33/34 ms apart), like a real camera's jitter.
At equal times the order is: joint state and images (observation at t), then the command of t.
MCAP chunks are zstd-compressed (the rosbag2 `zstd_fast`-style storage compression; the file
stays indexable). `--task look_and_press` records the Look-and-Press task (sim/look_and_press.py:
signal panel, two buttons, `ScriptedLookAndPress`; cue timing by --cue-start / --cue-frames /
--delay-chunks) on the same topics; its instruction names the task. Only successful episodes are
kept unless --keep-failed; each seed is first run without rendering (~0.3 s) so failed seeds cost
no rendering.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from memorywam_ros.sim import topics

DEFAULT_CAMERA_RATE = 30.0
DEFAULT_JOINT_RATE = 50.0
CONTROL_RATE = 10.0


@dataclass
class EpisodeStats:
    seed: int
    success: bool
    path: Path | None
    messages: dict[str, int]
    bytes: int
    seconds: float
    sim_seconds: float


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


class _BagSink:
    """Serialises our messages into a rosbags Writer (one connection per topic)."""

    def __init__(self, writer, ts, joint_names: tuple[str, ...]) -> None:
        self.w = writer
        self.ts = ts
        self.names = list(joint_names)
        self.T = ts.types
        self.conns = {}
        for cam in topics.IMAGE_TOPICS:
            self.conns[topics.IMAGE_TOPICS[cam]] = writer.add_connection(
                topics.IMAGE_TOPICS[cam], topics.IMAGE_TYPE, typestore=ts
            )
        for topic, typ in (
            (topics.JOINT_STATES_TOPIC, topics.JOINT_STATE_TYPE),
            (topics.COMMAND_TOPIC, topics.JOINT_STATE_TYPE),
            (topics.INSTRUCTION_TOPIC, topics.STRING_TYPE),
        ):
            self.conns[topic] = writer.add_connection(topic, typ, typestore=ts)
        self.counts = dict.fromkeys(self.conns, 0)

    def _header(self, t_ns: int, frame_id: str):
        stamp = self.T["builtin_interfaces/msg/Time"](sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)
        return self.T["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def _write(self, topic: str, t_ns: int, msg, msgtype: str) -> None:
        self.w.write(self.conns[topic], t_ns, self.ts.serialize_cdr(msg, msgtype))
        self.counts[topic] += 1

    def image(self, cam: str, t_ns: int, img: np.ndarray) -> None:
        h, w, _ = img.shape
        msg = self.T[topics.IMAGE_TYPE](
            header=self._header(t_ns, topics.FRAME_IDS[cam]),
            height=h,
            width=w,
            encoding="rgb8",
            is_bigendian=0,
            step=w * 3,
            data=np.ascontiguousarray(img, dtype=np.uint8).reshape(-1),
        )
        self._write(topics.IMAGE_TOPICS[cam], t_ns, msg, topics.IMAGE_TYPE)

    def joints(self, topic: str, t_ns: int, pos: np.ndarray, vel: np.ndarray | None = None) -> None:
        msg = self.T[topics.JOINT_STATE_TYPE](
            header=self._header(t_ns, ""),
            name=self.names,
            position=np.asarray(pos, dtype=np.float64),
            velocity=np.asarray(vel if vel is not None else [], dtype=np.float64),
            effort=np.zeros(0, dtype=np.float64),
        )
        self._write(topic, t_ns, msg, topics.JOINT_STATE_TYPE)

    def text(self, topic: str, t_ns: int, data: str) -> None:
        self._write(topic, t_ns, self.T[topics.STRING_TYPE](data=data), topics.STRING_TYPE)


def record_episode(
    sim,
    seed: int,
    path: Path,
    camera_rate: float = DEFAULT_CAMERA_RATE,
    joint_rate: float = DEFAULT_JOINT_RATE,
    start_ns: int | None = None,
    compress: bool = True,
    progress=None,
    dart: float = 0.0,
) -> tuple[bool, dict[str, int]]:
    """Run the scripted policy from `seed` and write the bag at `path` -> (success, message counts).

    `dart` > 0: the executed arm targets carry `scripted.dart_noise` (std `dart` rad) while the
    command topic records the demonstrator's clean target: the action label of a DART demo."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    from memorywam_ros.sim.scripted import dart_noise

    ts = _typestore()
    from memorywam_ros.sim.tasks import scripted_policy

    policy = scripted_policy(sim, CONTROL_RATE)
    sim.reset(seed, render=False)
    policy.reset(sim)
    noise = dart_noise(seed, policy.num_steps, dart)
    if start_ns is None:
        start_ns = time.time_ns()
    dt_ns = round(sim.physics_dt * 1e9)
    grid = lambda period_s: max(1, round(period_s / sim.physics_dt))  # noqa: E731 - in physics steps
    cam_period = 1.0 / camera_rate
    joint_every = grid(1.0 / joint_rate)
    ctrl_every = grid(1.0 / CONTROL_RATE)
    end_step = policy.num_steps * ctrl_every  # the last command is held one full period

    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    if compress:
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with writer:
        sink = _BagSink(writer, ts, sim.joint_names)
        sink.text(topics.INSTRUCTION_TOPIC, start_ns, sim.instruction)
        step = 0
        cam_i = 0
        while step <= end_step:
            t_ns = start_ns + step * dt_ns
            if step % joint_every == 0:
                sink.joints(topics.JOINT_STATES_TOPIC, t_ns, sim.qpos, sim.qvel)
            if step == round(cam_i * cam_period / sim.physics_dt):
                for cam, img in sim.render().items():
                    sink.image(cam, t_ns, img)
                cam_i += 1
            if step % ctrl_every == 0 and step < end_step:
                q = policy.act(sim)
                sim.set_targets(q + noise[step // ctrl_every])  # held until the next
                sink.joints(topics.COMMAND_TOPIC, t_ns, sim.clip_targets(q))  # the label: the clean target
                if progress is not None:
                    progress.update(1)
            # Advance to the next event on the 2 ms grid.
            nxt = min(
                (step // joint_every + 1) * joint_every,
                (step // ctrl_every + 1) * ctrl_every,
                round(cam_i * cam_period / sim.physics_dt),
            )
            if nxt > end_step:
                if step == end_step:
                    break
                nxt = end_step
            sim.advance((nxt - step) * sim.physics_dt)
            step = nxt
    return sim.success, dict(sink.counts)


def _bag_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def generate(
    episodes: int,
    out: Path,
    task: str = "transfer_cube",
    seed: int = 0,
    keep_failed: bool = False,
    camera_rate: float = DEFAULT_CAMERA_RATE,
    joint_rate: float = DEFAULT_JOINT_RATE,
    camera_sizes: dict[str, tuple[int, int]] | None = None,
    max_attempts: int | None = None,
    compress: bool = True,
    show_progress: bool = True,
    head_fovy_deg: float | None = None,
    dart: float = 0.0,
    look_and_press: dict[str, int] | None = None,
) -> list[EpisodeStats]:
    """Write `episodes` bags (successful ones unless keep_failed) from consecutive seeds.

    `look_and_press`: LookAndPressSim's cue_start / cue_frames / delay_chunks (that task only)."""
    from tqdm import tqdm

    from memorywam_ros.sim import tasks

    if task not in tasks.SCRIPTED:
        raise SystemExit(f"no scripted demonstrator for task {task!r} (only {', '.join(tasks.SCRIPTED)})")
    sim = tasks.make_sim(task, camera_sizes, head_fovy_deg, look_and_press)
    dry_run = tasks.scripted_success(task)
    out.mkdir(parents=True, exist_ok=True)
    max_attempts = max_attempts if max_attempts is not None else 3 * episodes + 10
    stats: list[EpisodeStats] = []
    kept = 0
    s = seed
    with (
        sim,
        tqdm(total=episodes, unit="ep", disable=not show_progress, desc="sim demos") as bar,
    ):
        while kept < episodes and s < seed + max_attempts:
            t0 = time.perf_counter()
            ok = dry_run(sim, s, dart)  # dry run, no rendering
            path = out / f"episode_{kept:04d}_seed_{s}"
            if not ok and not keep_failed:
                stats.append(EpisodeStats(s, False, None, {}, 0, time.perf_counter() - t0, sim.time_s))
                bar.set_postfix(failed=sum(not x.success for x in stats))
                s += 1
                continue
            if path.exists():
                raise SystemExit(f"{path} exists; choose an empty --out or another --seed")
            ok, counts = record_episode(sim, s, path, camera_rate, joint_rate, compress=compress, dart=dart)
            if not ok and not keep_failed:  # dry run and recording disagree: never keep a failure
                shutil.rmtree(path)
                path_kept = None
            else:
                path_kept = path
                kept += 1
                bar.update(1)
            size = _bag_bytes(path) if path_kept else 0
            stats.append(EpisodeStats(s, ok, path_kept, counts, size, time.perf_counter() - t0, sim.time_s))
            s += 1
    return stats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="memorywam-sim-demos",
        description="Scripted gym-aloha demonstrations as rosbag2 MCAP bags (robot topics and types).",
    )
    p.add_argument("--episodes", type=int, required=True, help="number of bags to write")
    p.add_argument("--out", type=Path, required=True, help="output directory (one bag directory per episode)")
    p.add_argument("--task", default="transfer_cube", choices=["transfer_cube", "insertion", "look_and_press"],
                   help="a task with a scripted demonstrator (sim/tasks.py SCRIPTED)")
    p.add_argument("--seed", type=int, default=0, help="first seed; episodes use consecutive seeds")
    p.add_argument("--keep-failed", action="store_true", help="also keep episodes the env did not mark successful")
    p.add_argument("--camera-rate", type=float, default=DEFAULT_CAMERA_RATE, help="image rate, Hz (default 30)")
    p.add_argument("--joint-rate", type=float, default=DEFAULT_JOINT_RATE, help="/joint_states rate, Hz (default 50)")
    p.add_argument("--head-size", type=int, nargs=2, default=(256, 320), metavar=("H", "W"))
    p.add_argument("--wrist-size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"))
    p.add_argument("--dart", type=float, default=0.0, metavar="RAD",
                   help="std of the noise added to the executed arm targets (DART; the bag records the clean "
                        "target as the command), e.g. 0.02")
    p.add_argument("--head-fovy", type=float, default=None, metavar="DEG",
                   help="head camera vertical field of view (default: the sim's, memorywam_ros/sim/aloha.py)")
    p.add_argument("--cue-start", type=int, default=None, metavar="FRAME",
                   help="look_and_press: first latent frame (1.6 s) the panel shows the cue (default 0)")
    p.add_argument("--cue-frames", type=int, default=None, metavar="N",
                   help="look_and_press: latent frames the cue is shown (default 2)")
    p.add_argument("--delay-chunks", type=int, default=None, metavar="N",
                   help="look_and_press: chunks (1.6 s) the arms wait after the cue before pressing (default 2)")
    p.add_argument("--no-compress", action="store_true", help="write uncompressed MCAP chunks")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if a.episodes < 1:
        p.error("--episodes must be >= 1")
    lp_args = {k: v for k, v in (("cue_start", a.cue_start), ("cue_frames", a.cue_frames),
                                 ("delay_chunks", a.delay_chunks)) if v is not None}
    if lp_args and a.task != "look_and_press":
        p.error("--cue-start / --cue-frames / --delay-chunks apply to --task look_and_press only")
    sizes = {"top": tuple(a.head_size), "left_wrist": tuple(a.wrist_size), "right_wrist": tuple(a.wrist_size)}
    t0 = time.perf_counter()
    stats = generate(
        a.episodes,
        a.out,
        task=a.task,
        seed=a.seed,
        keep_failed=a.keep_failed,
        camera_rate=a.camera_rate,
        joint_rate=a.joint_rate,
        camera_sizes=sizes,
        compress=not a.no_compress,
        show_progress=not a.quiet,
        head_fovy_deg=a.head_fovy,
        dart=a.dart,
        look_and_press=lp_args,
    )
    kept = [x for x in stats if x.path is not None]
    tried = len(stats)
    ok = sum(x.success for x in stats)
    mb = np.mean([x.bytes for x in kept]) / 1e6 if kept else 0.0
    sec = np.mean([x.seconds for x in kept]) if kept else 0.0
    print(
        f"{len(kept)} bag(s) in {a.out} | scripted success {ok}/{tried} seeds | {mb:.1f} MB and "
        f"{sec:.1f} s per kept episode | total {time.perf_counter() - t0:.1f} s"
    )
    return 0 if len(kept) == a.episodes else 1


if __name__ == "__main__":
    sys.exit(main())
