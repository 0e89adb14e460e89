"""Small thread-safe statistics for the node's diagnostics (no ROS; times are plain floats in s)."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

__all__ = ["RateMeter", "RollingStats"]


class RollingStats:
    """Last value, count and percentiles over the most recent `window` samples."""

    def __init__(self, window: int = 200) -> None:
        self._values: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.count = 0
        self.last: float | None = None

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(float(value))
            self.last = float(value)
            self.count += 1

    def percentile(self, q: float) -> float | None:
        with self._lock:
            if not self._values:
                return None
            return float(np.percentile(np.fromiter(self._values, dtype=np.float64), q))

    def values(self) -> np.ndarray:
        with self._lock:
            return np.fromiter(self._values, dtype=np.float64)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self.last = None
            self.count = 0


class RateMeter:
    """Message rate over a sliding time window and the age of the last message.

    `tick(t)` records an arrival at time t; `rate(now)` counts arrivals in (now - window, now].
    """

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self.last: float | None = None
        self.count = 0

    def tick(self, t: float) -> None:
        with self._lock:
            self._times.append(t)
            self.last = t
            self.count += 1
            self._trim(t)

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()

    def rate(self, now: float) -> float:
        with self._lock:
            self._trim(now)
            if len(self._times) < 2:
                return 0.0
            span = self._times[-1] - self._times[0]
            # n arrivals span n-1 intervals; fall back to the window when they all coincide
            return (len(self._times) - 1) / span if span > 0 else len(self._times) / self.window_s

    def age(self, now: float) -> float | None:
        last = self.last
        return None if last is None else max(0.0, now - last)
