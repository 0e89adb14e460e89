"""Time alignment primitives: a fixed-rate grid on the head camera, as-of sampling, and the
stamp checks (repeated stamps, clock jumps, gaps) that alignment.py applies per bag.

Rules (DESIGN §1, ros2-anchors §5):
* The grid runs from the first to the last head-camera stamp at `rate_hz` (10 Hz), anchored on
  the first head stamp, so frame 0 is an actual head frame.
* Every stream (the head camera included) is sampled *as-of*: the latest message whose stamp is
  at or before the grid time, and no older than the stream's `max_age`. Nothing from the future
  is ever used, so state/action at grid time t cannot leak information from after t.
* A grid point where any stream has no such message is a gap: alignment.py splits the episode
  there (`runs`), so an episode's rows stay exactly 1/rate apart; the miss is counted against
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
    """One stream within one episode."""

    messages: int = 0  # messages whose stamps fall inside the episode window
    largest_gap_s: float = 0.0  # largest interval between its messages inside the window

    def as_dict(self) -> dict[str, float | int]:
        return {"messages": self.messages, "largest_gap_s": round(self.largest_gap_s, 6)}


@dataclass
class StreamCounts:
    """What the converter did to one stream's messages in one bag (summed over its sources)."""

    dropped: int = 0  # grid points without a fresh message of this stream (gaps and trimmed ends)
    repeated: int = 0  # messages stamped like an earlier one: dropped, the first is kept
    conflicting: int = 0  # of those, joint messages whose values differ from the kept one
    reordered: int = 0  # stamped at most max_age before their predecessor: sorted into place
    backward: int = 0  # stamped more than max_age before their predecessor: clock jumps + outliers

    def add(self, other: StreamCounts) -> None:
        for key, value in vars(other).items():
            setattr(self, key, getattr(self, key) + value)

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


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


def clock_breaks(stamps_ns: np.ndarray, max_back_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """For stamps in storage (receive) order: (outliers, jumps), storage indices.

    * outlier: a single message out of line with its two neighbours while they agree with each
      other (more than `max_back_ns` before its predecessor or after its successor), e.g. one
      uninitialised header; it is dropped and nothing else changes;
    * jump: a message stamped more than `max_back_ns` before its predecessor (outliers aside):
      the stream's clock went back, so stamps before and after it cannot be compared.
    """
    n = stamps_ns.size
    outlier = np.zeros(n, dtype=bool)
    if n >= 3:
        prev, cur, nxt = stamps_ns[:-2], stamps_ns[1:-1], stamps_ns[2:]
        outlier[1:-1] = (nxt >= prev - max_back_ns) & ((cur < prev - max_back_ns) | (cur > nxt + max_back_ns))
    kept = np.flatnonzero(~outlier)
    s = stamps_ns[kept]
    return np.flatnonzero(outlier), kept[1:][s[1:] < s[:-1] - max_back_ns]


def first_per_stamp(stamps_ns: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, StreamCounts]:
    """Indices (into `stamps_ns`, storage order) of the messages to sample from, sorted by stamp,
    one per stamp: of messages sharing a stamp the first stored is kept (a later one carries a
    stale stamp, so its true time is unknown). Counts repeated, conflicting (rows of `values`
    that differ from the kept message's) and reordered (a stamp below its predecessor's)."""
    order = np.argsort(stamps_ns, kind="stable")
    s = stamps_ns[order]
    dup = np.zeros(s.size, dtype=bool)
    dup[1:] = s[1:] == s[:-1]
    counts = StreamCounts(repeated=int(dup.sum()), reordered=int((np.diff(stamps_ns) < 0).sum()))
    if values is not None and dup.any():
        first = order[np.maximum.accumulate(np.where(dup, 0, np.arange(s.size)))]
        counts.conflicting = int((values[order[dup]] != values[first[dup]]).any(axis=1).sum())
    return order[~dup], counts


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as [start, stop) pairs."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))
