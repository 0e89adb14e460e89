"""The policy node and the observation lead: a checkpoint whose manifest the parameters contradict is
refused with a message; deadline misses, hold ticks and the margin reach /diagnostics; the node
warns once when its p99 latency does not fit the lead, naming the lead that would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2 pip wheels or a sourced ROS 2) needed")

import rclpy
from node_helpers import wait_for, write_robot_config
from rclpy.context import Context
from rclpy.parameter import Parameter

from memorywam_ros.runtime.chunk_executor import observation_substeps

pytestmark = pytest.mark.ros


def _node(policy, tmp_path: Path, **params):
    from memorywam_ros.ros.policy_node import PolicyNode

    context = Context()
    rclpy.init(context=context)
    overrides = {"robot_config": str(write_robot_config(tmp_path / "robot.yaml")), "warmup": False, **params}
    try:
        return PolicyNode(policy=policy, context=context,
                          parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()]), context
    except BaseException:
        context.try_shutdown()
        raise


def _close(node, context) -> None:
    node.shutdown()
    node.destroy_node()
    context.try_shutdown()


@pytest.mark.parametrize(("param", "value", "words"), [
    ("control_rate_hz", 20.0, "control_rate_hz is 20.0 here, the checkpoint's is 10.0"),
    ("observation_lead", 3, "observation_lead is 3 here, the checkpoint's is 0"),
])
def test_parameters_contradicting_the_manifest_are_refused(tiny_policy, tmp_path, param, value, words) -> None:
    with pytest.raises(ValueError, match=r"memorywam\.json does not fit") as err:
        _node(tiny_policy, tmp_path, **{param: value, "command_rate_hz": 20.0})
    assert words in str(err.value)


def test_the_lead_comes_from_the_checkpoint_and_a_matching_parameter_is_accepted(tiny_checkpoint, tmp_path) -> None:
    from memorywam_ros.runtime.policy import Policy

    ckpt = tmp_path / "lead3"
    shutil.copytree(tiny_checkpoint, ckpt)
    manifest = json.loads((ckpt / "memorywam.json").read_text())
    manifest.update(observation_lead=3, observation_substeps=list(observation_substeps(16, 3)))
    (ckpt / "memorywam.json").write_text(json.dumps(manifest))
    policy = Policy.from_pretrained(ckpt)
    for value in (-1, 3):
        node, context = _node(policy, tmp_path, observation_lead=value)
        assert node.lead == 3 and node.executor_grid.lead == 3
        _close(node, context)
    with pytest.raises(ValueError, match="observation_lead is 0 here, the checkpoint's is 3"):
        _node(policy, tmp_path, observation_lead=0)



def test_checkpoint_cameras_joints_and_chunk_contradicting_the_robot_are_refused(
        tiny_policy, tiny_checkpoint, tmp_path, monkeypatch) -> None:
    """Issue 13.4 beyond the rate and lead: a checkpoint trained on another camera order, a robot file
    with another joint count, a manifest whose chunk size is not its model's: refused at start-up,
    each with a message naming what disagrees."""
    import yaml

    from memorywam_ros.model import CheckpointError
    from memorywam_ros.runtime.policy import Policy

    monkeypatch.setattr(tiny_policy, "manifest", dict(tiny_policy.manifest,
                                                      cameras=["left_wrist", "head", "right_wrist"]))
    with pytest.raises(ValueError, match=r"memorywam\.json does not fit.*cameras is \['head', 'left_wrist', "
                                         r"'right_wrist'\] here, the checkpoint's is \['left_wrist', 'head'"):
        _node(tiny_policy, tmp_path)
    monkeypatch.undo()

    cfg = yaml.safe_load(write_robot_config(tmp_path / "robot14.yaml").read_text())
    for key in ("joint_names", "position_min", "position_max", "velocity_max", "max_start_distance",
                "position_tolerance"):
        cfg[key] = cfg[key][:7]
    cfg["state"][0]["indices"] = "0:7"
    cfg["command"] = [dict(cfg["command"][0], indices="0:7")]
    (tmp_path / "robot7.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ValueError, match=r"14 joints.* has 7|action_dim is 7 here, the checkpoint's is 14"):
        _node(tiny_policy, tmp_path, robot_config=str(tmp_path / "robot7.yaml"))

    ckpt = tmp_path / "chunk8"
    shutil.copytree(tiny_checkpoint, ckpt)
    manifest = json.loads((ckpt / "memorywam.json").read_text())
    manifest.update(chunk_size=8)
    (ckpt / "memorywam.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="manifest chunk 8 x action 14 != model 16 x 14"):
        Policy.from_pretrained(ckpt)

class _Log:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, msg: str, **_: object) -> None:
        self.warnings.append(msg)

    def info(self, msg: str, **_: object) -> None:
        pass


def test_warns_once_when_p99_latency_exceeds_the_lead(tiny_policy, tmp_path) -> None:
    node, context = _node(tiny_policy, tmp_path)
    try:
        log = _Log()
        node.get_logger = lambda: log  # type: ignore[method-assign]
        node.lead = 2  # 200 ms
        for _ in range(20):
            node.stats["latency"].add(0.15)
        node._warn_if_lead_too_short()
        assert log.warnings == []  # fits
        for _ in range(5):
            node.stats["latency"].add(0.43)
        node._warn_if_lead_too_short()
        node._warn_if_lead_too_short()
        assert len(log.warnings) == 1
        assert "exceeds the observation lead 2 (200 ms)" in log.warnings[0]
        assert "observation_lead 5" in log.warnings[0]
    finally:
        _close(node, context)


def test_diagnostics_report_deadline_misses_hold_ticks_and_margin(tiny_policy, tmp_path) -> None:
    """ℓ = 0 (the tiny checkpoint's): inference starts when the chunk is due, so every chunk after
    the first misses its deadline by at least one tick, and the margin is minus the latency."""
    from node_helpers import Graph

    g = Graph(tiny_policy, write_robot_config(tmp_path / "r.yaml"), torch_threads=1, warmup=False)
    try:
        assert g.enable().success
        wait_for(lambda: len(g.robot.chunks) >= 3, 120.0, "three chunks")
        wait_for(lambda: int((g.robot.policy_status() or {}).get("deadline_misses", "0")) >= 2, 10.0, "diagnostics")
        st = g.robot.policy_status()
        assert st["observation_lead"] == "0"
        assert float(st["hold_ticks_p50"]) >= 1 and float(st["deadline_margin_last_ms"]) < 0
        assert float(st["deadline_margin_p99_ms"]) == pytest.approx(-float(st["latency_p99_ms"]), rel=1e-3)
        # every chunk with a deadline missed it, each by >= 1 tick (one message: consistent counters)
        assert int(st["deadline_chunks"]) == int(st["deadline_misses"]) <= int(st["hold_ticks_total"])
        assert int(st["control_ticks_skipped"]) >= 0 and float(st["control_tick_late_max_ms"]) >= 0
    finally:
        g.close()


class _CommittedSpy:
    """The tiny policy as a committed-prefix model would be driven: records what act() is given."""

    committed_prefix = 3
    manifest = None  # an injected policy: the node takes its lead from the parameter

    def __init__(self, policy) -> None:
        self._policy = policy
        self.calls: list = []

    def __getattr__(self, name):
        return getattr(self._policy, name)

    def act(self, committed=None):
        if committed is None or committed.shape != (self.committed_prefix, 14):  # as Policy.act refuses it
            raise ValueError(f"act() needs the last {self.committed_prefix} committed commands, got {committed}")
        self.calls.append(committed.copy())
        return self._policy.act()


def test_warmup_of_a_committed_prefix_model_gives_it_commands(tiny_policy, tmp_path) -> None:
    """The start-up warm-up runs the model as the control loop will: a prefix model gets its P commands
    (a node that warmed up with act() alone failed to start with every committed-prefix checkpoint)."""
    spy = _CommittedSpy(tiny_policy)
    node, context = _node(spy, tmp_path, warmup=True, observation_lead=3)
    try:
        assert len(spy.calls) == 2  # the first frame alone, then four mosaics
        assert all(c.shape == (3, 14) for c in spy.calls)
    finally:
        _close(node, context)


def test_node_gives_a_committed_prefix_model_the_commands_still_running(tiny_policy, tmp_path) -> None:
    """ℓ = 3 and a model with a 3-command prefix: the first chunk is computed with the hold pose (the
    arm stands), every later one with the last 3 targets of the chunk that is running when it is
    computed, i.e. the last 3 points the node published on ~/action_chunk for the chunk before."""
    import numpy as np
    from node_helpers import Graph

    spy = _CommittedSpy(tiny_policy)
    g = Graph(spy, write_robot_config(tmp_path / "r.yaml"), torch_threads=1, warmup=False, observation_lead=3)
    try:
        assert g.enable().success
        wait_for(lambda: len(g.robot.chunks) >= 3 and len(spy.calls) >= 4, 120.0, "three chunks")
        with g.robot.lock:
            chunks = [np.array([p.positions for p in msg.points]) for _, msg in g.robot.chunks]
        calls = list(spy.calls)
        assert np.all(calls[0] == calls[0][0])  # the hold pose, repeated
        for k in range(1, 3):  # call k computes chunk k while chunk k-1 runs its last 3 targets
            np.testing.assert_allclose(calls[k], chunks[k - 1][-3:], atol=1e-9)
    finally:
        g.close()
