"""Safety rules for streaming joint targets (numpy only; the ROS node wires them).

Rules, each a pure function of its inputs so it can be tested without a robot or ROS:

* `SafetyFilter.clamp`: every command is first clipped to the position limits, then to a
  per-step velocity bound, max |Δ| = velocity_max · command_dt, relative to the *last commanded*
  target (not the measured position: the measured one lags under PD tracking and gravity, and
  stepping from it would make the bound meaningless). Clipping position first and velocity second
  means that, as long as the previous command was inside the limits, the new one is inside the
  limits AND within the velocity bound; if the previous command was outside (e.g. a gripper that
  reads 5.03 where the limit is 5.0), the command walks back into range at the velocity bound
  instead of jumping.
* `SafetyFilter.check_chunk`: a chunk is executed only if it has the right shape, is entirely
  finite and its first target is within `max_start_distance` of the measured joints, *per joint*.
  Per joint rather than a norm because the vector mixes units (rad for arm joints, robot units for
  grippers) and one far-off joint must not hide behind many close ones.
* `stale_inputs`: an input whose last message is older than its timeout (or that never arrived)
  makes the node hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from memorywam_ros.runtime.robot_config import RobotConfig

__all__ = ["ChunkVerdict", "JointLimits", "SafetyFilter", "stale_inputs"]


@dataclass(frozen=True)
class JointLimits:
    position_min: np.ndarray
    position_max: np.ndarray
    velocity_max: np.ndarray
    max_start_distance: np.ndarray

    @classmethod
    def from_robot(cls, robot: RobotConfig) -> JointLimits:
        return cls(robot.position_min, robot.position_max, robot.velocity_max, robot.max_start_distance)

    @property
    def num_joints(self) -> int:
        return int(self.position_min.shape[0])


@dataclass(frozen=True)
class ChunkVerdict:
    ok: bool
    reason: str = ""


class SafetyFilter:
    def __init__(self, limits: JointLimits, command_dt: float) -> None:
        if command_dt <= 0:
            raise ValueError("command_dt must be positive")
        self.limits = limits
        self.command_dt = float(command_dt)
        self.max_step = limits.velocity_max * self.command_dt

    def clamp_position(self, target: np.ndarray) -> np.ndarray:
        return np.clip(target, self.limits.position_min, self.limits.position_max)

    def clamp(self, target: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Position limits, then the velocity bound relative to the last commanded target."""
        target = np.asarray(target, dtype=np.float64)
        last = np.asarray(last, dtype=np.float64)
        if not np.all(np.isfinite(target)):
            # never let a NaN through: it would propagate into every later command via `last`
            target = last
        pos = self.clamp_position(target)
        return np.clip(pos, last - self.max_step, last + self.max_step)

    def check_chunk(self, chunk: np.ndarray, measured: np.ndarray | None, chunk_size: int) -> ChunkVerdict:
        chunk = np.asarray(chunk)
        n = self.limits.num_joints
        if chunk.shape != (chunk_size, n):
            return ChunkVerdict(False, f"chunk has shape {chunk.shape}, expected ({chunk_size}, {n})")
        if not np.all(np.isfinite(chunk)):
            bad = int(np.count_nonzero(~np.isfinite(chunk)))
            return ChunkVerdict(False, f"non-finite model output ({bad} of {chunk.size} values)")
        if measured is None:
            return ChunkVerdict(False, "no measured joint state to compare the chunk start with")
        dist = np.abs(self.clamp_position(chunk[0]) - np.asarray(measured, dtype=np.float64))
        over = dist > self.limits.max_start_distance
        if np.any(over):
            j = int(np.argmax(dist - self.limits.max_start_distance))
            return ChunkVerdict(
                False,
                f"chunk starts too far from the measured joints: joint {j} is {dist[j]:.3f} away "
                f"(max_start_distance {self.limits.max_start_distance[j]:.3f}); "
                f"{int(over.sum())} joint(s) over",
            )
        return ChunkVerdict(True)


def stale_inputs(ages: Mapping[str, float | None], timeouts: Mapping[str, float]) -> list[str]:
    """Names of inputs whose age (s since the last good message; None = never) exceeds the timeout."""
    return [name for name, age in ages.items() if age is None or age > timeouts[name]]
