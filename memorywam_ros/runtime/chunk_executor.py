"""Clock-free execution of 16-step action chunks on the control grid (no ROS, no threads).

The node calls `tick(now)` once per command period; the executor answers what to command and when
to take observations. Time only enters through `now` (for the inter-chunk gap), so tests drive it
tick by tick.

Grid (paper App. A.1, DESIGN §1). With `substeps` command ticks per 0.1 s control step
(command_rate_hz / control_rate_hz), chunk step k is reached at command tick (k+1)·substeps - 1,
linearly interpolated from the previous target. The observation "after sub-step k" is taken at
the start of tick (k+1)·substeps, i.e. when step k's target is due to be reached — for
k = 3, 7, 11, 15 these are the 4 mosaics of the next latent frame. The last of them (k = 15)
falls on the first tick after the chunk: its observation is submitted for inference and the
executor holds (target None) until the next chunk is delivered. The time between that tick and the
first command of the next chunk is the *inter-chunk gap*: zero is ideal; in this synchronous
protocol it is the inference latency rounded up to the command period.

A *hold chunk* (every target = the hold pose) keeps the sampling grid running while the robot
stands still, e.g. after a refused chunk or after inputs came back from stale, so the model keeps
receiving 4 mosaics per latent frame and the next chunk comes from fresh observations.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

__all__ = ["ChunkExecutor", "Phase", "Tick"]


class Phase(Enum):
    START = "start"  # episode start: sample one observation (the first mosaic alone) and submit it
    WAITING = "waiting"  # inference in flight: hold
    EXECUTING = "executing"
    STALLED = "stalled"  # aborted (stale input, disabled): hold, no sampling until resumed


@dataclass
class Tick:
    target: np.ndarray | None = None  # None: hold the last commanded target
    sample: bool = False  # take an observation now (latest frame per camera + measured joints)
    submit: bool = False  # the samples for the next inference are complete: run it
    first: bool = False  # the submitted observation is an episode's first (one mosaic)
    chunk_started: bool = False
    gap: float | None = None  # seconds from the submit tick to this chunk's first command


def observation_substeps(chunk_size: int = 16) -> tuple[int, ...]:
    """Sub-steps after which a mosaic is taken: 4 per chunk (the VAE's temporal compression), evenly
    spaced, the last at the chunk's end: (3, 7, 11, 15) for 16, (0, 1, 2, 3) for 4. The one
    definition shared by the node, the checkpoint manifest and latent precompute."""
    if chunk_size % 4 or chunk_size < 4:
        raise ValueError(f"chunk size {chunk_size} must be a multiple of 4 (4 mosaics per latent frame)")
    stride = chunk_size // 4
    return tuple(stride * (m + 1) - 1 for m in range(4))


class ChunkExecutor:
    def __init__(
        self,
        chunk_size: int = 16,
        substeps: int = 1,
        observe_after: tuple[int, ...] | None = None,
    ) -> None:
        if observe_after is None:
            observe_after = observation_substeps(chunk_size)
        if substeps < 1:
            raise ValueError("substeps must be >= 1")
        if not observe_after or sorted(observe_after) != list(observe_after):
            raise ValueError("observe_after must be a non-empty ascending tuple")
        if observe_after[-1] >= chunk_size or observe_after[0] < 0:
            raise ValueError("observe_after indices must lie inside the chunk")
        self.chunk_size = chunk_size
        self.substeps = substeps
        # tick index (from the chunk's first command) at which each observation is sampled
        self._sample_ticks = {(k + 1) * substeps: k for k in observe_after}
        self._submit_tick = (observe_after[-1] + 1) * substeps
        self.phase = Phase.STALLED
        self._chunk: np.ndarray | None = None
        self._start_pose: np.ndarray | None = None
        self._pending: tuple[np.ndarray, np.ndarray] | None = None
        self._i = 0
        self._submit_time: float | None = None
        self.episode_started = False

    # -- control from the node -------------------------------------------------------------
    def restart_episode(self) -> None:
        """Next tick samples the episode's first observation (after Policy.reset)."""
        self.phase = Phase.START
        self.episode_started = False
        self._pending = None
        self._chunk = None
        self._submit_time = None

    def stall(self) -> None:
        """Abort the current chunk and stop sampling (inputs stale, disabled, error)."""
        if self.phase is not Phase.START or self.episode_started:
            self.phase = Phase.STALLED
        self._pending = None
        self._chunk = None
        self._submit_time = None

    def resume(self, hold_pose: np.ndarray) -> None:
        """Leave STALLED: an episode that has begun continues with a hold chunk, else starts."""
        if self.phase is not Phase.STALLED:
            return
        if self.episode_started:
            self.deliver_hold(hold_pose)
            self._start_pending()
        else:
            self.restart_episode()

    def deliver(self, chunk: np.ndarray, start_pose: np.ndarray) -> None:
        """A checked chunk: executed from the next tick, interpolating from `start_pose`."""
        self._pending = (np.asarray(chunk, dtype=np.float64), np.asarray(start_pose, dtype=np.float64))

    def deliver_hold(self, hold_pose: np.ndarray, start_pose: np.ndarray | None = None) -> None:
        pose = np.asarray(hold_pose, dtype=np.float64)
        self.deliver(np.tile(pose, (self.chunk_size, 1)), pose if start_pose is None else start_pose)

    @property
    def executing_hold(self) -> bool:
        return self._chunk is not None and bool(np.all(self._chunk == self._chunk[0]))

    # -- the grid --------------------------------------------------------------------------
    def _start_pending(self) -> bool:
        if self._pending is None:
            return False
        self._chunk, self._start_pose = self._pending
        self._pending = None
        self._i = 0
        self.phase = Phase.EXECUTING
        return True

    def _target(self, i: int) -> np.ndarray:
        assert self._chunk is not None and self._start_pose is not None
        k, j = divmod(i, self.substeps)
        prev = self._start_pose if k == 0 else self._chunk[k - 1]
        a = (j + 1) / self.substeps
        return prev + (self._chunk[k] - prev) * a

    def tick(self, now: float) -> Tick:
        out = Tick()
        if self.phase is Phase.STALLED:
            return out
        if self.phase is Phase.START:
            self.phase = Phase.WAITING
            self.episode_started = True
            self._submit_time = now
            return Tick(sample=True, submit=True, first=True)
        if self.phase is Phase.WAITING:
            if not self._start_pending():
                return out
            out.chunk_started = True
            if self._submit_time is not None:
                out.gap = max(0.0, now - self._submit_time)
        i = self._i
        if i in self._sample_ticks:
            out.sample = True
            if i == self._submit_tick:
                out.submit = True
        if i < self.chunk_size * self.substeps:
            out.target = self._target(i)
        self._i += 1
        if out.submit:
            self.phase = Phase.WAITING
            self._chunk = None
            self._submit_time = now
        return out
