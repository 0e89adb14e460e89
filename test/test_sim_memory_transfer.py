"""TransferCube with a blind head (memorywam_ros/sim/memory_transfer.py): blanking, demo alignment, reach metric."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("gym_aloha")

from memorywam_ros.sim.memory_transfer import (
    CHUNK,
    DELAY_CHUNKS,
    MOSAIC_SIZE,
    REACH_THRESHOLD_M,
    Demo,
    MemoryTransferTask,
    PerFrameVAEEncoder,
    check_protocol,
    frame_of_row,
    mosaic_rows,
    num_latent_frames,
    scripted_episode,
)

H, W = MOSAIC_SIZE
TOP = H // 3  # wrist tiles: rows [0, TOP); head tile: rows [TOP, H)


def _red(img: np.ndarray) -> int:
    """Pixels of the red cube."""
    return int(((img[..., 0] > 120) & (img[..., 1] < 60) & (img[..., 2] < 60)).sum())


@pytest.fixture(scope="module")
def task() -> Iterator[MemoryTransferTask]:
    with MemoryTransferTask() as t:
        yield t


@pytest.fixture(scope="module")
def demo(task: MemoryTransferTask) -> Demo:
    return scripted_episode(task, seed=0)


def test_row_to_frame_alignment_matches_precompute() -> None:
    precompute = pytest.importorskip("memorywam_train.precompute")
    assert [frame_of_row(t) for t in (0, 1, 4, 16, 17, 32, 33)] == [0, 1, 1, 1, 2, 2, 3]
    for j in range(8):
        assert mosaic_rows(j) == precompute.mosaic_rows(j, CHUNK)
        assert all(frame_of_row(r) == j for r in mosaic_rows(j))
    for rows in (1, 16, 17, 125):
        assert num_latent_frames(rows) == precompute.num_latent_frames(rows, CHUNK)
    check_protocol(1, 2, n_init=1, n_recent=2)
    with pytest.raises(ValueError):
        check_protocol(1, 1, n_init=1, n_recent=2)  # frame 0 still in the window when the arm moves
    with pytest.raises(ValueError):
        check_protocol(2, 2, n_init=2, n_recent=2)  # frame 1 is live and still in the window at chunk 2


@pytest.mark.parametrize("anchors", [1, 2])
def test_head_black_exactly_from_the_frame_after_the_anchors(task: MemoryTransferTask, anchors: int) -> None:
    task.anchor_frames = anchors
    try:
        first = task.reset(seed=3)
        hold = np.tile(task.sim.home, (CHUNK, 1))
        frames = [first[None]] + [task.run_chunk(hold) for _ in range(3)]
    finally:
        task.anchor_frames = 1
    for j, mosaics in enumerate(frames):
        assert mosaics.shape == (1 if j == 0 else 4, H, W, 3)
        heads, wrists = mosaics[:, TOP:], mosaics[:, :TOP]
        if j < anchors:
            assert all(h.max() > 0 for h in heads), j
        else:
            assert heads.max() == 0, j
        assert all(w[:, : W // 2].max() > 0 and w[:, W // 2 :].max() > 0 for w in wrists), j
    assert _red(frames[0][0, TOP:]) > 0  # the cube is on the live head tile


def test_no_blank_control_keeps_the_head(task: MemoryTransferTask) -> None:
    task.blank_head = False
    try:
        task.reset(seed=3)
        mosaics = task.run_chunk(np.tile(task.sim.home, (CHUNK, 1)))
    finally:
        task.blank_head = True
    assert all(m[TOP:].max() > 0 and _red(m[TOP:]) > 0 for m in mosaics)


def test_demo_sample_layout_and_alignment(task: MemoryTransferTask, demo: Demo) -> None:
    total = DELAY_CHUNKS * CHUNK + 93  # wait + ScriptedTransferCube's 9.3 s at 10 Hz
    n = num_latent_frames(total)
    assert demo.success and n == demo.num_frames == 8
    assert demo.frames[0].shape == (1, H, W, 3) and all(f.shape == (4, H, W, 3) for f in demo.frames[1:])
    assert demo.clip().shape == (1 + 4 * (n - 1), H, W, 3)
    assert demo.proprio.shape == (n, 14) and demo.actions.shape == (n, CHUNK, 14)
    assert demo.action_mask.shape == (n, CHUNK) and int(demo.action_mask.sum()) == total
    assert demo.action_mask[:-1].all() and not demo.action_mask[-1, total - CHUNK * (n - 1):].any()
    # past the end the last command is repeated (a hold), like precompute.action_chunks
    np.testing.assert_array_equal(demo.actions[-1, ~demo.action_mask[-1]],
                                  np.broadcast_to(demo.actions[demo.action_mask][-1], (CHUNK * n - total, 14)))
    assert demo.head_visible == [True] + [False] * (n - 1)
    assert demo.frames[0][0, TOP:].max() > 0 and all(f[:, TOP:].max() == 0 for f in demo.frames[1:])
    # the wait: chunks 0 .. DELAY_CHUNKS-1 hold the home pose, the reach starts in chunk DELAY_CHUNKS
    home = task.sim.home.astype(np.float32)
    assert np.allclose(demo.actions[:DELAY_CHUNKS], home, atol=1e-6)
    assert np.allclose(demo.proprio[: DELAY_CHUNKS + 1], home, atol=2e-2)
    assert np.abs(demo.actions[DELAY_CHUNKS, -1] - home).max() > 0.05

    # proprio j = joint state at row 16j; mosaics of frame j = observations at mosaic_rows(j): replay the
    # same seed (deterministic physics and rendering) and observe at those rows
    moving = DELAY_CHUNKS + 1  # first frame whose mosaics differ row to row
    wanted = {r: k for k, r in enumerate(mosaic_rows(moving))}
    seen: dict[int, np.ndarray] = {}
    states: dict[int, np.ndarray] = {}

    def on_row(t: int) -> None:  # called after row t's command was executed: the state of row t + 1
        if (t + 1) % CHUNK == 0:
            states[(t + 1) // CHUNK] = task.qpos
        if t + 1 in wanted:
            seen[wanted[t + 1]] = task.observe()

    replay = scripted_episode(task, seed=0, render=False, on_row=on_row)
    np.testing.assert_array_equal(replay.actions, demo.actions)
    for j in range(1, n):
        np.testing.assert_allclose(demo.proprio[j], states[j], atol=1e-6)
    assert len(seen) == 4 and len({m.tobytes() for m in seen.values()}) == 4
    for k, m in seen.items():
        np.testing.assert_array_equal(demo.frames[moving][k], m)


def test_reach_metric_scripted_close_home_far(task: MemoryTransferTask, demo: Demo) -> None:
    assert demo.min_dwell < REACH_THRESHOLD_M and demo.min_reach <= demo.min_dwell
    home = scripted_episode(task, seed=0, render=False, move=False)
    assert home.min_dwell > 0.15 and not home.success and home.max_reward == 0
    blind = scripted_episode(task, seed=2, render=False, blind=True)  # cube far (9.8 cm) from the sampler's centre
    sighted = scripted_episode(task, seed=2, render=False)
    assert sighted.min_dwell < REACH_THRESHOLD_M < blind.min_dwell < home.min_dwell
    assert task.reached == (task.min_dwell < REACH_THRESHOLD_M)


def test_per_frame_encoder_cuts_the_vae_memory() -> None:
    torch = pytest.importorskip("torch")
    from diffusers import AutoencoderKLWan

    from memorywam_ros.runtime.vae import StreamingVAEEncoder, wan22_vae_config

    torch.manual_seed(0)
    vae = AutoencoderKLWan(**wan22_vae_config(tiny=True)).eval()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (1, 96, 64, 3), dtype=np.uint8)] + [
        rng.integers(0, 255, (4, 96, 64, 3), dtype=np.uint8) for _ in range(2)]
    other = [rng.integers(0, 255, (1, 96, 64, 3), dtype=np.uint8), *frames[1:]]  # only frame 0 differs

    def encode(enc, fs):
        enc.reset()
        return torch.stack([enc.encode(f)[:, 0] for f in fs])

    stream, per_frame = StreamingVAEEncoder(vae), PerFrameVAEEncoder(StreamingVAEEncoder(vae))
    a, b = encode(per_frame, frames), encode(per_frame, other)
    assert not torch.equal(a[0], b[0]) and torch.equal(a[1:], b[1:])
    assert not torch.allclose(encode(stream, frames)[1:], encode(stream, other)[1:])  # the streamed VAE remembers
    torch.testing.assert_close(a[0], encode(stream, frames)[0])
    clip = np.concatenate([frames[2][:1], frames[2]])
    torch.testing.assert_close(a[2], stream.encode_clip(clip)[:, 1], rtol=1e-4, atol=1e-4)
    per_frame.reset()
    with pytest.raises(ValueError):
        per_frame.encode(frames[1])  # after reset() the first call takes 1 mosaic


def test_closed_loop_chunks_see_what_the_demo_saw(task: MemoryTransferTask, demo: Demo) -> None:
    """`run_chunk` (evaluation) observes at the same rows as the demonstrations (training): replaying
    the demo's chunks gives its mosaics and joint states bit for bit."""
    np.testing.assert_array_equal(task.reset(seed=0), demo.frames[0][0])
    for j in range(demo.num_frames - 1):
        np.testing.assert_array_equal(task.run_chunk(demo.actions[j]), demo.frames[j + 1], err_msg=f"frame {j + 1}")
        np.testing.assert_allclose(task.qpos, demo.proprio[j + 1], atol=1e-6)
    assert task.run_chunk(demo.actions[-1], observe=False) is None
    assert task.success == demo.success
