"""bench/sim_diagnosis.py's measuring pieces: the ridge probe, the Wilson interval, the failure breakdown.

The measurements themselves (probe / open-loop / ideal) need the simulator and a checkpoint and
run as benchmarks (bench/results/sim_diagnosis_*.json); here the arithmetic they report is pinned.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import sim_diagnosis as sd


def test_ridge_probe_reads_a_linear_signal_and_not_noise() -> None:
    # like latents: many features (d >> n) driven by a few factors, the target linear in the factors
    rng = np.random.default_rng(0)
    n, d = 150, 400
    z = rng.normal(size=(n, 4))
    x = z @ rng.normal(size=(4, d)) + rng.normal(scale=0.3, size=(n, d))
    y = np.stack([2.0 * z[:, 0] + 5.0, z[:, 1] - z[:, 2]], axis=1)
    res = sd.ridge_probe(x, y, train=100)
    assert res["test"] == 50
    # held out: far below the mean predictor (~2.0 and ~1.4 here)
    assert all(r < 0.5 for r in res["rmse"]), res
    assert res["mean_predictor_rmse"][0] > 1.5
    noise = sd.ridge_probe(rng.normal(size=(n, d)), y, train=100)
    assert all(r > 0.9 * b for r, b in zip(noise["rmse"], noise["mean_predictor_rmse"])), noise


def test_wilson_interval() -> None:
    lo, hi = sd.wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.161, abs=1e-3)
    lo, hi = sd.wilson(2, 20)
    assert (lo, hi) == pytest.approx((0.0279, 0.301), abs=1e-3)
    lo, hi = sd.wilson(30, 50)
    assert lo < 0.6 < hi and (lo, hi) == pytest.approx((0.462, 0.724), abs=1e-3)


def test_failure_breakdown_counts_stages_refusals_and_stalls(tmp_path: Path) -> None:
    eps = [{"max_reward": 0, "chunks_rejected": 3, "stalls": 0}, {"max_reward": 0, "chunks_rejected": 0, "stalls": 1},
           {"max_reward": 2, "chunks_rejected": 1, "stalls": 0}, {"max_reward": 4, "chunks_rejected": 0, "stalls": 0}]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"per_episode": eps}))
    out = sd.failures(type("A", (), {"results_json": str(path)})())
    rows = {r["stage"]: r for r in out["stages"]}
    first = rows["never touched the cube"]
    counts = (first["episodes"], first["with_refused_chunk"], first["with_stall"], first["refused_chunks"])
    assert counts == (2, 1, 1, 3)
    assert rows["lifted, left gripper never touched it (no hand-over)"]["episodes"] == 1
    assert rows["success"]["episodes"] == 1 and out["episodes"] == 4
    path.write_text(json.dumps({"per_episode": [{"success": True}]}))
    with pytest.raises(SystemExit, match="max_reward"):
        sd.failures(type("A", (), {"results_json": str(path)})())


def test_follow_slope_tells_a_blind_plan_from_one_that_follows() -> None:
    rng = np.random.default_rng(1)
    demo = rng.uniform(0, 20, size=(40, 2))
    assert sd.follow_slope(demo, demo) == pytest.approx([1.0, 1.0])
    assert sd.follow_slope(demo, np.tile([5.0, 45.0], (40, 1))) == pytest.approx([0.0, 0.0], abs=1e-9)
    half = np.stack([0.5 * demo[:, 0] + 3.0, demo[:, 1]], axis=1)  # x shrunk to half, y followed
    assert sd.follow_slope(demo, half) == pytest.approx([0.5, 1.0])


def test_capture_last_block_records_without_changing_the_chunk(tiny_policy) -> None:
    policy = tiny_policy
    k, (h, w) = policy.chunk_size, policy.image_size
    mosaic = np.random.default_rng(0).integers(0, 255, (1, h, w, 3), dtype=np.uint8)

    def chunk() -> np.ndarray:
        policy.reset(policy.instructions[0])
        policy.observe(mosaic, np.zeros(policy.model.config.action.proprio_dim))
        p = policy.committed_prefix
        return policy.act(committed=np.zeros((p, policy.model.config.action.action_dim)) if p else None)

    before = chunk()
    store: dict = {}
    sd._capture_last_block(policy.model.video.blocks, store, "video")
    sd._capture_last_block(policy.model.action.blocks, store, "action")
    try:
        after = chunk()
    finally:  # the fixture's policy is shared: drop the instance wrappers again
        for blocks in (policy.model.video.blocks, policy.model.action.blocks):
            del blocks[-1].finish
    np.testing.assert_array_equal(before, after)
    cfg = policy.model.config
    assert store["video"].shape == (1, cfg.tokens_per_frame + policy.model.rules.num_gists, cfg.video.inner_dim)
    assert store["action"].shape == (1, cfg.action.committed_prefix + k, cfg.action.hidden_dim)


def test_r2_per_chunk_tells_the_mean_from_a_fit_and_skips_missing_chunks() -> None:
    rng = np.random.default_rng(2)
    target = [rng.normal(size=(3 if e % 2 else 2, 12)) for e in range(20)]  # odd episodes have a chunk 2
    assert sd.r2_per_chunk(target, target) == pytest.approx([1.0, 1.0, 1.0])
    means = [np.stack([np.stack([t[i] for t in target if len(t) > i]).mean(0) for i in range(len(e))])
             for e in target]
    assert sd.r2_per_chunk(means, target) == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)
    # half-way to the mean from each episode's own chunk: R^2 = 1 - 0.25 = 0.75
    half = [0.5 * (t + m) for t, m in zip(target, means)]
    assert sd.r2_per_chunk(half, target) == pytest.approx([0.75, 0.75, 0.75])
