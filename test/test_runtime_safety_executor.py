"""Chunk execution grid, interpolation, gap measurement, stats and the inference thread (no ROS)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from memorywam_ros.runtime.chunk_executor import ChunkExecutor, Phase
from memorywam_ros.runtime.inference_worker import InferenceWorker, Job
from memorywam_ros.runtime.node_stats import RateMeter, RollingStats


def _chunk(n: int = 2, size: int = 16) -> np.ndarray:
    return np.arange(1, size + 1, dtype=float)[:, None] * np.ones((1, n))


def test_episode_start_then_sampling_grid_at_10hz() -> None:
    ex = ChunkExecutor()
    ex.restart_episode()
    t = ex.tick(0.0)
    assert t.sample and t.submit and t.first and t.target is None
    assert ex.tick(0.1).target is None  # waiting: hold
    ex.deliver(_chunk(), start_pose=np.zeros(2))
    ticks = [ex.tick(0.2 + 0.1 * i) for i in range(18)]
    assert ticks[0].chunk_started and ticks[0].gap == pytest.approx(0.2)
    # targets 1..16 on ticks 0..15, then hold
    assert [float(t.target[0]) for t in ticks[:16]] == list(range(1, 17))
    assert ticks[16].target is None and ticks[17].target is None
    # observations after sub-steps 3, 7, 11, 15 = ticks 4, 8, 12, 16; the last is submitted
    assert [i for i, t in enumerate(ticks) if t.sample] == [4, 8, 12, 16]
    assert [i for i, t in enumerate(ticks) if t.submit] == [16]
    assert not ticks[16].first
    assert ex.phase is Phase.WAITING


def test_gap_is_time_from_submit_to_next_first_command() -> None:
    ex = ChunkExecutor()
    ex.restart_episode()
    ex.tick(0.0)
    ex.deliver(_chunk(), np.zeros(2))
    for i in range(17):
        ex.tick(0.1 * (i + 1))  # submit at tick index 16 → t = 1.7
    ex.tick(1.8)
    ex.tick(1.9)
    ex.deliver(_chunk(), np.zeros(2))
    t = ex.tick(2.0)
    assert t.chunk_started and t.gap == pytest.approx(0.3)


def test_interpolation_at_higher_command_rate() -> None:
    ex = ChunkExecutor(substeps=4)
    ex.restart_episode()
    ex.tick(0.0)
    ex.deliver(_chunk(n=1), start_pose=np.zeros(1))
    targets, samples = [], []
    for i in range(16 * 4 + 1):
        t = ex.tick(0.1 + i * 0.025)
        targets.append(None if t.target is None else float(t.target[0]))
        if t.sample:
            samples.append(i)
    np.testing.assert_allclose(targets[:8], [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
    assert targets[63] == 16.0 and targets[64] is None
    # every 4th tick reaches the chunk's targets exactly
    assert targets[3::4] == [float(k) for k in range(1, 17)]
    assert samples == [16, 32, 48, 64]


def test_stall_and_resume_with_a_hold_chunk_keeps_the_grid() -> None:
    ex = ChunkExecutor()
    ex.restart_episode()
    ex.tick(0.0)
    ex.deliver(_chunk(), np.zeros(2))
    for i in range(6):
        ex.tick(0.1 * i)
    ex.stall()
    assert ex.tick(1.0).target is None and not ex.tick(1.1).sample
    hold = np.array([0.5, -0.5])
    ex.resume(hold)
    ticks = [ex.tick(1.2 + 0.1 * i) for i in range(17)]
    assert all(np.array_equal(t.target, hold) for t in ticks[:16])
    assert [i for i, t in enumerate(ticks) if t.sample] == [4, 8, 12, 16]
    assert ticks[16].submit and not ticks[16].first


def test_resume_before_first_observation_starts_the_episode() -> None:
    ex = ChunkExecutor()
    ex.stall()
    assert ex.tick(0.0).target is None
    ex.resume(np.zeros(2))
    t = ex.tick(0.1)
    assert t.sample and t.first


def test_refused_chunk_becomes_a_hold_chunk() -> None:
    ex = ChunkExecutor()
    ex.restart_episode()
    ex.tick(0.0)
    ex.deliver_hold(np.ones(2))
    t = ex.tick(0.1)
    assert t.chunk_started and np.array_equal(t.target, np.ones(2)) and ex.executing_hold


def test_executor_rejects_bad_grids() -> None:
    with pytest.raises(ValueError):
        ChunkExecutor(substeps=0)
    with pytest.raises(ValueError, match="observation lead"):
        ChunkExecutor(lead=16)  # inference would have to start before the chunk it follows


def test_rolling_stats_and_rate_meter() -> None:
    s = RollingStats(window=100)
    for v in range(1, 101):
        s.add(v)
    assert s.last == 100 and s.count == 100
    assert s.percentile(50) == pytest.approx(50.5)
    assert s.percentile(99) == pytest.approx(99.01)
    r = RateMeter(window_s=1.0)
    assert r.rate(0.0) == 0.0 and r.age(0.0) is None
    for i in range(31):
        r.tick(10.0 + i / 30)
    assert r.rate(11.0) == pytest.approx(30.0, rel=0.05)
    assert r.age(11.5) == pytest.approx(0.5)
    assert r.rate(20.0) == 0.0


def test_inference_worker_runs_in_order_off_the_caller_thread() -> None:
    results, done = [], threading.Event()
    caller = threading.get_ident()

    def run(payload):
        assert threading.get_ident() != caller
        if payload == "boom":
            raise RuntimeError("model failed")
        time.sleep(0.01)
        return payload * 2

    def on_result(r):
        results.append(r)
        if len(results) == 3:
            done.set()

    w = InferenceWorker(run, on_result)
    t0 = time.monotonic()
    for gen, p in enumerate([1, "boom", 3]):
        w.submit(Job(gen, p))
    assert time.monotonic() - t0 < 0.01  # submit never waits for the model
    assert done.wait(5)
    w.stop()
    assert [r.value for r in results] == [2, None, 6]
    assert [r.generation for r in results] == [0, 1, 2]
    assert isinstance(results[1].error, RuntimeError)
