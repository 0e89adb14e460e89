"""Safety filter and robot description: pure numpy, no ROS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from memorywam_ros.runtime.robot_config import RobotConfig, parse_field_spec, parse_slice
from memorywam_ros.runtime.safety import JointLimits, SafetyFilter, stale_inputs

ROOT = Path(__file__).resolve().parents[1]
ARX = ROOT / "config" / "robots" / "arx_x5_dual.yaml"


def _limits(n: int = 3) -> JointLimits:
    return JointLimits(
        position_min=np.full(n, -1.0),
        position_max=np.full(n, 1.0),
        velocity_max=np.full(n, 2.0),
        max_start_distance=np.full(n, 0.3),
    )


def test_arx_config_loads_with_sdk_limits() -> None:
    robot = RobotConfig.from_yaml(ARX)
    assert robot.num_joints == 14
    np.testing.assert_allclose(robot.position_min[:6], [-3.14, -0.05, -0.1, -1.6, -1.57, -2])
    np.testing.assert_allclose(robot.position_max[7:13], [2.618, 3.14, 3.24, 1.55, 1.57, 2])
    np.testing.assert_allclose(robot.velocity_max[:6], [3, 2, 2, 2, 3, 3])
    assert (robot.position_min[6], robot.position_max[6]) == (0.0, 5.0)  # gripper, ARX units
    assert [s.type for s in robot.state] == ["arx5_arm_msg/msg/RobotStatus"] * 2
    assert [(s.start, s.stop) for s in robot.state] == [(0, 7), (7, 14)]
    assert str(robot.state[0].field) == "joint_pos[0:7]"
    assert robot.command[0].topic == "~/joint_command" and robot.command[0].field is None
    assert robot.command[1].type == "arm_control/msg/JointControl"


def test_field_and_slice_parsing() -> None:
    f = parse_field_spec("joint_pos[0:7]")
    assert (f.path, f.start, f.stop) == (("joint_pos",), 0, 7)
    f = parse_field_spec("status.position")
    assert (f.path, f.start, f.stop) == (("status", "position"), 0, None)
    assert parse_field_spec("data[3:]").stop is None
    for bad in ("joint_pos[7:0]", "1abc", "a[b:c]", ""):
        with pytest.raises(ValueError):
            parse_field_spec(bad)
    assert parse_slice("7:14", 14) == (7, 14)
    assert parse_slice(":", 14) == (0, 14)
    assert parse_slice([0, 7], 14) == (0, 7)
    with pytest.raises(ValueError):
        parse_slice("0:15", 14)


def _robot_dict(**over):
    d = {
        "joint_names": ["a", "b"],
        "position_min": [-1, -1],
        "position_max": [1, 1],
        "velocity_max": [1, 1],
        "max_start_distance": [0.1, 0.1],
        "state": [{"topic": "/js", "type": "sensor_msgs/msg/JointState"}],
    }
    d.update(over)
    return d


@pytest.mark.parametrize(
    "over, msg",
    [
        ({"position_min": [1, -1]}, "below"),
        ({"velocity_max": [1]}, "one per joint"),
        ({"velocity_max": [0, 1]}, "positive"),
        ({"joint_names": ["a", "a"]}, "unique"),
        ({"state": [{"topic": "/x", "type": "t", "indices": "0:1"}]}, "exactly once"),
        ({"state": [{"topic": "/x", "type": "t", "field": "data[0:3]"}]}, "differ in size"),
        ({"max_start_distance": [float("nan"), 1]}, "finite"),
    ],
)
def test_robot_config_rejects_bad_files(over, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        RobotConfig.from_dict(_robot_dict(**over))


def test_clamp_position_limits() -> None:
    f = SafetyFilter(_limits(), command_dt=10.0)  # huge dt: velocity bound inactive
    out = f.clamp(np.array([5.0, -5.0, 0.5]), last=np.zeros(3))
    np.testing.assert_allclose(out, [1.0, -1.0, 0.5])


def test_clamp_velocity_relative_to_last_command() -> None:
    f = SafetyFilter(_limits(), command_dt=0.1)  # max step 0.2
    last = np.array([0.0, 0.5, -0.5])
    out = f.clamp(np.array([0.9, 0.55, -1.0]), last)
    np.testing.assert_allclose(out, [0.2, 0.55, -0.7])


def test_clamp_keeps_both_bounds_and_never_jumps_from_outside() -> None:
    rng = np.random.default_rng(0)
    f = SafetyFilter(_limits(), command_dt=0.05)  # max step 0.1
    last = np.zeros(3)
    for _ in range(2000):
        out = f.clamp(rng.normal(0, 3, 3), last)
        assert np.all(out >= -1) and np.all(out <= 1)
        assert np.all(np.abs(out - last) <= 0.1 + 1e-12)
        last = out
    # a previous command outside the limits (gripper reading 5.03 > 5): walk back, no jump
    out = f.clamp(np.array([0.0, 0.0, 0.0]), np.array([1.5, 0.0, 0.0]))
    np.testing.assert_allclose(out, [1.4, 0.0, 0.0])


def test_clamp_replaces_non_finite_by_last() -> None:
    f = SafetyFilter(_limits(), command_dt=0.1)
    last = np.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(f.clamp(np.array([np.nan, 0.0, np.inf]), last), last)


def test_check_chunk_rules() -> None:
    f = SafetyFilter(_limits(), command_dt=0.1)
    measured = np.zeros(3)
    good = np.zeros((16, 3))
    assert f.check_chunk(good, measured, 16).ok
    bad = good.copy()
    bad[5, 1] = np.nan
    v = f.check_chunk(bad, measured, 16)
    assert not v.ok and "non-finite" in v.reason
    far = good.copy()
    far[0, 2] = 0.31  # per joint: joint 2 alone over 0.3
    v = f.check_chunk(far, measured, 16)
    assert not v.ok and "joint 2" in v.reason
    near = good + 0.29  # every joint just inside: a norm rule would refuse this (0.5 > 0.3)
    assert f.check_chunk(near, measured, 16).ok
    assert not f.check_chunk(np.zeros((15, 3)), measured, 16).ok
    assert not f.check_chunk(good, None, 16).ok
    # a first target beyond the position limit is compared after clamping (what would be sent)
    edge = good.copy()
    edge[0, 0] = 7.0
    assert f.check_chunk(edge, np.array([1.0, 0, 0]), 16).ok


def test_stale_inputs() -> None:
    ages = {"head": 0.1, "left_wrist": 0.6, "right_wrist": None, "joints": 0.05}
    timeouts = {"head": 0.5, "left_wrist": 0.5, "right_wrist": 0.5, "joints": 0.2}
    assert stale_inputs(ages, timeouts) == ["left_wrist", "right_wrist"]
