"""A fixed-rate loop on its own thread, at absolute deadlines (no ROS).

Why the policy node's command stream does not use an rclpy timer: a timer shares the executor with
the camera/joint subscriptions, services and diagnostics, and rclpy drops ticks when the executor
is late (rcl skips missed periods). Measured on a 2-core machine with the node, a 100 Hz joint
feed and 3 cameras in one process: a 10 Hz rclpy timer fired at ~5 Hz, with gaps up to 0.6 s.
A plain thread sleeping to absolute deadlines keeps the rate (publishing from it is thread-safe).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["PeriodicThread"]


class PeriodicThread:
    """Calls `fn()` every `period` s while running; `start()` restarts the phase, `pause()` stops calling.

    A call that overruns does not cause a burst of catch-up calls: deadlines missed by more than a
    period are dropped and the schedule restarts from now. `skipped` counts the dropped periods
    (calls that never happened: on the robot, commands never sent, so a chunk takes longer than
    its 1.6 s) and `late_s` the largest lateness of a call since the last `take_late()`.
    """

    def __init__(self, period: float, fn: Callable[[], None], on_error: Callable[[BaseException], None],
                 name: str = "periodic") -> None:
        self.period = period
        self._fn = fn
        self._on_error = on_error
        self._running = threading.Event()
        self._closed = threading.Event()
        self._restart = False
        self.skipped = 0
        self._late_s = 0.0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def start(self) -> None:
        self._restart = True
        self._running.set()

    def pause(self) -> None:
        self._running.clear()

    def take_late(self) -> float:
        """Largest lateness (s) of a call since the previous `take_late()`, then reset."""
        late, self._late_s = self._late_s, 0.0
        return late

    def close(self, timeout: float = 2.0) -> None:
        self._closed.set()
        self._running.set()  # wake the loop so it sees `closed`
        self._thread.join(timeout)

    def _loop(self) -> None:
        deadline = time.monotonic()
        while True:
            self._running.wait()
            if self._closed.is_set():
                return
            if self._restart:
                self._restart, deadline = False, time.monotonic()
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, 0.02))  # short sleeps: pause/close take effect quickly
                continue
            if not self._running.is_set():
                continue
            self._late_s = max(self._late_s, -delay)
            try:
                self._fn()
            except Exception as err:  # the loop must survive one bad tick; the owner reports it
                self._on_error(err)
            deadline += self.period
            behind = time.monotonic() - deadline
            if behind > self.period:  # the next call would be this late: drop the missed periods
                self.skipped += int(behind // self.period)
                self._late_s = max(self._late_s, behind)
                deadline = time.monotonic()
