"""Clock-free execution of 16-step action chunks on the control grid (no ROS, no threads).

The node calls `tick(now)` once per command period; the executor answers what to command and when
to take observations. Time only enters through `now` (for the hold time), so tests drive it tick
by tick.

Grid (paper App. A.1, DESIGN §1), in *rows*: row r is the r-th 0.1 s control step of an episode
(the row of a recorded episode, see memorywam_train/precompute.py). Chunk c holds the commands of
rows Kc .. Kc+K-1 (K = chunk size, 16). With `substeps` command ticks per control step
(command_rate_hz / control_rate_hz), row r's target is reached on the last of its ticks, linearly
interpolated from the previous target. The observation of row r ("after sub-step r-1") is taken on
row r's first tick, before its command: the moment row r-1's target is due.

Observation lead ℓ (`lead`, control steps, 0 <= ℓ < K; `observation_substeps`, `frame_rows`): the
4 mosaics of latent frame j+1 are the observations after sub-steps K/4-1-ℓ, 2K/4-1-ℓ, 3K/4-1-ℓ,
K-1-ℓ of chunk j (rows before the episode's first row repeat the first observation). The last
one is submitted for inference, which then has ℓ control steps until chunk j+1 is due on the tick
after chunk j's last command. ℓ = 0 is the paper's synchronous protocol: the last mosaic falls
on the tick chunk j+1 is due, so the arm always holds for the inference latency.

Deadline miss (the chunk is not delivered when due): the executor holds (target None) until it
is, then starts it at step 0, and the whole grid — the next observations included — shifts by the
hold. Step 0, not "the step that is due now": skipping steps would make the first command jump
ahead of where the arm stands (the velocity clamp would then smear the jump) and would leave the
observations of the next latent frame after sub-steps the arm never executed; starting at step 0
keeps the executed rows and the observations exactly the training table's, the miss only inserts
a pause (like ℓ = 0 always does). `Tick.hold_ticks` reports each chunk's hold.

Episode start: the first observation (row 0) is latent frame 0 alone; chunk 0 waits for it (no
deadline: the arm stands). After a stall (stale inputs, disable) the episode continues with a *hold
chunk* (every target = the hold pose) as chunk 0 of a new segment: its rows restart at 0, the
observation at the resume tick plays the episode's first observation for the clamped rows, and
the model keeps receiving 4 mosaics per latent frame, so the next chunk comes from fresh
observations. A refused chunk is executed as a hold chunk in its slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

__all__ = ["ChunkExecutor", "Phase", "Tick", "check_lead", "frame_rows", "obs_row", "observation_substeps"]


class Phase(Enum):
    START = "start"  # episode start: the next tick samples the first observation and submits it
    WAITING = "waiting"  # at a chunk boundary without a chunk: hold
    EXECUTING = "executing"
    STALLED = "stalled"  # aborted (stale input, disabled): hold, no sampling until resumed


@dataclass
class Tick:
    target: np.ndarray | None = None  # None: hold the last commanded target
    sample: int = 0  # take an observation now: this many copies of it join the forming latent frame
    submit: bool = False  # the forming latent frame is complete: run inference on it
    carry: int = 0  # after the submit: copies of this observation that open the next frame
    first: bool = False  # the submitted frame is an episode's first (one mosaic)
    chunk_started: bool = False
    hold_ticks: int | None = None  # ticks this chunk was held past its due tick (None: no deadline)
    gap: float | None = None  # seconds from the tick this chunk was due to its first command
    # with submit and lead ℓ > 0: the last ℓ targets of the chunk executing (they run while the next is
    # computed: a model with a committed prefix is given them); None when no chunk runs (episode start)
    committed: np.ndarray | None = None


def check_lead(lead: int, chunk_size: int = 16) -> int:
    """ℓ is a whole number of control steps, 0 <= ℓ < chunk size (inference of frame j+1 must start
    after chunk j has started, so one model call runs at a time)."""
    if isinstance(lead, bool) or int(lead) != lead or not 0 <= int(lead) < chunk_size:
        raise ValueError(f"observation lead {lead!r} must be an integer in 0..{chunk_size - 1} (control steps)")
    return int(lead)


def observation_substeps(chunk_size: int = 16, lead: int = 0) -> tuple[int, ...]:
    """Sub-steps of chunk j after which the mosaics of latent frame j+1 are taken: 4 per chunk (the
    VAE's temporal compression), evenly spaced, the last ℓ steps before the chunk's end:
    (3, 7, 11, 15) for 16 and ℓ = 0, (0, 1, 2, 3) for 4, (-2, 2, 6, 10) for ℓ = 5 (negative: the
    previous chunk's sub-step 16+k, or before the episode's first row). The one definition shared
    by the node, the checkpoint manifest and latent precompute."""
    if chunk_size % 4 or chunk_size < 4:
        raise ValueError(f"chunk size {chunk_size} must be a multiple of 4 (4 mosaics per latent frame)")
    lead = check_lead(lead, chunk_size)
    stride = chunk_size // 4
    return tuple(stride * (m + 1) - 1 - lead for m in range(4))


def frame_rows(j: int, chunk_size: int = 16, lead: int = 0) -> list[int]:
    """Rows whose observations form latent frame j: [0] for j = 0, else the rows observed after
    `observation_substeps` of chunk j-1 (chunk j-1 starts at row K(j-1)); rows before the episode's
    first row repeat it (row 0)."""
    if j == 0:
        return [0]
    return [max(0, chunk_size * (j - 1) + k + 1) for k in observation_substeps(chunk_size, lead)]


def obs_row(j: int, chunk_size: int = 16, lead: int = 0) -> int:
    """Row of the last mosaic of latent frame j (its proprio): max(0, Kj - ℓ)."""
    return frame_rows(j, chunk_size, lead)[-1]


class ChunkExecutor:
    def __init__(self, chunk_size: int = 16, substeps: int = 1, lead: int = 0) -> None:
        if substeps < 1:
            raise ValueError("substeps must be >= 1")
        observation_substeps(chunk_size, lead)  # validates both
        self.chunk_size = chunk_size
        self.substeps = substeps
        self.lead = int(lead)
        self.phase = Phase.STALLED
        self.episode_started = False
        self._chunk: np.ndarray | None = None
        self._start_pose: np.ndarray | None = None
        self._pending: tuple[np.ndarray, np.ndarray] | None = None
        self._new_segment(0)

    def _new_segment(self, first_frame: int) -> None:
        """Rows restart at 0; `first_frame` is the latent frame the segment's observations form
        first (0 at an episode start, 1 after a stall: its chunk 0 is the hold chunk)."""
        self._row = 0  # the row whose command is issued next
        self._sub = 0  # tick within that row
        self._chunk_index = 0  # chunk of the segment executing, or due next
        self._observed_row = -1  # the row whose observation was taken (not again during a hold)
        self._frame = first_frame
        self._frame_rows = frame_rows(first_frame, self.chunk_size, self.lead)
        self._due_time: float | None = None
        self._hold_ticks = 0
        self._chunk = None

    # -- control from the node -------------------------------------------------------------
    def restart_episode(self) -> None:
        """Next tick samples the episode's first observation (after Policy.reset)."""
        self.phase = Phase.START
        self.episode_started = False
        self._pending = None
        self._new_segment(0)

    def stall(self) -> None:
        """Abort the current chunk and stop sampling (inputs stale, disabled, error)."""
        if self.phase is not Phase.START or self.episode_started:
            self.phase = Phase.STALLED
        self._pending = None
        self._chunk = None

    def resume(self, hold_pose: np.ndarray) -> None:
        """Leave STALLED: an episode that has begun continues with a hold chunk, else starts."""
        if self.phase is not Phase.STALLED:
            return
        if self.episode_started:
            self._new_segment(1)
            self.deliver_hold(hold_pose)
            self.phase = Phase.WAITING  # the next tick starts the hold chunk (no deadline)
        else:
            self.restart_episode()

    def deliver(self, chunk: np.ndarray, start_pose: np.ndarray) -> None:
        """A checked chunk, started at the next chunk boundary (now if the executor is waiting);
        its first step interpolates from `start_pose` (the node delivers when `needs_chunk`, with
        its last command)."""
        self._pending = (np.asarray(chunk, dtype=np.float64), np.asarray(start_pose, dtype=np.float64))

    def deliver_hold(self, hold_pose: np.ndarray, start_pose: np.ndarray | None = None) -> None:
        pose = np.asarray(hold_pose, dtype=np.float64)
        self.deliver(np.tile(pose, (self.chunk_size, 1)), pose if start_pose is None else start_pose)

    @property
    def needs_chunk(self) -> bool:
        """The next tick is a chunk boundary without a chunk: the node delivers the next result now
        (its safety check then sees the joints the chunk really starts from)."""
        return self.phase in (Phase.START, Phase.WAITING, Phase.EXECUTING) and self._chunk is None

    @property
    def executing_hold(self) -> bool:
        return self._chunk is not None and bool(np.all(self._chunk == self._chunk[0]))

    # -- the grid --------------------------------------------------------------------------
    def _observe(self, row: int, out: Tick) -> None:
        if self._observed_row == row:
            return
        self._observed_row = row
        out.sample = self._frame_rows.count(row)
        if out.sample and self._frame_rows[-1] == row:
            out.submit, out.first = True, self._frame == 0
            if self.lead and self._chunk is not None:
                out.committed = self._chunk[self.chunk_size - self.lead :].copy()
            self._frame += 1
            self._frame_rows = frame_rows(self._frame, self.chunk_size, self.lead)
            out.carry = self._frame_rows.count(row)

    def _start_pending(self, out: Tick, now: float) -> bool:
        if self._due_time is None:
            self._due_time = now
        if self._pending is None:
            self._hold_ticks += 1
            return False
        chunk, start_pose = self._pending
        self._pending = None
        self._chunk, self._start_pose = chunk, start_pose
        out.chunk_started = True
        out.gap = max(0.0, now - self._due_time)
        # chunk 0 of a segment has no deadline: the episode's first inference, or the hold chunk
        out.hold_ticks = self._hold_ticks if self._chunk_index > 0 else None
        self._due_time, self._hold_ticks = None, 0
        self.phase = Phase.EXECUTING
        return True

    def _target(self) -> np.ndarray:
        assert self._chunk is not None and self._start_pose is not None
        k = self._row - self._chunk_index * self.chunk_size
        prev = self._start_pose if k == 0 else self._chunk[k - 1]
        a = (self._sub + 1) / self.substeps
        return prev + (self._chunk[k] - prev) * a

    def tick(self, now: float) -> Tick:
        out = Tick()
        if self.phase is Phase.STALLED:
            return out
        if self.phase is Phase.START:
            self.phase = Phase.WAITING
            self.episode_started = True
        if self._sub == 0:
            self._observe(self._row, out)
        if self._chunk is None and not self._start_pending(out, now):
            self.phase = Phase.WAITING
            return out
        out.target = self._target()
        self._sub += 1
        if self._sub == self.substeps:
            self._sub, self._row = 0, self._row + 1
            if self._row == (self._chunk_index + 1) * self.chunk_size:  # chunk done: the next is due
                self._chunk, self._chunk_index = None, self._chunk_index + 1
        return out
