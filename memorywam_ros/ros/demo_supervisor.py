"""The ROS 2 participant behind `memorywam-demo`: resets, enables and watches one episode at a time.

It only uses the public interfaces a user has: the policy's `~/enable` and `~/reset` services,
`~/action_chunk` and `~/joint_command` topics, and the simulator's `~/reset`, `~/success` and
`~/max_reward` (the episode's highest reward stage: the failure breakdown).
Every streamed command is checked against the robot file's position and velocity limits.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Int32
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from memorywam_ros.runtime.robot_config import RobotConfig

from .demo import POLICY, SIM, Episode

CHUNK_SECONDS = 1.6  # 16 targets at 10 Hz
LIMIT_TOLERANCE = 1e-6


class DemoSupervisor(Node):
    def __init__(self, robot: RobotConfig):
        super().__init__("memorywam_demo")
        self.robot = robot
        self.lock = threading.Lock()
        group = ReentrantCallbackGroup()
        self.clients_ = {
            "enable": self.create_client(SetBool, f"{POLICY}/enable", callback_group=group),
            "policy_reset": self.create_client(Trigger, f"{POLICY}/reset", callback_group=group),
            "sim_reset": self.create_client(Trigger, f"{SIM}/reset", callback_group=group),
        }
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(Bool, f"{SIM}/success", self._on_success, latched, callback_group=group)
        self.create_subscription(Int32, f"{SIM}/max_reward", self._on_reward, latched, callback_group=group)
        self.create_subscription(JointTrajectory, f"{POLICY}/action_chunk", self._on_chunk, 10, callback_group=group)
        self.create_subscription(JointState, f"{POLICY}/joint_command", self._on_command, 100, callback_group=group)
        self.create_subscription(JointState, "/joint_states", self._on_joints, qos_profile_sensor_data,
                                 callback_group=group)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10, callback_group=group)
        self.policy_status: tuple[float, dict[str, str]] | None = None  # (arrival, values)
        self.success = False
        self.joint_time = 0.0
        self.episode: Episode | None = None
        self._last_chunk_time: float | None = None
        self._last_command: tuple[float, np.ndarray] | None = None
        self._start_joints: np.ndarray | None = None
        self.enabled = False

    # --- callbacks (small: record, check) -------------------------------------------------------
    def _on_success(self, msg: Bool) -> None:
        self.success = bool(msg.data)

    def _on_reward(self, msg: Int32) -> None:
        with self.lock:
            if self.episode is not None:
                self.episode.max_reward = max(self.episode.max_reward, int(msg.data))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            if st.name.endswith(": policy"):
                self.policy_status = (time.monotonic(), {kv.key: kv.value for kv in st.values})

    def _fresh_status(self, timeout: float = 3.0) -> dict[str, str]:
        """The policy's next /diagnostics values (counters after everything so far)."""
        asked = time.monotonic()
        while time.monotonic() - asked < timeout:
            status = self.policy_status
            if status is not None and status[0] > asked:
                return status[1]
            time.sleep(0.05)
        return {}

    def _on_joints(self, msg: JointState) -> None:
        self.joint_time = time.monotonic()
        q = np.asarray(msg.position, dtype=np.float64)
        with self.lock:
            if self.episode is None or q.shape != (len(self.robot.joint_names),):
                return
            if self._start_joints is None:
                self._start_joints = q
            # evidence that commands reach the simulator: how far the measured arm moved
            self.episode.max_joint_motion = max(self.episode.max_joint_motion,
                                                float(np.abs(q - self._start_joints).max()))

    def _on_chunk(self, msg: JointTrajectory) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self.lock:
            if self.episode is None:
                return
            gap = None if self._last_chunk_time is None else now - self._last_chunk_time - CHUNK_SECONDS
            self._last_chunk_time = now
            # first/last targets: bench/realtime.py's boundary step |first(j+1) - last(j)|
            points = [list(p.positions) for p in msg.points]
            self.episode.chunks.append({"latency_s": now - stamp, "gap_s": gap, "first": points[0] if points else None,
                                        "last": points[-1] if points else None,
                                        "steps": [float(np.abs(np.subtract(b, a)).max())
                                                  for a, b in itertools.pairwise(points)]})

    def _on_command(self, msg: JointState) -> None:
        now = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        q = np.asarray(msg.position, dtype=np.float64)
        with self.lock:
            if self.episode is None:
                return
            self.episode.commands += 1
            problems = self._check(now, q)
            self.episode.violations.extend(problems)

    def _check(self, now: float, q: np.ndarray) -> list[str]:
        r = self.robot
        out = []
        if q.shape != (len(r.joint_names),) or not np.isfinite(q).all():
            return [f"malformed command {q}"]
        lo, hi = np.asarray(r.position_min), np.asarray(r.position_max)
        if (q < lo - LIMIT_TOLERANCE).any() or (q > hi + LIMIT_TOLERANCE).any():
            out.append(f"position limit exceeded: {q}")
        if self._last_command is not None:
            t0, q0 = self._last_command
            dt = max(now - t0, 0.1)  # commands are 0.1 s apart at 10 Hz; the limit is per command period
            step = np.abs(q - q0)
            allowed = np.asarray(r.velocity_max) * dt + LIMIT_TOLERANCE
            if (step > allowed).any():
                out.append(f"velocity limit exceeded: step {step.max():.3f} over {dt:.2f} s")
        self._last_command = (now, q)
        return out

    # --- services ---------------------------------------------------------------------------------
    def call(self, name: str, request: Any, timeout: float = 30.0) -> Any:
        future = self.clients_[name].call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            raise TimeoutError(f"{name} service did not answer in {timeout:.0f} s")
        return future.result()

    def enable(self, on: bool) -> tuple[bool, str]:
        if not self.clients_["enable"].service_is_ready():
            return False, "enable service not available"
        response = self.call("enable", SetBool.Request(data=on))
        self.enabled = on and response.success
        return response.success, response.message

    def wait_ready(self, timeout: float, processes: tuple) -> None:
        """Services up and joint states flowing; fail early (with the log) if a process died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [p.args for p in processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a node exited during start-up: {dead} (see the node logs)")
            ready = all(c.service_is_ready() for c in self.clients_.values())
            if ready and time.monotonic() - self.joint_time < 0.5:
                return
            time.sleep(0.2)
        raise TimeoutError(f"policy/simulator not ready after {timeout:.0f} s (see the node logs)")

    def run_episode(self, seed: int, timeout: float) -> Episode:
        self.enable(False)
        reply = self.call("sim_reset", Trigger.Request())
        self.call("policy_reset", Trigger.Request())
        if "seed" in reply.message:
            seed = int(reply.message.rsplit("seed", 1)[1])
        settle = time.monotonic() + 0.5  # fresh joint states of the new episode
        while time.monotonic() < settle or time.monotonic() - self.joint_time > 0.2:
            time.sleep(0.05)
        with self.lock:
            self.episode = Episode(seed)
            self._last_chunk_time = None
            self._last_command = None
            self._start_joints = None
            self.success = False
        self.episode.diagnostics["start"] = self._fresh_status()
        # the node checks its own view of the joints (DDS may still be matching it to the simulator)
        deadline = time.monotonic() + 10.0
        ok, message = self.enable(True)
        while not ok and time.monotonic() < deadline:
            time.sleep(0.2)
            ok, message = self.enable(True)
        if not ok:
            raise RuntimeError(f"policy refused to enable: {message}")
        start = time.monotonic()
        while time.monotonic() - start < timeout and not self.success:
            time.sleep(0.05)
        self.enable(False)
        diagnostics_end = self._fresh_status()
        with self.lock:
            episode, self.episode = self.episode, None
        episode.diagnostics["end"] = diagnostics_end
        episode.success = self.success
        episode.duration_s = time.monotonic() - start
        return episode
