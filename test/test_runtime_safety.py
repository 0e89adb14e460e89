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
        ({"position_tolerance": [0.2, 0.0]}, "position_tolerance of a is 0.2: must be >= 0 and <= its max_start"),
        ({"position_tolerance": [0.0, -0.01]}, "position_tolerance of b"),
        ({"home": [0.0, 1.5]}, "home of b is 1.5, outside"),
    ],
)
def test_robot_config_rejects_bad_files(over, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        RobotConfig.from_dict(_robot_dict(**over))


def test_robot_config_tolerance_and_home_are_optional() -> None:
    robot = RobotConfig.from_dict(_robot_dict())
    np.testing.assert_array_equal(robot.position_tolerance, [0.0, 0.0])
    assert robot.home is None
    robot = RobotConfig.from_dict(_robot_dict(position_tolerance=[0.1, 0.05], home=[0.5, -0.5]))
    np.testing.assert_array_equal(robot.position_tolerance, [0.1, 0.05])
    np.testing.assert_array_equal(JointLimits.from_robot(robot).position_tolerance, [0.1, 0.05])
    assert JointLimits.from_robot(robot).joint_names == ("a", "b")


def test_shipped_robot_files_have_a_tolerance_band() -> None:
    for path in sorted((ROOT / "config" / "robots").glob("*.yaml")):
        robot = RobotConfig.from_yaml(path)
        assert np.all(robot.position_tolerance > 0), path.name
        assert np.all(robot.position_tolerance <= robot.max_start_distance), path.name


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
    # a reference outside the limits (gripper reading 1.05 > 1): limits last, so a target further out
    # is commanded at the limit itself (a step of the 0.05 overshoot), never walked back from outside
    out = f.clamp(np.array([2.0, 0.0, 0.0]), np.array([1.05, 0.0, 0.0]))
    np.testing.assert_allclose(out, [1.0, 0.0, 0.0])
    out = f.clamp(np.array([0.0, 0.0, 0.0]), np.array([1.05, 0.0, 0.0]))
    np.testing.assert_allclose(out, [0.95, 0.0, 0.0])  # inward: one velocity step


def _mixed(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Per joint one of: 1e6, -1e6, just outside (inside / beyond the tolerance band), inside, far."""
    n = lo.shape[0]
    choices = np.stack([
        np.full(n, 1e6), np.full(n, -1e6),
        hi + tol * rng.uniform(0, 1, n), lo - tol * rng.uniform(0, 1, n),  # in the band
        hi + tol + rng.uniform(1e-6, 0.5, n), lo - tol - rng.uniform(1e-6, 0.5, n),  # just beyond it
        rng.uniform(lo, hi), rng.uniform(lo, hi), rng.normal(0, 10, n),
    ])
    return choices[rng.integers(0, len(choices), n), np.arange(n)]


@pytest.mark.parametrize("seed", range(4))
def test_no_command_ever_leaves_the_limits_whatever_measured_or_model(seed: int) -> None:
    """Property over random measured poses and model outputs (1e6, -1e6, just outside, inside, NaN):
    every command is inside [position_min, position_max] and within one velocity step of the last
    command clipped into the limits; after the first command, of the last command itself."""
    rng = np.random.default_rng(seed)
    n = 7
    lo = rng.uniform(-3, 0, n)
    hi = lo + rng.uniform(0.1, 4, n)
    tol = rng.uniform(0, 0.1, n)
    limits = JointLimits(lo, hi, rng.uniform(0.5, 5, n), np.full(n, 0.3), tol, tuple(f"j{i}" for i in range(n)))
    f = SafetyFilter(limits, command_dt=rng.choice([0.1, 0.025, 0.01]))
    for _ in range(300):
        measured = _mixed(rng, lo, hi, tol)
        last = measured  # the worst case: a reference straight from the measured pose
        for k in range(12):
            target = _mixed(rng, lo, hi, tol)
            if rng.random() < 0.2:
                target[rng.integers(0, n)] = rng.choice([np.nan, np.inf, -np.inf])
            out = f.clamp(target, last)
            assert np.all(out >= lo) and np.all(out <= hi), (measured, target, out)
            assert np.all(np.abs(out - np.clip(last, lo, hi)) <= f.max_step + 1e-9)
            if k:
                assert np.all(np.abs(out - last) <= f.max_step + 1e-9)
            last = out


def test_check_measured_tolerance_band_names_the_joint() -> None:
    limits = JointLimits(np.full(3, -1.0), np.full(3, 1.0), np.full(3, 2.0), np.full(3, 0.3),
                         np.array([0.0, 0.05, 0.05]), ("waist", "elbow", "gripper"))
    f = SafetyFilter(limits, command_dt=0.1)
    assert f.check_measured(np.zeros(3)).ok
    assert f.check_measured(np.array([1.0, 1.0499, -1.0499])).ok  # on the limit / at the band's edge
    hold = f.clamp_position(np.array([1.0, 1.04, -1.03]))
    np.testing.assert_allclose(hold, [1.0, 1.0, -1.0])  # the hold pose: the measured pose clipped
    for q, joint in (([0, 1e6, 0], "elbow"), ([0, 0, -1e6], "gripper"), ([1.001, 0, 0], "waist"),
                     ([0, 1.0501, 0], "elbow"), ([0, np.nan, 0], "elbow")):
        v = f.check_measured(np.array(q, dtype=float))
        assert not v.ok and f"joint {joint} " in v.reason and "position_tolerance" in v.reason, v.reason
    v = f.check_measured(np.array([5.0, 0, 1e6]))
    assert not v.ok and "gripper" in v.reason and "(2 joints)" in v.reason  # the worst one named
    assert not f.check_measured(None).ok
    assert not f.check_measured(np.zeros(2)).ok
    # without names (JointLimits built by hand) the index is named; no tolerance = none
    g = SafetyFilter(_limits(), command_dt=0.1)
    assert "joint 1 " in g.check_measured(np.array([0, 1.0001, 0])).reason


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
