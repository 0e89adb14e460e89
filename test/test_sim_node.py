"""`memorywam_sim` on a real rclpy graph, in process (its own Context; conftest sets localhost DDS).

One module-scoped graph (sim node + a probe node on one single-threaded executor) keeps the test
time down; each test spins until its predicate holds or a deadline passes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("gym_aloha")

from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Bool, Int32  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from memorywam_ros.sim import topics  # noqa: E402

pytestmark = pytest.mark.ros


@dataclass
class Graph:
    ctx: Context
    executor: SingleThreadedExecutor
    sim: Any  # SimNode
    probe: Node
    images: dict[str, list[Image]] = field(default_factory=dict)
    joints: list[JointState] = field(default_factory=list)
    success: list[bool] = field(default_factory=list)
    max_reward: list[int] = field(default_factory=list)

    def spin_until(self, pred: Callable[[], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return pred()


@pytest.fixture(scope="module")
def graph() -> Iterator[Graph]:
    from memorywam_ros.ros.sim_node import SimNode

    ctx = Context()
    rclpy.init(context=ctx)
    sim = SimNode(
        context=ctx,
        parameter_overrides=[
            Parameter("seed", value=3),
            Parameter("render_rate_hz", value=20.0),
            # small images: this test is about the ROS plumbing, not pixels
            Parameter("head_height", value=64),
            Parameter("head_width", value=80),
            Parameter("wrist_height", value=32),
            Parameter("wrist_width", value=40),
        ],
    )
    probe = rclpy.create_node("sim_probe", context=ctx)
    g = Graph(ctx, SingleThreadedExecutor(context=ctx), sim, probe)
    for cam, topic in topics.IMAGE_TOPICS.items():
        g.images[cam] = []
        # best effort, as the policy node subscribes (matches the node's reliable publishers)
        probe.create_subscription(Image, topic, g.images[cam].append, qos_profile_sensor_data)
    probe.create_subscription(JointState, topics.JOINT_STATES_TOPIC, g.joints.append, 10)
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    probe.create_subscription(Bool, "/memorywam_sim/success", lambda m: g.success.append(m.data), latched)
    probe.create_subscription(Int32, "/memorywam_sim/max_reward", lambda m: g.max_reward.append(m.data), latched)
    g.executor.add_node(sim)
    g.executor.add_node(probe)
    try:
        yield g
    finally:
        g.executor.shutdown()
        probe.destroy_node()
        sim.destroy_node()
        rclpy.try_shutdown(context=ctx)


def test_publishes_cameras_and_joint_states(graph: Graph) -> None:
    assert graph.spin_until(lambda: all(len(v) >= 2 for v in graph.images.values()) and len(graph.joints) >= 5)
    sizes = {"top": (64, 80), "left_wrist": (32, 40), "right_wrist": (32, 40)}
    for cam, msgs in graph.images.items():
        m = msgs[-1]
        assert (m.height, m.width) == sizes[cam]
        assert m.encoding == "rgb8" and m.step == m.width * 3 and len(m.data) == m.height * m.width * 3
        assert m.header.frame_id == topics.FRAME_IDS[cam]
        assert m.header.stamp.sec > 0
        assert np.frombuffer(bytes(m.data), np.uint8).max() > 0  # not a black frame
    # the three cameras of one render carry one stamp (realsense-style: time of the state)
    stamps = {(m[-1].header.stamp.sec, m[-1].header.stamp.nanosec) for m in graph.images.values()}
    assert len(graph.images) == 3 and len(stamps) <= 2  # at most one render apart while spinning
    js = graph.joints[-1]
    assert list(js.name) == list(graph.sim.sim.joint_names) and len(js.position) == 14
    assert js.name[0] == "left_arm_waist" and js.name[6] == "left_arm_gripper" and js.name[13] == "right_arm_gripper"


def test_success_topic_is_latched(graph: Graph) -> None:
    assert graph.spin_until(lambda: len(graph.success) >= 1)
    assert graph.success[-1] is False  # nobody has moved the cube


def test_max_reward_follows_the_episode(graph: Graph) -> None:
    """~/max_reward (latched) carries the episode's highest reward stage, published on change: the
    demo's failure breakdown. Touching the cube with the right fingers is stage 1."""
    assert graph.spin_until(lambda: len(graph.max_reward) >= 1)
    assert graph.max_reward[-1] == 0
    sim = graph.sim.sim
    sim._max_reward = 1  # as if the right gripper had touched the cube (the physics' own reward path)
    assert graph.spin_until(lambda: graph.max_reward[-1] == 1, timeout=5.0)
    sim._max_reward = 0
    assert graph.spin_until(lambda: graph.max_reward[-1] == 0, timeout=5.0)


def test_command_moves_joints_by_name_and_clamps(graph: Graph) -> None:
    pub = graph.probe.create_publisher(JointState, topics.COMMAND_TOPIC, 10)
    try:
        assert graph.spin_until(lambda: pub.get_subscription_count() > 0)
        cmd = JointState(name=["left_arm_waist", "not_a_joint", "right_arm_gripper"], position=[0.4, 1.0, 5.0])
        last = [0.0]

        def moved() -> bool:
            if time.monotonic() - last[0] > 0.5:  # re-send now and then (best-effort subscriber)
                pub.publish(cmd)
                last[0] = time.monotonic()
            return bool(graph.joints) and abs(graph.joints[-1].position[0] - 0.4) < 0.03

        assert graph.spin_until(moved, timeout=10.0)
        targets = graph.sim.sim.targets
        hi = graph.sim.sim.joint_limits[13, 1]
        assert targets[0] == pytest.approx(0.4)
        assert targets[13] == pytest.approx(hi)  # 5.0 clamped to the gripper's upper limit
        assert targets[7] == pytest.approx(graph.sim.sim.home[7])  # untouched joints keep their target
    finally:
        graph.probe.destroy_publisher(pub)
        graph.spin_until(lambda: False, timeout=0.3)  # deliver what is in flight before other tests


def test_reset_service_starts_next_episode(graph: Graph) -> None:
    client = graph.probe.create_client(Trigger, "/memorywam_sim/reset")
    try:
        assert graph.spin_until(client.service_is_ready)
        future = client.call_async(Trigger.Request())
        assert graph.spin_until(future.done)
        res = future.result()
        assert res.success and "seed 4" in res.message
        sim = graph.sim.sim
        assert sim.seed == 4 and sim.time_s < 1.0
        np.testing.assert_allclose(sim.targets, sim.home)
        # messages queued before the reset may still arrive: wait for a post-reset one
        assert graph.spin_until(lambda: abs(graph.joints[-1].position[0] - sim.home[0]) < 0.05)
    finally:
        graph.probe.destroy_client(client)


def test_sim_node_module_does_not_import_torch() -> None:
    code = "import sys, memorywam_ros.ros.sim_node; assert 'torch' not in sys.modules, 'torch imported'"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_look_and_press_cue_waits_for_the_first_command() -> None:
    """`task:=look_and_press` over ROS: the cue clock starts at the first command (the demo resets,
    waits, then enables the policy). Cue at frames 0-1 (rows 0..16): before the first command the panel
    shows row 0 (lit: the policy's first observation is taken there, as in the demos) however long
    nobody commands, so a clock started at the reset (dark after 1.6 s) fails; after the command it
    stays lit through row 16 and goes dark, timed from that command; a reset shows row 0 again and
    waits for the next episode's own first command."""
    from memorywam_ros.ros.sim_node import SimNode

    ctx = Context()
    rclpy.init(context=ctx)
    sim = SimNode(context=ctx, parameter_overrides=[
        Parameter("task", value="look_and_press"), Parameter("cue_start", value=0),
        Parameter("cue_frames", value=2), Parameter("render_rate_hz", value=20.0),
        Parameter("head_height", value=64), Parameter("head_width", value=80),
        Parameter("wrist_height", value=32), Parameter("wrist_width", value=40)])
    probe = rclpy.create_node("lp_probe", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    heads: list[tuple[float, float]] = []  # (arrival, panel luma)

    def on_head(m: Image) -> None:
        img = np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.width, 3).astype(np.float64)
        heads.append((time.monotonic(), float(img[:15].mean((0, 1)) @ [0.299, 0.587, 0.114])))

    probe.create_subscription(Image, topics.IMAGE_TOPICS["top"], on_head, qos_profile_sensor_data)
    pub = probe.create_publisher(JointState, topics.COMMAND_TOPIC, 10)
    g = Graph(ctx, executor, sim, probe)
    executor.add_node(sim)
    executor.add_node(probe)
    try:
        assert sim.sim.task_name == "look_and_press" and sim.sim.cue_start == 0
        assert g.spin_until(lambda: len(heads) >= 50, timeout=30.0)  # >= 2.5 s of images, nobody commanding
        assert min(v for _, v in heads[5:]) > 80, heads  # row 0 of a frame-0 cue: lit, and the clock waits
        home = JointState(name=list(sim.sim.joint_names), position=sim.sim.home.tolist())
        assert g.spin_until(lambda: pub.get_subscription_count() > 0)
        sent = time.monotonic()
        last = [0.0]

        def dark_after_the_cue() -> bool:
            if time.monotonic() - last[0] > 0.3:  # re-send (best effort); only the first one starts the clock
                pub.publish(home)
                last[0] = time.monotonic()
            return heads[-1][0] > sent + 2.5 and heads[-1][1] < 30

        # cue frames 0-1 end at row 16 (1.6 s after the first command): dark afterwards, lit until then
        assert g.spin_until(dark_after_the_cue, timeout=10.0), heads[-5:]
        assert min(v for t, v in heads if sent + 0.3 < t < sent + 1.2) > 80
        sim._on_reset(Trigger.Request(), Trigger.Response())
        after = time.monotonic()
        assert g.spin_until(lambda: sum(t > after + 0.3 for t, _ in heads) >= 50, timeout=30.0)
        assert min(v for t, v in heads if t > after + 0.3) > 80  # row 0 again, waiting for its own first command
    finally:
        executor.shutdown()
        probe.destroy_node()
        sim.destroy_node()
        rclpy.try_shutdown(context=ctx)
