"""Policy-node overhead per chunk (without the model) and command-stream jitter, on CPU, tiny model.

    .venv/bin/python bench/node_overhead.py            # ~1 min on 2 cores
    .venv/bin/python bench/node_overhead.py --quick    # shorter runs

Part 1 times the node's own work for one 16-step chunk with 640x480 cameras, piece by piece:
converting every camera frame that arrives during a chunk (3 cameras x 30 Hz x 1.6 s; raw rgb8,
bgr8, and JPEG CompressedImage), composing the 4 mosaics, 16 safety-clamped command ticks, and
publishing 16 JointState commands + one JointTrajectory. Part 2 runs the real node (with the
tiny random checkpoint) against a fake driver process publishing 640x480 cameras at 30 Hz and
joints at 100 Hz, and reports the period of the command stream (node-side tick times and the
receive times of a subscriber), inference latency and the inter-chunk gap.

Writes bench/results/node_overhead.json (+ .png). Sets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and
its own ROS_DOMAIN_ID before rclpy loads, so nothing leaves the machine.
"""

from __future__ import annotations

import os

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(150 + os.getpid() % 50)

import argparse
import io
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NAMES = [f"left_j{i}" for i in range(6)] + ["left_gripper"] + [f"right_j{i}" for i in range(6)] + ["right_gripper"]
CAMS = {"head": "/t/cam_high", "left_wrist": "/t/cam_left", "right_wrist": "/t/cam_right"}  # test/fake_driver.py


def _timeit(fn, n: int) -> float:
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def part1_overhead(rclpy, n: int) -> dict:
    from PIL import Image as PILImage
    from rclpy.context import Context
    from sensor_msgs.msg import CompressedImage, JointState
    from trajectory_msgs.msg import JointTrajectory

    from memorywam_ros.ros.conversions import (
        CommandWriter,
        check_compressed,
        chunk_to_trajectory,
        decode_compressed,
        image_to_rgb,
        rgb_to_image,
    )
    from memorywam_ros.runtime.chunk_executor import ChunkExecutor
    from memorywam_ros.runtime.mosaic import compose_mosaic
    from memorywam_ros.runtime.robot_config import IOSpec
    from memorywam_ros.runtime.safety import JointLimits, SafetyFilter

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    raw, bgr = rgb_to_image(rgb), rgb_to_image(rgb, encoding="bgr8")
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", quality=90)
    jpeg = CompressedImage(format="rgb8; jpeg compressed bgr8", data=buf.getvalue())
    # camera callbacks (executor threads): validate + keep; rgb8/bgr8 stay zero-copy views, JPEG
    # stays encoded after a 1/8-scale verifying decode (catches truncation; conversions.check_compressed)
    per = {
        "callback_rgb8_ms": _timeit(lambda: image_to_rgb(raw), n * 20) * 1e3,
        "callback_bgr8_ms": _timeit(lambda: image_to_rgb(bgr), n * 20) * 1e3,
        "callback_jpeg_ms": _timeit(lambda: check_compressed(jpeg), n * 20) * 1e3,
        # inference thread, per sampled frame / mosaic
        "decode_jpeg_ms": _timeit(lambda: decode_compressed(bytes(jpeg.data)), n) * 1e3,
        "mosaic_ms": _timeit(lambda: compose_mosaic(rgb, rgb, rgb), n) * 1e3,
        "mosaic_bgr_views_ms": _timeit(lambda: compose_mosaic(*(image_to_rgb(bgr),) * 3), n) * 1e3,
    }
    limits = JointLimits(np.full(14, -3.0), np.full(14, 3.0), np.full(14, 2.0), np.full(14, 1.0))
    safety, ex, last = SafetyFilter(limits, 0.1), ChunkExecutor(), np.zeros(14)
    chunk = rng.normal(0, 0.1, (16, 14))

    def ticks() -> None:
        ex.restart_episode()
        ex.tick(0.0)
        ex.deliver(chunk, last)
        for i in range(17):
            t = ex.tick(0.1 * (i + 1))
            safety.clamp(t.target if t.target is not None else last, last)

    per["ticks_16_ms"] = _timeit(ticks, n * 10) * 1e3
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("bench_pub", context=ctx)
    pub = node.create_publisher(JointState, "/bench/joint_command", 10)
    tpub = node.create_publisher(JointTrajectory, "/bench/action_chunk", 10)
    writer = CommandWriter(IOSpec("/bench/joint_command", "sensor_msgs/msg/JointState", 0, 14, None, tuple(NAMES)))
    stamp = node.get_clock().now().to_msg()
    per["publish_16_commands_ms"] = _timeit(lambda: [pub.publish(writer.build(last, stamp)) for _ in range(16)],
                                            n * 5) * 1e3
    per["publish_trajectory_ms"] = _timeit(lambda: tpub.publish(chunk_to_trajectory(chunk, NAMES, stamp, 0.1)),
                                           n * 5) * 1e3
    node.destroy_node()
    rclpy.try_shutdown(context=ctx)
    frames = 3 * 30 * 1.6  # camera frames arriving during one chunk
    control = per["ticks_16_ms"] + per["publish_16_commands_ms"] + per["publish_trajectory_ms"]
    per["chunk_total_raw_ms"] = frames * per["callback_rgb8_ms"] + 4 * per["mosaic_ms"] + control
    per["chunk_total_jpeg_ms"] = (frames * per["callback_jpeg_ms"] + 12 * per["decode_jpeg_ms"]
                                  + 4 * per["mosaic_ms"] + control)
    return per


def _robot_config(path: Path) -> Path:
    cfg = {
        "name": "bench", "joint_names": NAMES,
        "position_min": [-3.0] * 14, "position_max": [3.0] * 14, "velocity_max": [2.0] * 14,
        "max_start_distance": [10.0] * 14,
        "state": [{"topic": "/t/joint_states", "type": "sensor_msgs/msg/JointState"}],
        "command": [{"topic": "~/joint_command", "type": "sensor_msgs/msg/JointState"}],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def part2_stream(rclpy, ckpt: Path, tmp: Path, rate_hz: float, seconds: float) -> dict:
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import JointState

    from memorywam_ros.ros.policy_node import PolicyNode

    driver = subprocess.Popen(
        [sys.executable, str(ROOT / "test" / "fake_driver.py"), "--height", "480", "--width", "640"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert driver.stdout is not None and driver.stdout.readline().strip() == "ready"
    ctx = Context()
    rclpy.init(context=ctx)
    params = {"model_path": str(ckpt), "robot_config": str(_robot_config(tmp / "robot.yaml")),
              "command_rate_hz": rate_hz, "device": "cpu", "torch_threads": 1,
              **{f"cameras.{k}.topic": v for k, v in CAMS.items()}}
    node = PolicyNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    recv: list[float] = []
    ticks: list[float] = []
    rec = rclpy.create_node("bench_recorder", context=ctx)
    rec.create_subscription(JointState, "/memorywam_policy/joint_command", lambda m: recv.append(time.monotonic()), 100)
    tick_cb = node._control_loop._fn

    def timed_tick() -> None:  # node-side tick times, independent of delivery
        ticks.append(time.monotonic())
        tick_cb()

    node._control_loop._fn = timed_tick
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(rec)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    deadline = time.monotonic() + 30
    while not node.enable()[0]:
        assert time.monotonic() < deadline, "node never saw the joints"
        time.sleep(0.2)
    t_start = time.monotonic()
    time.sleep(seconds)
    node.shutdown()
    tk = np.diff([t for t in ticks if t >= t_start])
    rv = np.diff([t for t in recv if t >= t_start])
    out = {
        "command_rate_hz": rate_hz,
        "seconds": seconds,
        "chunks": node.counters["chunks"],
        "tick_period_ms": {"mean": tk.mean() * 1e3, "p50": np.percentile(tk, 50) * 1e3,
                           "p99": np.percentile(tk, 99) * 1e3, "max": tk.max() * 1e3},
        "recv_period_ms": {"mean": rv.mean() * 1e3, "p50": np.percentile(rv, 50) * 1e3,
                           "p99": np.percentile(rv, 99) * 1e3, "max": rv.max() * 1e3},
        "inference_ms": {"p50": node.stats["latency"].percentile(50) * 1e3,
                         "p99": node.stats["latency"].percentile(99) * 1e3},
        "mosaic_ms_p50": node.stats["mosaic"].percentile(50) * 1e3,
        "gap_ms": {"p50": (node.stats["gap"].percentile(50) or 0) * 1e3,
                   "p99": (node.stats["gap"].percentile(99) or 0) * 1e3},
        "_tick_periods_ms": (tk * 1e3).tolist(),
    }
    ex.shutdown(timeout_sec=2.0)
    spin.join(5.0)
    node.destroy_node()
    rec.destroy_node()
    rclpy.try_shutdown(context=ctx)
    driver.stdin.write("quit\n")  # type: ignore[union-attr]
    driver.stdin.flush()  # type: ignore[union-attr]
    driver.wait(10)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--checkpoint", help="existing checkpoint (default: a fresh random tiny one)")
    args = ap.parse_args()
    import rclpy
    import torch

    from memorywam_ros.runtime.checkpoint import init_random

    seconds = 8.0 if args.quick else 20.0
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        ckpt = Path(args.checkpoint) if args.checkpoint else init_random(tmp / "tiny", preset="tiny")
        per = part1_overhead(rclpy, 5 if args.quick else 20)
        streams = [part2_stream(rclpy, ckpt, tmp, rate, seconds) for rate in (10.0, 50.0)]
    print(f"\nnode overhead per 16-step chunk, 640x480 cameras ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__})")
    for k, v in per.items():
        print(f"  {k:26s} {v:9.3f} ms")
    print("  (callbacks: per frame; decode/mosaic: inference thread; chunk totals: 144 frames, 4 mosaics,"
          " 16 ticks)")
    print("\ncommand stream (tiny model on CPU, 1 torch thread)")
    print(f"  {'rate':>6} {'chunks':>6} {'tick p50':>9} {'tick p99':>9} {'tick max':>9} {'recv p99':>9} "
          f"{'infer p50':>9} {'gap p50':>8}")
    for s in streams:
        t, r = s["tick_period_ms"], s["recv_period_ms"]
        print(f"  {s['command_rate_hz']:6.0f} {s['chunks']:6d} {t['p50']:9.2f} {t['p99']:9.2f} {t['max']:9.2f} "
              f"{r['p99']:9.2f} {s['inference_ms']['p50']:9.1f} {s['gap_ms']['p50']:8.1f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "command": "python bench/node_overhead.py" + (" --quick" if args.quick else ""),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "per_chunk_overhead_ms": per,
        "streams": [{k: v for k, v in s.items() if not k.startswith("_")} for s in streams],
    }
    out = RESULTS / "node_overhead.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(streams), figsize=(5 * len(streams), 3.2))
        for ax, s in zip(np.atleast_1d(axes), streams):
            ax.hist(s["_tick_periods_ms"], bins=60)
            ax.axvline(1e3 / s["command_rate_hz"], color="k", lw=0.8)
            ax.set_yscale("log")
            ax.set_xlabel("command period (ms)")
            ax.set_title(f"{s['command_rate_hz']:.0f} Hz stream, tiny model on CPU")
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=100)
        print(f"wrote {out.with_suffix('.png')}")
    except ImportError:
        pass


if __name__ == "__main__":
    main()
