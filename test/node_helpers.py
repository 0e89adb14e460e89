"""A real rclpy graph around the policy node: a fake robot driver in its own process
(test/fake_driver.py: 3 cameras at 30 Hz, joints at 100 Hz, following the streamed command) and an
in-process recorder of what the node publishes.

The in-process side runs in its own rclpy Context so the graph tests never share state with other
suites.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

NAMES = [f"left_j{i}" for i in range(6)] + ["left_gripper"] + [f"right_j{i}" for i in range(6)] + ["right_gripper"]
NS = "/t"
# the topics test/fake_driver.py publishes
CAMERA_TOPICS = {"head": f"{NS}/cam_high", "left_wrist": f"{NS}/cam_left", "right_wrist": f"{NS}/cam_right"}
NODE = "/memorywam_policy"


def write_robot_config(path: Path, *, state: str = "names", max_start: float = 10.0, vel: float = 2.0,
                       lim: float = 3.0, tol: float = 0.05) -> Path:
    """A 14-joint test robot. state: 'names' (one JointState by name) or 'per_arm' (two
    Float64MultiArray topics through `data[0:7]`, the ARX RobotStatus path with a standard type)."""
    if state == "names":
        st = [{"topic": f"{NS}/joint_states", "type": "sensor_msgs/msg/JointState", "indices": "0:14"}]
    else:
        st = [{"topic": f"{NS}/arm_{a}_status", "type": "std_msgs/msg/Float64MultiArray", "field": "data[0:7]",
               "indices": idx} for a, idx in (("l", "0:7"), ("r", "7:14"))]
    cfg = {
        "name": "test_dual_arm",
        "joint_names": NAMES,
        "position_min": [-lim] * 14,
        "position_max": [lim] * 14,
        "velocity_max": [vel] * 14,
        "max_start_distance": [max_start] * 14,
        "position_tolerance": [min(tol, max_start)] * 14,
        "state": st,
        "command": [
            {"topic": "~/joint_command", "type": "sensor_msgs/msg/JointState", "indices": "0:14"},
            {"topic": f"{NS}/arm_r_command", "type": "std_msgs/msg/Float64MultiArray", "field": "data[0:7]",
             "indices": "7:14"},
        ],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


class Driver:
    """The fake robot driver (test/fake_driver.py) as a subprocess; `send` controls it."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("fake_driver.py")), "--ns", NS, "--node", NODE, *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ),
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().startswith("ok"), f"driver did not do {line!r}"

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.proc.stdin.write("quit\n")  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Recorder(Node):
    """Records what the policy node publishes; holds the service clients."""

    def __init__(self, context: Context) -> None:
        super().__init__("recorder", context=context)
        self.lock = threading.Lock()
        self.commands: list[tuple[float, np.ndarray]] = []
        self.arm_commands: list[np.ndarray] = []
        self.chunks: list[tuple[float, JointTrajectory]] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.create_subscription(JointState, f"{NODE}/joint_command", self._on_command, 100)
        self.create_subscription(Float64MultiArray, f"{NS}/arm_r_command", self._on_arm_command, 100)
        self.create_subscription(JointTrajectory, f"{NODE}/action_chunk", self._on_chunk, 10)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.enable_client = self.create_client(SetBool, f"{NODE}/enable")
        self.reset_client = self.create_client(Trigger, f"{NODE}/reset")

    def _on_command(self, msg: JointState) -> None:
        assert list(msg.name) == NAMES
        with self.lock:
            self.commands.append((time.monotonic(), np.asarray(msg.position, dtype=float)))

    def _on_arm_command(self, msg: Float64MultiArray) -> None:
        with self.lock:
            self.arm_commands.append(np.asarray(msg.data, dtype=float))

    def _on_chunk(self, msg: JointTrajectory) -> None:
        with self.lock:
            self.chunks.append((time.monotonic(), msg))

    def _on_diag(self, msg: DiagnosticArray) -> None:
        with self.lock:
            self.diagnostics.append(msg)

    def policy_status(self) -> dict[str, str] | None:
        with self.lock:
            for arr in reversed(self.diagnostics):
                for st in arr.status:
                    if st.name.endswith(": policy"):
                        return {kv.key: kv.value for kv in st.values} | {"_level": str(st.level)}
        return None


class Graph:
    """The node under test (SingleThreadedExecutor, as in `main`) and the fake robot, each spun in a thread."""

    def __init__(self, policy: Any, robot_config: Path, driver_args: tuple[str, ...] = (), **params: Any) -> None:
        from memorywam_ros.ros.policy_node import PolicyNode

        self.context = Context()
        rclpy.init(context=self.context)
        overrides = {
            "robot_config": str(robot_config),
            "cameras.head.topic": CAMERA_TOPICS["head"],
            "cameras.left_wrist.topic": CAMERA_TOPICS["left_wrist"],
            "cameras.right_wrist.topic": CAMERA_TOPICS["right_wrist"],
            "diagnostics_period_s": 0.25,
            # looser than the defaults: other jobs share the 2 CI cores (timeout tests set their own)
            "camera_timeout_s": 1.0,
            "joint_timeout_s": 0.5,
        }
        overrides.update(params)
        self.driver = Driver(*driver_args)
        self.robot = Recorder(self.context)
        self.node = PolicyNode(
            policy=policy, context=self.context,
            parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()],
        )
        self._execs = [SingleThreadedExecutor(context=self.context),
                       SingleThreadedExecutor(context=self.context)]
        self._execs[0].add_node(self.node)
        self._execs[1].add_node(self.robot)
        self._threads = [threading.Thread(target=e.spin, daemon=True) for e in self._execs]
        for t in self._threads:
            t.start()
        assert self.robot.enable_client.wait_for_service(timeout_sec=10.0)
        wait_for(lambda: self.node.joints.vector() is not None and all(
            c.latest is not None for c in self.node.cameras.values()), 10.0, "inputs never arrived")
        wait_for(lambda: self.node.count_subscribers(f"{NODE}/joint_command") > 0, 10.0, "no command subscriber")

    def call(self, client: Any, request: Any, timeout: float = 30.0) -> Any:
        future = client.call_async(request)
        wait_for(future.done, timeout, "service call timed out")
        return future.result()

    def enable(self, on: bool = True) -> Any:
        return self.call(self.robot.enable_client, SetBool.Request(data=on))

    def close(self) -> None:
        self.node.shutdown()
        self.node._worker._thread.join(60.0)  # never leave a model call running on the shared policy
        for e in self._execs:
            e.shutdown(timeout_sec=2.0)
        for t in self._threads:
            t.join(5.0)
        self.node.destroy_node()
        self.robot.destroy_node()
        self.context.try_shutdown()
        self.driver.close()


def wait_for(pred: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s: {what}")
