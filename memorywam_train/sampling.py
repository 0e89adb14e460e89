"""Time alignment: a fixed-rate grid on the head camera and as-of sampling of every stream.

Rules (DESIGN §1, ros2-anchors §5):
* The grid runs from the first to the last head-camera stamp at `rate_hz` (10 Hz), anchored on
  the first head stamp, so frame 0 is an actual head frame.
* Every stream (the head camera included) is sampled *as-of*: the latest message whose stamp is
  at or before the grid time, and no older than the stream's `max_age`. Nothing from the future
  is ever used, so state/action at grid time t cannot leak information from after t.
* A grid point where any stream has no such message is dropped; the drop is counted against
  each stream that was missing there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NS = 1_000_000_000


def make_grid(head_stamps_ns: np.ndarray, rate_hz: float) -> np.ndarray:
    """int64 grid times from the first to the last head stamp (inclusive) at `rate_hz`."""
    if head_stamps_ns.size == 0:
        return np.zeros(0, dtype=np.int64)
    t0, t1 = int(head_stamps_ns.min()), int(head_stamps_ns.max())
    period = NS / rate_hz
    n = int(np.floor((t1 - t0) / period + 1e-9)) + 1
    # integer arithmetic on the offsets keeps the grid exact over hours of data
    return t0 + np.round(np.arange(n, dtype=np.float64) * period).astype(np.int64)


def asof(stamps_ns: np.ndarray, grid_ns: np.ndarray, max_age_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """For sorted `stamps_ns`, the index of the latest stamp <= each grid time, and whether it
    exists and is at most `max_age_ns` old. Invalid entries have index -1."""
    idx = np.searchsorted(stamps_ns, grid_ns, side="right") - 1
    valid = idx >= 0
    age = np.where(valid, grid_ns - stamps_ns[np.clip(idx, 0, None)] if stamps_ns.size else 0, 0)
    valid &= age <= max_age_ns
    return np.where(valid, idx, -1), valid


def largest_gap_s(stamps_ns: np.ndarray) -> float:
    """Largest interval between consecutive (sorted) stamps, seconds; 0 for < 2 stamps."""
    if stamps_ns.size < 2:
        return 0.0
    return float(np.diff(stamps_ns).max()) / NS


@dataclass
class StreamStats:
    """What happened to one stream within one episode."""

    messages: int = 0  # messages whose stamps fall inside the episode window
    dropped: int = 0  # grid points dropped because this stream had no fresh message
    largest_gap_s: float = 0.0  # largest interval between its messages inside the window

    def as_dict(self) -> dict[str, float | int]:
        return {
            "messages": self.messages,
            "dropped": self.dropped,
            "largest_gap_s": round(self.largest_gap_s, 6),
        }


def window_stats(stamps_ns: np.ndarray, start_ns: int, end_ns: int) -> StreamStats:
    """Message count and largest gap of a sorted stream inside [start, end]."""
    lo = int(np.searchsorted(stamps_ns, start_ns, side="left"))
    hi = int(np.searchsorted(stamps_ns, end_ns, side="right"))
    inside = stamps_ns[lo:hi]
    return StreamStats(messages=int(inside.size), largest_gap_s=largest_gap_s(inside))


def split_segments(stamps_ns: np.ndarray, marks_ns: np.ndarray) -> list[np.ndarray]:
    """Split sorted stamps at marker times: each marker starts a new segment (stamps >= marker).
    Empty segments are left out. Applied to the head stamps, so each episode gets its own grid."""
    if marks_ns.size == 0:
        return [stamps_ns]
    seg_id = np.searchsorted(np.sort(marks_ns), stamps_ns, side="right")
    return [stamps_ns[seg_id == s] for s in np.unique(seg_id)]
