"""The command stream's fixed-rate thread: rate, pause, surviving an exception, no catch-up burst."""

from __future__ import annotations

import time

import numpy as np

from memorywam_ros.runtime.periodic import PeriodicThread


def test_rate_pause_and_errors() -> None:
    calls: list[float] = []
    errors: list[BaseException] = []

    def tick() -> None:
        calls.append(time.monotonic())
        if len(calls) == 3:
            raise RuntimeError("one bad tick")

    loop = PeriodicThread(0.05, tick, errors.append)
    time.sleep(0.2)
    assert calls == []  # nothing before start()
    loop.start()
    time.sleep(1.0)
    loop.pause()
    n = len(calls)
    time.sleep(0.3)
    assert len(calls) <= n + 1  # at most a tick already in flight
    loop.close()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    periods = np.diff(calls[: n])
    assert 17 <= n <= 23, n
    assert abs(periods.mean() - 0.05) < 0.01


def test_overrun_does_not_burst() -> None:
    calls: list[float] = []

    def slow() -> None:
        calls.append(time.monotonic())
        if len(calls) == 2:
            time.sleep(0.35)  # misses ~7 deadlines

    loop = PeriodicThread(0.05, slow, lambda e: None)
    loop.start()
    time.sleep(0.7)
    loop.close()
    gaps = np.diff(calls)
    assert (gaps[2:] > 0.03).all(), gaps  # after the overrun: back on schedule, no burst of catch-up calls
    # the periods that had no call are counted (~0.35 s / 0.05 s - 1, scheduling aside), and the
    # call after the overrun was late by about the overrun
    assert 4 <= loop.skipped <= 8, loop.skipped
    assert 0.25 <= loop.take_late() <= 0.5
    assert loop.take_late() == 0.0
