"""A fake dual-arm robot driver for the policy-node graph tests, run as its own process (like real
drivers, so its publishing never competes with the node under test for one GIL).

Publishes three cameras at 30 Hz (rgb8; the left wrist bgr8), the 14 joints at 100 Hz both as one
sensor_msgs/JointState by name and as two per-arm std_msgs/Float64MultiArray, and tracks the
streamed command exactly (a perfect position-controlled arm). Controlled by lines on stdin:
`cam <name> on|off`, `joints on|off`, `bad <camera>` (publish malformed images),
`joint <index> <value>|off` (report a fixed value for one joint: a bad encoder word),
`truncate <camera> on|off` (its JPEGs cut in half), `stamp <camera>|all <offset_s>` (stamp its
frames with a clock that far ahead, negative: behind), `quit`.

    python test/fake_driver.py --ns /t --node /memorywam_policy [--height 480 --width 640]
        [--compressed] [--stamp-offset S]
"""

from __future__ import annotations

import argparse
import io
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import rclpy
from PIL import Image as PILImage
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray

NAMES = [f"left_j{i}" for i in range(6)] + ["left_gripper"] + [f"right_j{i}" for i in range(6)] + ["right_gripper"]
CAMERAS = {"head": "cam_high", "left_wrist": "cam_left", "right_wrist": "cam_right"}
BAD_IMAGES = [
    {"encoding": "mono8", "height": 4, "width": 4, "step": 4, "data": bytes(16)},
    {"encoding": "16UC1", "height": 4, "width": 4, "step": 8, "data": bytes(32)},
    {"encoding": "rgb8", "height": 4, "width": 4, "step": 12, "data": bytes(7)},  # wrong data length
    {"encoding": "rgb8", "height": 0, "width": 0, "step": 0, "data": b""},  # zero size
    {"encoding": "yuv422_yuy2", "height": 2, "width": 2, "step": 4, "data": bytes(8)},
]


class FakeDriver(Node):
    def __init__(self, ns: str, policy_node: str, image_hw: tuple[int, int] = (48, 64),
                 compressed: bool = False, stamp_offset: float = 0.0) -> None:
        super().__init__("fake_driver")
        self.q = np.zeros(14)
        self.joint_override: dict[int, float] = {}
        self.truncated: set[str] = set()
        self.stamp_offset = dict.fromkeys(CAMERAS, stamp_offset)
        self.cameras_on = dict.fromkeys(CAMERAS, True)
        self.joints_on = True
        self.lock = threading.Lock()
        rng = np.random.default_rng(0)
        h, w = image_hw
        self.images = {n: rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for n in CAMERAS}
        self.cam_pubs = {
            n: self.create_publisher(Image, f"{ns}/{t}", qos_profile_sensor_data) for n, t in CAMERAS.items()
        }
        self.jpeg_pubs = {}
        if compressed:  # image_transport's naming: <topic>/compressed, JPEG
            self.jpeg_pubs = {n: self.create_publisher(CompressedImage, f"{ns}/{t}/compressed", qos_profile_sensor_data)
                              for n, t in CAMERAS.items()}
            self.jpegs = {}
            for n, rgb in self.images.items():
                buf = io.BytesIO()
                PILImage.fromarray(rgb).save(buf, format="JPEG")
                self.jpegs[n] = buf.getvalue()
        self.js_pub = self.create_publisher(JointState, f"{ns}/joint_states", 10)
        self.arm_pubs = [self.create_publisher(Float64MultiArray, f"{ns}/arm_{a}_status", 10) for a in "lr"]
        self.create_subscription(JointState, f"{policy_node}/joint_command", self._on_command, 100)
        self.stop = threading.Event()
        # plain threads with absolute deadlines: rates independent of the executor's load
        self.threads = [threading.Thread(target=self._loop, args=(f, p), daemon=True)
                        for f, p in ((self._cameras, 1 / 30), (self._joints, 1 / 100))]
        for t in self.threads:
            t.start()

    def _loop(self, fn: Callable[[], None], period: float) -> None:
        next_t = time.monotonic()
        while not self.stop.is_set():
            fn()
            next_t += period
            self.stop.wait(max(0.0, next_t - time.monotonic()))

    def _image(self, name: str, stamp) -> Image:
        rgb = self.images[name]
        enc = "bgr8" if name == "left_wrist" else "rgb8"
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=enc, step=3 * rgb.shape[1])
        msg.header.stamp, msg.header.frame_id = stamp, f"{name}_frame"
        msg.data = np.ascontiguousarray(rgb[:, :, ::-1] if enc == "bgr8" else rgb).tobytes()
        return msg

    def _cameras(self) -> None:
        now = self.get_clock().now()
        for name, pub in self.cam_pubs.items():
            if self.cameras_on[name]:
                stamp = (now + Duration(nanoseconds=round(self.stamp_offset[name] * 1e9))).to_msg()
                pub.publish(self._image(name, stamp))
                if name in self.jpeg_pubs:
                    data = self.jpegs[name]
                    if name in self.truncated:  # a real JPEG cut short: header intact, data missing
                        data = data[: len(data) // 2]
                    msg = CompressedImage(format="rgb8; jpeg compressed bgr8", data=data)
                    msg.header.stamp = stamp
                    self.jpeg_pubs[name].publish(msg)

    def _joints(self) -> None:
        if not self.joints_on:
            return
        with self.lock:
            q = self.q.copy()
            for j, v in self.joint_override.items():
                q[j] = v
        msg = JointState(name=NAMES, position=q.tolist())
        msg.header.stamp = self.get_clock().now().to_msg()
        self.js_pub.publish(msg)
        self.arm_pubs[0].publish(Float64MultiArray(data=[*q[:7].tolist(), 0.0]))  # an 8th value, ignored
        self.arm_pubs[1].publish(Float64MultiArray(data=q[7:].tolist()))

    def _on_command(self, msg: JointState) -> None:
        with self.lock:
            self.q = np.asarray(msg.position, dtype=float)

    def command(self, line: str) -> bool:
        parts = line.split()
        if not parts:
            return True
        if parts[0] == "quit":
            return False
        if parts[0] == "cam":
            self.cameras_on[parts[1]] = parts[2] == "on"
        elif parts[0] == "joints":
            self.joints_on = parts[1] == "on"
        elif parts[0] == "joint":
            with self.lock:
                if parts[2] == "off":
                    self.joint_override.pop(int(parts[1]), None)
                else:
                    self.joint_override[int(parts[1])] = float(parts[2])
        elif parts[0] == "truncate":
            (self.truncated.add if parts[2] == "on" else self.truncated.discard)(parts[1])
        elif parts[0] == "stamp":
            for name in CAMERAS if parts[1] == "all" else [parts[1]]:
                self.stamp_offset[name] = float(parts[2])
        elif parts[0] == "bad":
            for _ in range(3):
                for kw in BAD_IMAGES:
                    self.cam_pubs[parts[1]].publish(Image(**kw))
                time.sleep(0.05)
        print(f"ok {line.strip()}", flush=True)
        return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", default="/t")
    ap.add_argument("--node", default="/memorywam_policy")
    ap.add_argument("--height", type=int, default=48)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--compressed", action="store_true", help="also publish <topic>/compressed JPEG")
    ap.add_argument("--stamp-offset", type=float, default=0.0, help="camera clock ahead of ours by S s")
    args = ap.parse_args()
    rclpy.init()
    driver = FakeDriver(args.ns, args.node, (args.height, args.width), args.compressed, args.stamp_offset)
    ex = SingleThreadedExecutor()
    ex.add_node(driver)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            if not driver.command(line):
                break
    finally:
        driver.stop.set()
        for t in driver.threads:
            t.join(1.0)
        ex.shutdown(timeout_sec=1.0)
        spin.join(2.0)
        driver.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
