"""Safety rules for streaming joint targets (numpy only; the ROS node wires them).

Rules, each a pure function of its inputs so it can be tested without a robot or ROS:

* `SafetyFilter.clamp`: every command is first bounded per step, max |Δ| = velocity_max ·
  command_dt relative to the *last commanded* target (not the measured position: the measured
  one lags under PD tracking and gravity, and stepping from it would make the bound meaningless),
  and then clipped to the position limits — **limits last**, so whatever `last` is (a measured
  pose of 1e6 rad included) the command is inside [position_min, position_max]. Invariant, tested
  over random inputs: every output is inside the limits and within one velocity step of
  `clip(last)` (clipping is a projection, it never lengthens a step). Since every command is an
  output, consecutive commands always keep both bounds; only the first command after enable can
  step from a measured pose *outside* the limits, by at most `position_tolerance` (below).
* `SafetyFilter.check_measured`: a measured pose is trusted only if finite and within
  `position_tolerance` of the limits on every joint. A pose inside the band (an ARX gripper
  reading 5.03 where the limit is 5.0, an encoder a hair past a hard stop) is accepted: the hold
  pose is the measured pose clipped into the limits, so the first command steps the joint back
  into range by at most the tolerance. Beyond the band (a bad encoder word, a driver bug) the
  node refuses `~/enable`, or holds the last (in-limit) command while moving, naming the joint.
* `SafetyFilter.check_chunk`: a chunk is executed only if it has the right shape, is entirely
  finite and its first target is within `max_start_distance` of the measured joints, *per joint*.
  Per joint rather than a norm because the vector mixes units (rad for arm joints, robot units for
  grippers) and one far-off joint must not hide behind many close ones.
* `stale_inputs`: an input whose last message is older than its timeout (or that never arrived)
  makes the node hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from memorywam_ros.runtime.robot_config import RobotConfig

__all__ = ["ChunkVerdict", "JointLimits", "SafetyFilter", "stale_inputs"]


@dataclass(frozen=True)
class JointLimits:
    position_min: np.ndarray
    position_max: np.ndarray
    velocity_max: np.ndarray
    max_start_distance: np.ndarray
    position_tolerance: np.ndarray | None = None  # None: 0 (a measured pose must be inside the limits)
    joint_names: tuple[str, ...] = field(default_factory=tuple)  # for messages; empty: "joint <i>"

    def __post_init__(self) -> None:
        if self.position_tolerance is None:
            object.__setattr__(self, "position_tolerance", np.zeros_like(self.position_min, dtype=np.float64))

    @classmethod
    def from_robot(cls, robot: RobotConfig) -> JointLimits:
        return cls(robot.position_min, robot.position_max, robot.velocity_max, robot.max_start_distance,
                   robot.position_tolerance, robot.joint_names)

    @property
    def num_joints(self) -> int:
        return int(self.position_min.shape[0])

    def name(self, j: int) -> str:
        return self.joint_names[j] if j < len(self.joint_names) else f"joint {j}"


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
        """The velocity bound relative to the last commanded target, then the position limits."""
        target = np.asarray(target, dtype=np.float64)
        last = np.asarray(last, dtype=np.float64)
        if not np.all(np.isfinite(last)):
            raise ValueError("no finite reference pose to bound the command step from")
        if not np.all(np.isfinite(target)):
            # never let a NaN through: it would propagate into every later command via `last`
            target = last
        step = np.clip(target, last - self.max_step, last + self.max_step)
        return self.clamp_position(step)

    def check_measured(self, measured: np.ndarray | None) -> ChunkVerdict:
        """Is the measured pose one to command from? Finite and within the tolerance band of the limits."""
        if measured is None:
            return ChunkVerdict(False, "no measured joint state")
        q = np.asarray(measured, dtype=np.float64)
        lim = self.limits
        if q.shape != (lim.num_joints,):
            return ChunkVerdict(False, f"measured joint state has shape {q.shape}, expected ({lim.num_joints},)")
        # how far outside [min, max] each joint is (0 inside); NaN counts as infinitely far
        excess = np.nan_to_num(np.maximum(lim.position_min - q, q - lim.position_max), nan=np.inf)
        over = excess > lim.position_tolerance
        if not np.any(over):
            return ChunkVerdict(True)
        j = int(np.argmax(np.where(over, excess - lim.position_tolerance, -np.inf)))
        return ChunkVerdict(
            False,
            f"joint {lim.name(j)} measures {q[j]:.6g}, outside its limits [{lim.position_min[j]:.6g}, "
            f"{lim.position_max[j]:.6g}] by more than position_tolerance {lim.position_tolerance[j]:.6g}"
            + (f" ({int(over.sum())} joints)" if over.sum() > 1 else ""),
        )

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
                f"chunk starts too far from the measured joints: joint {j} ({self.limits.name(j)}) is "
                f"{dist[j]:.3f} away (max_start_distance {self.limits.max_start_distance[j]:.3f}); "
                f"{int(over.sum())} joint(s) over",
            )
        return ChunkVerdict(True)


def stale_inputs(ages: Mapping[str, float | None], timeouts: Mapping[str, float]) -> list[str]:
    """Names of inputs whose age (s since the last good message; None = never) exceeds the timeout."""
    return [name for name, age in ages.items() if age is None or age > timeouts[name]]
