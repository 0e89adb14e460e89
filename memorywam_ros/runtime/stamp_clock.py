"""When was a camera frame taken, in the node's clock? Header stamps checked against arrival times.

Staleness by arrival time alone lets a camera that republishes old frames (a stuck driver, a bag
replayed into the live topic, a relay re-sending its last frame) count as fresh. Stamps alone are
wrong the other way: the camera host's clock need not be the node's (a second computer without
NTP), so an honest frame can look seconds old or seconds in the future.

Rule (decided). Per camera, `lag = arrival - stamp` is the transport delay plus the clock offset
between the two hosts. The *offset estimate* is the smallest lag over the last `window_s` (10 s):
the fastest delivery seen, so transport jitter does not count as age and any constant clock offset
cancels out. A frame was taken at `stamp + offset` in node time (never after its arrival), and a
camera's age is the node clock minus that time for its newest frame. Hence:

* same clock, or clocks off by a constant (30 s ahead or behind): ages are the extra delay over
  the fastest delivery; no spurious holds;
* stamps that stop advancing (the same frame republished) or fall behind (old frames, growing
  queueing delay): the frame time stays put or lies in the past, the age grows, the camera goes
  stale and the node holds;
* a camera whose stamps are off by more than `max_offset_s` (1 s by default: hosts on one machine
  or NTP-synchronised are off by milliseconds) from the start looks the same as old frames, so its
  frames are refused (counted as dropped, warning naming the camera) and it goes stale: raise
  `camera_max_clock_offset_s` for a camera host whose clock is deliberately not synchronised.
  Old frames arriving after good ones are refused by the same bound once the window has slid past
  the good ones; until then they are simply old (stale).
* a camera clock that steps backwards mid-run (an NTP correction) makes its frames look old for
  up to `window_s`, then the estimate follows (a step above `max_offset_s` is refused as above);
* a zero stamp (no header time) falls back to the arrival time.
"""

from __future__ import annotations

from collections import deque

__all__ = ["StampClock", "StampError"]


class StampError(ValueError):
    """A frame whose stamp cannot be trusted (the message says how far off and what to do)."""


class StampClock:
    def __init__(self, max_offset_s: float = 1.0, window_s: float = 10.0) -> None:
        if max_offset_s <= 0 or window_s <= 0:
            raise ValueError("max_offset_s and window_s must be positive")
        self.max_offset_s = float(max_offset_s)
        self.window_s = float(window_s)
        self._lags: deque[tuple[float, float]] = deque()  # (arrival, lag), lags increasing: sliding minimum

    @property
    def offset(self) -> float | None:
        """Current estimate of (node clock - camera clock) + the fastest delivery, s."""
        return self._lags[0][1] if self._lags else None

    def frame_time(self, stamp: float | None, arrival: float) -> float:
        """Node-clock time the frame was taken; raises StampError for a stamp off by > max_offset_s."""
        if not stamp or stamp <= 0.0:
            return arrival
        lag = arrival - stamp
        while self._lags and self._lags[-1][1] >= lag:
            self._lags.pop()
        self._lags.append((arrival, lag))
        while self._lags[0][0] < arrival - self.window_s:
            self._lags.popleft()
        offset = self._lags[0][1]
        if abs(offset) > self.max_offset_s:
            side = "behind" if offset > 0 else "ahead of"
            raise StampError(
                f"header stamps are {abs(offset):.3f} s {side} the node clock (> camera_max_clock_offset_s "
                f"{self.max_offset_s:g}): old frames, or the camera host's clock is not synchronised"
            )
        return stamp + offset
