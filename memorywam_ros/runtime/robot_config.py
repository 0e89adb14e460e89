"""Robot description file (`config/robots/*.yaml`): joints, limits and the I/O field mappings.

ROS-free: this only parses and validates YAML. The policy node (memorywam_ros/ros) turns the
`state` and `command` entries into subscriptions and publishers.

Schema (all per-joint lists have one value per entry of `joint_names`, in the policy's joint order:
left arm joints, left gripper, right arm joints, right gripper)::

    name: arx_x5_dual
    joint_names: [...]
    position_min: [...]          # hard position limits, joint units (rad; gripper in robot units)
    position_max: [...]
    velocity_max: [...]          # per joint, units per second; bounds every command step
    max_start_distance: [...]    # per joint: a new chunk whose first target is farther than this
                                 # from the measured joints is not executed
    position_tolerance: [...]    # optional, per joint (default 0): how far outside [min, max] a
                                 # *measured* pose may be and still be trusted (0 <= it <=
                                 # max_start_distance). Inside the band the node holds the measured
                                 # pose clipped into the limits; beyond it enable is refused / the
                                 # node holds. Commands never leave [min, max] either way.
    home: [...]                  # optional: a rest pose inside the limits (init-random centres a
                                 # random checkpoint's outputs on it; the simulator starts there)
    state:                       # where the measured joints come from (together: every joint once)
      - topic: /joint_states
        type: sensor_msgs/msg/JointState      # no `field`: matched by joint name
        indices: "0:14"                        # which slice of the joint vector this source fills
        names: [...]                           # optional; default joint_names[indices]
      - topic: /arm_l/joint_information
        type: arx5_arm_msg/msg/RobotStatus
        field: "joint_pos[0:7]"                # message field (dotted path) and slice
        indices: "0:7"
    command:                     # where targets are streamed (each entry one publisher)
      - topic: ~/joint_command
        type: sensor_msgs/msg/JointState      # no `field`: name + position of joints[indices]
        indices: "0:14"
      - topic: /arm_l/joint_control
        type: arm_control/msg/JointControl
        field: "joint_pos[0:7]"
        indices: "0:7"
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

__all__ = ["FieldSpec", "IOSpec", "RobotConfig", "parse_field_spec", "parse_slice"]

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_FIELD_RE = re.compile(rf"^\s*({_NAME}(?:\.{_NAME})*)\s*(?:\[\s*(\d*)\s*:\s*(\d*)\s*\])?\s*$")
_SLICE_RE = re.compile(r"^\s*(\d*)\s*:\s*(\d*)\s*$")


@dataclass(frozen=True)
class FieldSpec:
    """A message field and a slice of it, e.g. ``joint_pos[0:7]`` → path ('joint_pos',), 0, 7."""

    path: tuple[str, ...]
    start: int = 0
    stop: int | None = None  # None: to the end of the field

    def __str__(self) -> str:
        stop = "" if self.stop is None else str(self.stop)
        return f"{'.'.join(self.path)}[{self.start}:{stop}]"


def parse_field_spec(text: str) -> FieldSpec:
    m = _FIELD_RE.match(text)
    if m is None:
        raise ValueError(f"bad field mapping {text!r}: expected 'field' or 'field[start:stop]'")
    path = tuple(m.group(1).split("."))
    start = int(m.group(2)) if m.group(2) else 0
    stop = int(m.group(3)) if m.group(3) else None
    if stop is not None and stop <= start:
        raise ValueError(f"bad field mapping {text!r}: empty slice")
    return FieldSpec(path, start, stop)


def parse_slice(text: str | list[int], n: int) -> tuple[int, int]:
    """'0:7' (or [0, 7]) → (0, 7), checked against a vector of length n."""
    if isinstance(text, (list, tuple)):
        if len(text) != 2:
            raise ValueError(f"bad indices {text!r}: expected [start, stop]")
        start, stop = int(text[0]), int(text[1])
    else:
        m = _SLICE_RE.match(str(text))
        if m is None:
            raise ValueError(f"bad indices {text!r}: expected 'start:stop'")
        start = int(m.group(1)) if m.group(1) else 0
        stop = int(m.group(2)) if m.group(2) else n
    if not 0 <= start < stop <= n:
        raise ValueError(f"indices {start}:{stop} out of range for {n} joints")
    return start, stop


@dataclass(frozen=True)
class IOSpec:
    """One state source or command sink: a topic of a message type, mapped onto joints[start:stop]."""

    topic: str
    type: str
    start: int
    stop: int
    field: FieldSpec | None = None  # None: sensor_msgs/JointState semantics (by joint name)
    names: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class RobotConfig:
    name: str
    joint_names: tuple[str, ...]
    position_min: np.ndarray
    position_max: np.ndarray
    velocity_max: np.ndarray
    max_start_distance: np.ndarray
    state: tuple[IOSpec, ...] = field(default_factory=tuple)
    command: tuple[IOSpec, ...] = field(default_factory=tuple)
    position_tolerance: np.ndarray | None = None  # None: zeros
    home: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.position_tolerance is None:
            object.__setattr__(self, "position_tolerance", np.zeros(len(self.joint_names)))

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RobotConfig:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from e

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RobotConfig:
        if not isinstance(data, dict):
            raise ValueError("robot config must be a mapping")
        names = tuple(str(n) for n in data["joint_names"])
        n = len(names)
        if n == 0 or len(set(names)) != n:
            raise ValueError("joint_names must be non-empty and unique")

        def vec(key: str) -> np.ndarray:
            v = np.asarray(data[key], dtype=np.float64)
            if v.shape != (n,):
                raise ValueError(f"{key}: expected {n} values (one per joint), got shape {v.shape}")
            if not np.all(np.isfinite(v)):
                raise ValueError(f"{key}: values must be finite")
            return v

        lo, hi = vec("position_min"), vec("position_max")
        if np.any(lo >= hi):
            raise ValueError("position_min must be below position_max for every joint")
        vel, start = vec("velocity_max"), vec("max_start_distance")
        if np.any(vel <= 0) or np.any(start <= 0):
            raise ValueError("velocity_max and max_start_distance must be positive")
        tol = vec("position_tolerance") if "position_tolerance" in data else np.zeros(n)
        if np.any(tol < 0) or np.any(tol > start):
            # the first command after enable steps a joint in the band back by up to its tolerance:
            # a wider band would allow a step that the chunk start check calls a jump
            j = int(np.argmax((tol < 0) | (tol > start)))
            raise ValueError(
                f"position_tolerance of {names[j]} is {tol[j]}: must be >= 0 and <= its max_start_distance "
                f"{start[j]}"
            )
        home = vec("home") if data.get("home") is not None else None
        if home is not None and (np.any(home < lo) or np.any(home > hi)):
            j = int(np.argmax((home < lo) | (home > hi)))
            raise ValueError(f"home of {names[j]} is {home[j]}, outside its limits [{lo[j]}, {hi[j]}]")

        def io(entries: Any, what: str) -> tuple[IOSpec, ...]:
            out = []
            for e in entries or []:
                s, t = parse_slice(e.get("indices", f"0:{n}"), n)
                fs = parse_field_spec(e["field"]) if e.get("field") else None
                nm = tuple(str(x) for x in e.get("names") or names[s:t])
                if len(nm) != t - s:
                    raise ValueError(f"{what} {e['topic']}: {len(nm)} names for indices {s}:{t}")
                if fs is not None and fs.stop is not None and fs.stop - fs.start != t - s:
                    raise ValueError(f"{what} {e['topic']}: field {fs} and indices {s}:{t} differ in size")
                out.append(IOSpec(str(e["topic"]), str(e["type"]), s, t, fs, nm))
            return tuple(out)

        state = io(data.get("state"), "state")
        covered = np.zeros(n, dtype=int)
        for s in state:
            covered[s.start : s.stop] += 1
        if state and not np.all(covered == 1):
            raise ValueError("state sources must cover every joint exactly once")
        command = io(data.get("command"), "command")
        return cls(str(data.get("name", "robot")), names, lo, hi, vel, start, state, command, tol, home)
