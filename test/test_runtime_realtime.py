"""The observation lead ℓ, one schedule for training and the robot: the rows precompute assigns to
each latent frame (mosaics, proprio, action chunk) are exactly the rows the node's ChunkExecutor
samples and executes, tick by tick, at the episode start, on time, late, and after a stall; the
checkpoint records ℓ and a node whose parameters contradict its manifest refuses it."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from memorywam_ros.runtime.checkpoint import load_checkpoint, manifest_conflicts, manifest_lead
from memorywam_ros.runtime.chunk_executor import ChunkExecutor, observation_substeps
from memorywam_train.precompute import action_chunks, mosaic_rows, num_latent_frames, obs_row

K = 16
LEADS = (0, 1, 3, 5)


@dataclass
class Segment:
    """What one stretch of uninterrupted execution did, in the segment's rows."""

    frames: list[list[int]] = field(default_factory=list)  # sampled rows of each submitted frame
    first: list[bool] = field(default_factory=list)
    chunks: dict[int, list[float]] = field(default_factory=dict)  # chunk index -> executed step values
    hold_ticks: list[int | None] = field(default_factory=list)
    committed: list[list[float] | None] = field(default_factory=list)  # Tick.committed at each submit


class Robot:
    """Drives a ChunkExecutor the way the node does (samples, submits, results taken when the
    executor `needs_chunk`) with a model whose chunk for the segment's frame f is the rows
    Kf .. Kf+K-1 of the segment plus 1000 × segment, returned `latency` ticks after its submit.
    The row of an observation is counted independently: the rows fully executed in the segment."""

    def __init__(self, lead: int, substeps: int = 1, latency: int = 1) -> None:
        self.ex = ChunkExecutor(K, substeps, lead)
        self.substeps, self.latency = substeps, latency
        self.segments: list[Segment] = []
        self._new_segment()
        self.ex.restart_episode()
        self.t = 0

    def _new_segment(self) -> None:
        self.segments.append(Segment())
        self.executed = 0  # targets commanded in this segment
        self.forming: list[int] = []
        self.frame = 0  # segment frame index of the next submitted frame
        self.in_flight: tuple[int, int] | None = None  # (ready tick, frame)
        self.ready: np.ndarray | None = None

    @property
    def seg(self) -> Segment:
        return self.segments[-1]

    def stall(self) -> None:
        self.ex.stall()
        self.in_flight, self.ready = None, None  # the node bumps its generation: results discarded

    def resume(self) -> None:
        self._new_segment()
        self.frame = 1  # the hold chunk is the segment's chunk 0; its observations form frame 1
        self.ex.resume(np.full(2, -1.0))

    def tick(self) -> None:
        if self.in_flight is not None and self.t >= self.in_flight[0]:
            f = self.in_flight[1]
            rows = 1000 * (len(self.segments) - 1) + K * f + np.arange(K, dtype=float)
            self.ready, self.in_flight = rows[:, None] * np.ones((1, 2)), None
        if self.ex.needs_chunk and self.ready is not None:
            self.ex.deliver(self.ready, start_pose=np.zeros(2))
            self.ready = None
        tick = self.ex.tick(float(self.t))
        row = self.executed // self.substeps
        if tick.sample:
            assert self.executed % self.substeps == 0, "observations are taken on a control step's first tick"
            self.forming += [row] * tick.sample
        if tick.submit:
            assert self.in_flight is None and self.ready is None, "one model call at a time"
            self.seg.frames.append(self.forming)
            self.seg.first.append(tick.first)
            self.seg.committed.append(None if tick.committed is None else tick.committed[:, 0].tolist())
            self.in_flight = (self.t + self.latency, self.frame)
            self.frame += 1
            self.forming = [row] * tick.carry
        if tick.chunk_started:
            self.seg.hold_ticks.append(tick.hold_ticks)
        if tick.target is not None:
            c = self.executed // (K * self.substeps)
            if (self.executed + 1) % self.substeps == 0:  # the step's target is reached on its last tick
                self.seg.chunks.setdefault(c, []).append(float(tick.target[0]))
            self.executed += 1
        self.t += 1

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            self.tick()


def _table(lead: int, frames: int, first_frame: int = 0) -> list[list[int]]:
    return [mosaic_rows(j, K, lead) for j in range(first_frame, frames)]


@pytest.mark.parametrize("lead", LEADS)
@pytest.mark.parametrize("substeps", [1, 3])
def test_executor_samples_and_executes_the_precompute_rows(lead: int, substeps: int) -> None:
    """Episode start to latent frame 5 with inference that just meets the deadline (ℓ = 0: one
    tick late, the synchronous protocol): the rows of every frame's mosaics, its proprio (the last
    of them) and its chunk are precompute's, and no chunk with a deadline holds unless ℓ = 0."""
    latency = max(1, lead * substeps)
    robot = Robot(lead, substeps, latency)
    robot.run((6 * K + 20) * substeps)
    seg = robot.seg
    n = len(seg.frames)
    assert n >= 6
    assert seg.frames == _table(lead, n)
    assert [f[-1] for f in seg.frames] == [obs_row(j, K, lead) for j in range(n)]
    assert seg.first == [True] + [False] * (n - 1)
    rows = 6 * K + 20
    action = np.arange(rows, dtype=np.float32)[:, None]
    chunks, _ = action_chunks(action, num_latent_frames(rows, K), K)
    for c, executed in seg.chunks.items():
        if len(executed) == K:
            assert executed == chunks[c, :, 0].tolist()
    # chunk 0 waits for the first inference (no deadline); later ones start on their due tick
    assert seg.hold_ticks[0] is None
    assert seg.hold_ticks[1:] == [0 if lead else 1] * (len(seg.hold_ticks) - 1)


@pytest.mark.parametrize("lead", LEADS)
def test_stall_and_resume_continue_on_the_table(lead: int) -> None:
    """A stall in the middle of chunk 2 drops it and the frame in flight; after the resume a hold
    chunk plays chunk 0 of a new segment whose observations are the table's from frame 1 on (rows
    before the resume repeat the resume's observation), and the model's chunks follow again."""
    robot = Robot(lead, 1, latency=max(1, lead))
    robot.run(2 * K + 6 + 1)  # the episode's first inference takes one tick
    robot.stall()
    robot.run(7)
    assert robot.ex.tick(0.0).target is None and not robot.ex.tick(0.0).sample  # stalled: nothing
    robot.resume()
    robot.run(4 * K + 4)
    before, after = robot.segments
    assert before.frames == _table(lead, len(before.frames))
    n = len(after.frames)
    assert n >= 3 and after.frames == _table(lead, n + 1, first_frame=1)
    assert not any(after.first)
    assert after.chunks[0] == [-1.0] * K  # the hold chunk
    for c in range(1, len(after.chunks)):
        if len(after.chunks[c]) == K:
            assert after.chunks[c] == [1000.0 + K * c + k for k in range(K)]
    assert after.hold_ticks[0] is None and set(after.hold_ticks[1:]) == {0 if lead else 1}


@pytest.mark.parametrize("lead", [1, 3, 5])
@pytest.mark.parametrize("substeps", [1, 3])
def test_committed_commands_are_the_datasets_prefix(lead: int, substeps: int, tmp_path: Path) -> None:
    """What a committed-prefix model is given at the submit of frame j (Tick.committed: the last ℓ
    targets of chunk j-1, which run while chunk j is computed) is what LatentDataset trains frame j
    with: the actions of rows 16j-ℓ .. 16j-1; none at the episode start (the node then passes the
    hold pose, the dataset the row-0 state); after a stall, the hold chunk's targets."""
    import torch
    from safetensors.torch import save_file

    from memorywam_ros.runtime.instructions import InstructionStore
    from memorywam_ros.runtime.normalization import Normalizer
    from memorywam_train.dataset import LatentDataset

    robot = Robot(lead, substeps, latency=max(1, lead * substeps))
    robot.run((5 * K + 8) * substeps)
    seg = robot.seg
    assert seg.committed[0] is None
    for j in range(1, len(seg.frames)):
        assert seg.committed[j] == [float(r) for r in range(K * j - lead, K * j)], j
    # the dataset side, on a latents file whose action of row r is r (state of row 0: -7)
    rows, n = 5 * K + 8, num_latent_frames(5 * K + 8, K)
    chunks, mask = action_chunks(np.arange(rows, dtype=np.float32)[:, None].repeat(2, 1), n, K)
    state = np.full((n, 2), -7.0, dtype=np.float32)
    save_file({"latents": torch.zeros(n, 4, 2, 2), "actions": torch.from_numpy(chunks),
               "action_mask": torch.from_numpy(mask), "proprio": torch.from_numpy(state)},
              str(tmp_path / "ep.safetensors"), metadata={"instruction": "t"})
    (tmp_path / "precompute.json").write_text(json.dumps({"observation_lead": lead, "instruction_encoder": "x"}))
    InstructionStore(tmp_path / "instructions").put(["t"], torch.zeros(1, 2, 4), "x")

    identity = Normalizer.from_arrays(np.array([[-1.0, -1.0], [1.0, 1.0]]), np.array([[-1.0, -1.0], [1.0, 1.0]]))
    ds = LatentDataset(tmp_path, "episode", max_frames=64, n_init=0, normalizer=identity, committed_prefix=lead)
    got = ds[0]["committed"][:, :, 0]  # identity statistics (mean 0, std 1)
    assert got[0].tolist() == [-7.0] * lead
    for j in range(1, len(seg.frames)):
        assert got[j].tolist() == seg.committed[j], j
    with pytest.raises(ValueError, match="observation lead"):
        LatentDataset(tmp_path, "episode", normalizer=identity, committed_prefix=lead + 1)
    # after a stall: the hold chunk (targets -1) runs while the segment's first model chunk is computed
    robot.stall()
    robot.resume()
    robot.run(2 * K * substeps)
    assert robot.seg.committed[0] == [-1.0] * lead


def test_a_chunk_ready_before_its_deadline_starts_without_a_hold_tick() -> None:
    ex = ChunkExecutor(K, 1, lead=3)
    ex.restart_episode()
    assert ex.tick(0.0).submit
    ex.deliver(np.zeros((K, 1)), np.zeros(1))
    ticks = [ex.tick(float(t)) for t in range(1, K + 1)]  # chunk 0 = ticks 1..16
    assert [i + 1 for i, t in enumerate(ticks) if t.submit] == [K - 3 + 1]  # after sub-step 12
    ex.deliver(np.ones((K, 1)), np.zeros(1))  # 2 ticks after the submit: before the deadline
    t = ex.tick(float(K + 1))
    assert t.chunk_started and t.hold_ticks == 0 and t.gap == 0.0 and float(t.target[0]) == 1.0


def test_an_overrun_holds_then_starts_at_step_zero_and_shifts_the_grid() -> None:
    """Documented choice: a late chunk is held for, then executed from step 0 (no step dropped);
    the hold is counted and the next observations stay on the executed steps."""
    lead, late = 3, 4
    robot = Robot(lead, 1, latency=lead + late)
    robot.run(4 * K + 20)
    seg = robot.seg
    assert seg.hold_ticks[0] is None and set(seg.hold_ticks[1:]) == {late}
    assert seg.frames == _table(lead, len(seg.frames))  # rows = executed steps, whatever the hold
    for c, executed in seg.chunks.items():
        if len(executed) == K:
            assert executed == [K * c + k for k in range(K)]  # from step 0: nothing dropped


def test_lead_validation_and_schedule() -> None:
    assert observation_substeps(16, 0) == (3, 7, 11, 15)
    assert observation_substeps(16, 5) == (-2, 2, 6, 10)
    assert mosaic_rows(1, 16, 5) == [0, 3, 7, 11] and mosaic_rows(1, 16, 9) == [0, 0, 3, 7]
    assert obs_row(2, 16, 3) == 29
    for bad in (-1, 16, 1.5, True):
        with pytest.raises(ValueError, match="observation lead"):
            ChunkExecutor(16, 1, bad)  # type: ignore[arg-type]


# -------------------------------------------------------------------------- precompute + manifest
def test_precompute_writes_the_executor_rows(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """memorywam-precompute --observation-lead 5 on a real episode: the file's mosaic rows, proprio
    and actions are what the executor samples and executes, and the lead reaches precompute.json."""
    from memorywam_train.episodes import CAMERAS, write_episode
    from memorywam_train.precompute import main as precompute_main

    rows, lead = 40, 5
    rng = np.random.default_rng(0)
    images = {cam: rng.integers(0, 255, (rows, 24, 32, 3), dtype=np.uint8) for cam in CAMERAS}
    t = np.arange(rows, dtype=np.float32)[:, None] * np.ones((1, 14), np.float32)
    write_episode(tmp_path / "eps" / "ep.hdf5", images, t + 0.5, t, np.arange(rows) * 100_000_000,
                  {"instruction": "transfer the cube", "source": "test", "control_rate_hz": 10.0})
    assert precompute_main([str(tmp_path / "eps"), "--vae", str(tiny_checkpoint), "--out", str(tmp_path / "lat"),
                            "--random-text-dim", "32", "--text-len", "16", "--observation-lead", str(lead),
                            "--quiet", "--device", "cpu"]) == 0
    saved = load_file(str(tmp_path / "lat" / "ep.safetensors"))
    robot = Robot(lead, 1, latency=lead)
    robot.run(rows + 2)
    n = saved["latents"].shape[0]
    sampled = robot.seg.frames[:n]
    assert [r[r >= 0].tolist() for r in saved["mosaic_rows"]] == sampled
    assert saved["obs_rows"].tolist() == [f[-1] for f in sampled]
    np.testing.assert_array_equal(saved["proprio"][:, 0], np.array([f[-1] for f in sampled]) + 0.5)
    for c, executed in robot.seg.chunks.items():
        if c < n and len(executed) == K:
            assert saved["actions"][c, :, 0].tolist() == executed
    meta = json.loads((tmp_path / "lat" / "precompute.json").read_text())
    assert meta["observation_lead"] == lead and meta["observation_substeps"] == [-2, 2, 6, 10]


def _relabelled(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "memorywam.json").read_text())
    manifest.update(changes)
    (dst / "memorywam.json").write_text(json.dumps(manifest))
    return dst


def test_manifest_records_the_lead_and_old_checkpoints_mean_zero(tiny_checkpoint: Path, tmp_path: Path) -> None:
    manifest = load_checkpoint(tiny_checkpoint).manifest
    assert manifest["observation_lead"] == 0 and manifest["observation_substeps"] == [3, 7, 11, 15]
    old = {k: v for k, v in manifest.items() if k != "observation_lead"}
    assert manifest_lead(old) == 0
    ok = {"control_rate_hz": 10.0, "observation_lead": 0, "cameras": ["head", "left_wrist", "right_wrist"],
          "action_dim": 14, "chunk_size": 16}
    assert manifest_conflicts(old, ok) == []
    bad = manifest_conflicts(manifest, dict(ok, control_rate_hz=20.0, observation_lead=3))
    assert bad == ["control_rate_hz is 20.0 here, the checkpoint's is 10.0",
                   "observation_lead is 3 here, the checkpoint's is 0"]
    # a manifest whose schedule does not match its own lead is refused at load
    broken = _relabelled(tiny_checkpoint, tmp_path / "broken", observation_lead=3)
    with pytest.raises(Exception, match="observation_substeps"):
        load_checkpoint(broken)
