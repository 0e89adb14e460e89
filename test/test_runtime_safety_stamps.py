"""Camera frame ages by header stamp (runtime/stamp_clock.py): old frames go stale, clock offsets do not."""

from __future__ import annotations

import numpy as np
import pytest

from memorywam_ros.runtime.stamp_clock import StampClock, StampError

T0 = 1.7e9  # a wall-clock-like node time


def _stream(clock: StampClock, seconds: float, offset: float, rng: np.random.Generator, t_start: float = T0,
            stamp_of=None) -> list[tuple[float, float]]:
    """30 Hz frames stamped by a camera clock `offset` s from the node's, delivered 5-40 ms later.
    Returns (arrival, frame_time) per frame."""
    out = []
    for k in range(int(seconds * 30)):
        taken = t_start + k / 30
        arrival = taken + rng.uniform(0.005, 0.04)
        stamp = taken + offset if stamp_of is None else stamp_of(taken)
        out.append((arrival, clock.frame_time(stamp, arrival)))
    return out


@pytest.mark.parametrize("offset", [0.0, 30.0, -30.0])
def test_constant_clock_offset_is_cancelled(offset: float) -> None:
    rng = np.random.default_rng(0)
    clock = StampClock(max_offset_s=60.0)
    frames = _stream(clock, 20.0, offset, rng)
    ages = np.array([a - t for a, t in frames])
    assert np.all(ages >= 0) and np.all(ages <= 0.04)  # at most the delivery jitter, never the offset
    assert clock.offset == pytest.approx(-offset, abs=0.01)


@pytest.mark.parametrize("offset, side", [(30.0, "behind"), (-30.0, "ahead of")])
def test_offset_beyond_the_bound_is_refused_by_name(offset: float, side: str) -> None:
    # camera stamps 30 s behind the node = node clock 30 s ahead of the stamps, and vice versa
    clock = StampClock(max_offset_s=1.0)
    with pytest.raises(StampError, match=f"(29.99|30.01)0 s {side} the node clock .*camera_max_clock_offset_s"):
        clock.frame_time(T0 - offset, T0 + 0.01)


def test_republished_frames_age() -> None:
    """The same frame (stamp) republished: its time stays put, so the camera's age grows."""
    rng = np.random.default_rng(1)
    clock = StampClock()
    _stream(clock, 2.0, 0.0, rng)
    frozen = T0 + 2.0
    later = _stream(clock, 1.0, 0.0, rng, t_start=T0 + 2.0, stamp_of=lambda taken: frozen)
    arrival, taken = later[-1]
    assert arrival - taken > 0.9  # ~1 s old although it just arrived


def test_hour_old_frames_mid_run_are_old_then_refused() -> None:
    rng = np.random.default_rng(2)
    clock = StampClock(max_offset_s=1.0, window_s=10.0)
    _stream(clock, 5.0, 0.0, rng)
    old = _stream(clock, 3.0, 0.0, rng, t_start=T0 + 5.0, stamp_of=lambda taken: taken - 3600.0)
    assert all(a - t > 3599 for a, t in old)  # the window still holds good lags: frames are an hour old
    with pytest.raises(StampError, match="3600"):
        _stream(clock, 10.0, 0.0, rng, t_start=T0 + 8.0, stamp_of=lambda taken: taken - 3600.0)


def test_hour_old_frames_from_the_start_are_refused() -> None:
    """A bag replayed into the topic before the node started: indistinguishable from an unsynchronised
    clock, so refused under the default bound (not 'fresh')."""
    with pytest.raises(StampError):
        StampClock().frame_time(T0 - 3600.0, T0)


def test_backward_clock_step_recovers_after_the_window() -> None:
    rng = np.random.default_rng(3)
    clock = StampClock(max_offset_s=1.0, window_s=10.0)
    _stream(clock, 5.0, 0.0, rng)
    after = _stream(clock, 12.0, -0.5, rng, t_start=T0 + 5.0)  # camera clock stepped back 0.5 s
    ages = np.array([a - t for a, t in after])
    assert ages[:30].min() > 0.45  # looks old (a stale camera: hold) ...
    assert ages[-30:].max() < 0.05  # ... until the window has slid past the old lags


def test_zero_stamp_falls_back_to_arrival() -> None:
    clock = StampClock()
    assert clock.frame_time(0.0, T0) == T0 and clock.frame_time(None, T0 + 1) == T0 + 1
    assert clock.offset is None
