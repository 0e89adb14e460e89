"""`memorywam_sim`: the gym-aloha dual arm as a ROS 2 robot (cameras, joint states, streamed commands).

Publishes what the real robot's drivers publish (docs/CONTRACTS.md): three realsense-style rgb8
`sensor_msgs/Image` topics (`/cam_high|cam_left_wrist|cam_right_wrist/camera/color/image_raw`,
frame `<name>_color_optical_frame`, header.stamp = the ROS time of the rendered state) and
`/joint_states` (14 names). It follows the policy's streamed `sensor_msgs/JointState` command by
joint name (unknown names ignored, positions clamped to the sim robot's limits, the last target
held when nothing arrives), like a position-controlled arm. `~/success` (std_msgs/Bool,
transient-local so a late subscriber gets the current value; published on change and every
`success_period_s`), `~/max_reward` (std_msgs/Int32, the same way: the episode's highest reward
stage, `aloha.REWARD_STAGES` says what each means) and `~/reset` (std_srvs/Trigger: new episode
with the next seed).

Scheduling: physics advances in wall-clock real time on a timer (each tick integrates the elapsed
time, capped at `max_catchup_s` after a stall so the arm never fast-forwards); joint states are
published on their own timer. Rendering the three cameras costs ~30-40 ms on 2 CPU cores, so the
render timer only copies the state (`mj_copyData`, microseconds) and a dedicated render thread
(which owns the EGL contexts: they are bound to the thread that created them) renders and
publishes it; MuJoCo releases the GIL while rendering, so physics and /joint_states keep their
rates (inline rendering cut /joint_states from 50 to ~34 Hz, measured). If the render thread is
still busy at a render tick, that frame is skipped (a camera drops frames rather than queueing).
All executor callbacks share one mutually exclusive group: the sim is never stepped concurrently.
`render_rate_hz` defaults to 10 Hz (the policy's control rate) rather than a camera's 30 Hz to
spare the CPU the policy needs.

No torch here (the node may run next to the policy on a small machine).
"""

from __future__ import annotations

import array
import threading
import time
from typing import Any

import numpy as np
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Int32
from std_srvs.srv import Trigger

from memorywam_ros.ros.params import declare_table
from memorywam_ros.sim import topics
from memorywam_ros.sim.aloha import GYM_ALOHA_HEAD_FOVY_DEG
from memorywam_ros.sim.sim_setup import HEAD_FOVY_RANGE_DEG
from memorywam_ros.sim.tasks import OPTIONS, TASKS, make_sim

__all__ = ["PARAMETERS", "SimNode", "main"]

# name: (default, description, read_only, range or None)
PARAMETERS: dict[str, tuple[Any, str, bool, tuple[float, float] | None]] = {
    "task": ("transfer_cube", f"simulated task (memorywam_ros/sim/tasks.py): {', '.join(TASKS)}", True, None),
    "seed": (0, "seed of the first episode; each ~/reset uses the next one", True, (0, 2**31 - 1)),
    "command_topic": (topics.COMMAND_TOPIC, "streamed joint targets (sensor_msgs/JointState, by name)", True, None),
    "physics_rate_hz": (100.0, "physics timer rate; each tick integrates the elapsed wall time", True, (1.0, 1000.0)),
    "render_rate_hz": (10.0, "camera publish rate (all three cameras per tick)", True, (0.1, 60.0)),
    "joint_state_rate_hz": (50.0, "/joint_states publish rate", True, (1.0, 500.0)),
    "success_period_s": (1.0, "~/success is republished at this period (and on every change)", True, (0.05, 60.0)),
    "max_catchup_s": (0.1, "most sim time one physics tick integrates after a stall", True, (0.002, 1.0)),
    "head_height": (256, "head (top) camera image height, px", True, (16, 1080)),
    "head_width": (320, "head (top) camera image width, px", True, (16, 1920)),
    "wrist_height": (128, "wrist camera image height, px", True, (16, 1080)),
    "wrist_width": (160, "wrist camera image width, px", True, (16, 1920)),
    "head_fovy_deg": (GYM_ALOHA_HEAD_FOVY_DEG, "head (top) camera vertical field of view, degrees (the framing the "
                      "checkpoint was trained with: memorywam_ros/sim/aloha.py)", True, HEAD_FOVY_RANGE_DEG),
    # look_and_press only (sim/look_and_press.py); timed in latent frames (1.6 s) from the first command
    "cue_start": (OPTIONS["look_and_press"]["cue_start"], "look_and_press: first latent frame the panel shows "
                  "the cue, counted from the episode's first command", True, (0, 1000)),
    "cue_frames": (OPTIONS["look_and_press"]["cue_frames"], "look_and_press: latent frames the cue is shown",
                   True, (1, 1000)),
    "delay_chunks": (OPTIONS["look_and_press"]["delay_chunks"], "look_and_press: chunks the demonstrations "
                     "waited after the cue (the scripted arm's timing; the score does not use it)", True, (0, 1000)),
}


class SimNode(Node):
    """The simulated robot. All callbacks in one mutually exclusive group (see module doc)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("memorywam_sim", **kwargs)
        p = declare_table(self, PARAMETERS)
        self._p = p

        sizes = {
            "top": (int(p["head_height"]), int(p["head_width"])),
            "left_wrist": (int(p["wrist_height"]), int(p["wrist_width"])),
            "right_wrist": (int(p["wrist_height"]), int(p["wrist_width"])),
        }
        options = {k: int(p[k]) for k in OPTIONS.get(p["task"], {})}
        # the task's events (the Look-and-Press cue) are timed from the first command after a reset
        self.sim = make_sim(p["task"], sizes, float(p["head_fovy_deg"]), options, clock_on_engage=True)
        self._engaged = False
        self._index = {n: i for i, n in enumerate(self.sim.joint_names)}
        self._episode = 0
        self.sim.reset(int(p["seed"]), render=False)
        self._unknown_logged: set[str] = set()

        group = MutuallyExclusiveCallbackGroup()
        # Images: RELIABLE like realsense-ros's default (a best-effort subscriber still matches).
        image_qos = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        self._image_pubs = {
            cam: self.create_publisher(Image, topic, image_qos) for cam, topic in topics.IMAGE_TOPICS.items()
        }
        self._joint_pub = self.create_publisher(JointState, topics.JOINT_STATES_TOPIC, 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._success_pub = self.create_publisher(Bool, "~/success", latched)
        self._reward_pub = self.create_publisher(Int32, "~/max_reward", latched)
        # Commands: sensor-data QoS (best effort) matches reliable and best-effort publishers alike.
        self.create_subscription(
            JointState, p["command_topic"], self._on_command, qos_profile_sensor_data, callback_group=group
        )
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=group)

        self._last_tick = time.monotonic()
        self._debt_s = 0.0
        self._last_success: bool | None = None
        self._last_reward: int | None = None
        self.frames_skipped = 0

        # Render thread hand-over: the executor thread fills _snap only while the worker is idle.
        self._snap = self.sim.snapshot()  # (aloha.py picks the headless GL backend before MuJoCo loads)
        self._snap_stamp = None
        self._render_idle = threading.Event()
        self._render_idle.set()
        self._render_request = threading.Event()
        self._render_stop = threading.Event()
        self._render_thread = threading.Thread(target=self._render_loop, name="memorywam_sim_render", daemon=True)
        self._render_thread.start()
        self.create_timer(1.0 / p["physics_rate_hz"], self._on_physics, callback_group=group)
        self.create_timer(1.0 / p["render_rate_hz"], self._on_render, callback_group=group)
        self.create_timer(1.0 / p["joint_state_rate_hz"], self._on_joint_state, callback_group=group)
        self.create_timer(p["success_period_s"], self._publish_success, callback_group=group)
        self._publish_success()
        self.get_logger().info(
            f"{p['task']} {options or ''} seed {self.sim.seed}: cameras {sizes} at {p['render_rate_hz']} Hz, joints at "
            f"{p['joint_state_rate_hz']} Hz, commands on {p['command_topic']}"
        )

    # ------------------------------------------------------------------ callbacks
    def _on_physics(self) -> None:
        now = time.monotonic()
        self._debt_s += min(now - self._last_tick, self._p["max_catchup_s"])
        self._last_tick = now
        n = int(self._debt_s / self.sim.physics_dt)
        if n > 0:
            self.sim.advance(n * self.sim.physics_dt)
            self._debt_s -= n * self.sim.physics_dt
        if self.sim.success != self._last_success or self.sim.max_reward != self._last_reward:
            self._publish_success()

    def _on_command(self, msg: JointState) -> None:
        targets = self.sim.targets
        positions = list(msg.position)
        if msg.name:
            if len(msg.name) != len(positions):
                self.get_logger().warning(
                    "command ignored: name and position lengths differ", throttle_duration_sec=5.0
                )
                return
            pairs = [(self._index.get(n), n, v) for n, v in zip(msg.name, positions)]
        elif len(positions) == len(targets):
            # Nameless 14-vector: taken in the contract's joint order (CONTRACTS.md).
            pairs = [(i, self.sim.joint_names[i], v) for i, v in enumerate(positions)]
        else:
            self.get_logger().warning("command ignored: no joint names and not 14 positions", throttle_duration_sec=5.0)
            return
        for i, name, v in pairs:
            if i is None:
                if name not in self._unknown_logged:
                    self._unknown_logged.add(name)
                    self.get_logger().warning(f"ignoring unknown joint {name!r} in commands")
                continue
            if np.isfinite(v):  # a NaN/inf joint keeps its previous target
                targets[i] = v
        self.sim.set_targets(targets)  # clamps to the joint limits
        if not self._engaged:  # the episode's first command: the task's clock starts
            self._engaged = True
            self.sim.engage()

    def _on_render(self) -> None:
        if not self._render_idle.is_set():
            self.frames_skipped += 1
            return
        self._render_idle.clear()
        self.sim.snapshot(into=self._snap)
        self._snap_stamp = self.get_clock().now().to_msg()  # images are stamped with the state's time
        self._render_request.set()

    def _render_loop(self) -> None:
        """Render thread: owns the GL contexts from the first render to `close`."""
        try:
            while True:
                self._render_request.wait()
                self._render_request.clear()
                if self._render_stop.is_set():
                    return
                try:
                    images = self.sim.render(data=self._snap)
                    if self.context.ok():  # Ctrl-C shuts the context down under this thread
                        self._publish_images(images, self._snap_stamp)
                except Exception as e:  # keep the thread alive; a broken renderer shows in the log
                    if self.context.ok():
                        self.get_logger().error(f"render failed: {e!r}", throttle_duration_sec=5.0)
                finally:
                    self._render_idle.set()
        finally:
            self.sim.close()

    def _publish_images(self, images: dict[str, np.ndarray], stamp: Any) -> None:
        for cam, img in images.items():
            h, w, _ = img.shape
            msg = Image()
            msg.header.stamp = stamp
            msg.header.frame_id = topics.FRAME_IDS[cam]
            msg.height, msg.width = h, w
            msg.encoding = "rgb8"
            msg.is_bigendian = 0
            msg.step = w * 3
            msg.data = array.array("B", img.tobytes())  # array('B') skips rclpy's per-element check
            self._image_pubs[cam].publish(msg)

    def _on_joint_state(self) -> None:
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = list(self.sim.joint_names)
        msg.position = self.sim.qpos.tolist()
        msg.velocity = self.sim.qvel.tolist()
        self._joint_pub.publish(msg)

    def _publish_success(self) -> None:
        self._last_success, self._last_reward = self.sim.success, self.sim.max_reward
        self._success_pub.publish(Bool(data=self._last_success))
        self._reward_pub.publish(Int32(data=self._last_reward))

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._episode += 1
        seed = int(self._p["seed"]) + self._episode
        self.sim.reset(seed, render=False)
        self._engaged = False
        self._last_tick = time.monotonic()
        self._debt_s = 0.0
        self._publish_success()
        response.success = True
        response.message = f"episode {self._episode}, seed {seed}"
        self.get_logger().info(f"reset: {response.message}")
        return response

    def destroy_node(self) -> None:
        self._render_stop.set()
        self._render_request.set()
        self._render_thread.join(timeout=5.0)  # the thread closes the renderers it owns
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = SimNode()
    executor = SingleThreadedExecutor()  # rendering has its own thread; callbacks need no more
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
