"""Latent precompute and the training dataset: the alignment convention (which rows and actions
belong to latent frame j), precompute == the robot's streaming encoder, anchor prepending,
normalisation statistics, padding collate."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from memorywam_ros.runtime.checkpoint import load_checkpoint
from memorywam_ros.runtime.mosaic import compose_mosaic
from memorywam_ros.runtime.normalization import Normalizer
from memorywam_ros.runtime.vae import StreamingVAEEncoder
from memorywam_train.dataset import LatentDataset, collate, window_frames
from memorywam_train.episodes import CAMERAS, read_episode, write_episode
from memorywam_train.precompute import action_chunks, mosaic_rows, num_latent_frames, obs_row, precompute

ROWS = (37, 70)  # 3 latent frames (last chunk: 5 valid steps) and 5 latent frames (last chunk: 6 valid)


def robot_protocol(num_rows: int) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Replay the node's observation protocol on an episode of `num_rows` rows, step by step:
    returns per latent frame the rows of its mosaics, the rows of the commands executed after it,
    and the row where its proprio was measured."""
    row = 0
    mosaics, chunks, proprio = [[0]], [], [0]
    while True:
        executed, observed = [], []
        for k in range(16):  # execute chunk: command k is issued at the current row, then time moves on
            executed.append(row)
            row += 1
            if k in (3, 7, 11, 15):
                observed.append(row)
        chunks.append(executed)
        if observed[-1] >= num_rows:  # the robot would need rows the episode does not have
            return mosaics, chunks, proprio
        mosaics.append(observed)
        proprio.append(observed[-1])


@pytest.mark.parametrize("num_rows", [1, 16, 17, 37, 65, 70])
def test_alignment_matches_robot_protocol(num_rows: int) -> None:
    mosaics, chunks, proprio = robot_protocol(num_rows)
    n = num_latent_frames(num_rows)
    assert n == len(mosaics)
    assert [mosaic_rows(j) for j in range(n)] == mosaics
    assert [obs_row(j) for j in range(n)] == proprio
    action = np.arange(num_rows, dtype=np.float32)[:, None] * np.ones((1, 14), np.float32)
    got, mask = action_chunks(action, n)
    for j in range(n):
        want = np.array(chunks[j])
        assert (mask[j] == (want < num_rows)).all()
        assert (got[j][mask[j], 0] == want[want < num_rows]).all()
        assert (got[j][~mask[j], 0] == num_rows - 1).all()  # padding holds the last command


def _episode(path: Path, rows: int, seed: int, instruction: str) -> None:
    rng = np.random.default_rng(seed)
    images = {
        cam: rng.integers(0, 255, (rows, 40, 50, 3), dtype=np.uint8) for cam in CAMERAS  # compose_mosaic resizes
    }
    t = np.arange(rows)[:, None]
    state = (np.sin(t / 7 + np.arange(14)) + seed).astype(np.float32)
    action = (np.cos(t / 5 + np.arange(14)) * (1 + np.arange(14)) + seed).astype(np.float32)
    attrs = {"instruction": instruction, "source": "test", "control_rate_hz": 10.0}
    write_episode(path, images, state, action, t[:, 0] * 100_000_000, attrs)


@pytest.fixture(scope="module")
def latents(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lat")
    for i, rows in enumerate(ROWS):
        _episode(root / "episodes" / f"ep{i}.hdf5", rows, i, ["stack the cubes", "open the drawer"][i])
    result = precompute(root / "episodes", tiny_checkpoint, root / "latents", random_text_dim=32, text_len=16,
                        progress=False)
    assert len(result.written) == 2 and not result.failed
    return root / "episodes", root / "latents"


def test_precompute_equals_runtime_streaming(latents: tuple[Path, Path], tiny_checkpoint: Path) -> None:
    """The training latents are what the robot's StreamingVAEEncoder produces from the same images
    observed by the protocol, one call per latent frame, bit for bit; the rest of the file follows
    the convention."""
    episodes, out = latents
    encoder = StreamingVAEEncoder(load_checkpoint(tiny_checkpoint).vae)
    for i, rows in enumerate(ROWS):
        ep = read_episode(episodes / f"ep{i}.hdf5")
        saved = load_file(str(out / f"ep{i}.safetensors"))
        mosaics, chunks, proprio = robot_protocol(rows)
        encoder.reset()
        for j, obs in enumerate(mosaics):
            frames = np.stack([compose_mosaic(*(ep.images[c][r] for c in CAMERAS)) for r in obs])
            assert torch.equal(encoder.encode(frames)[:, 0], saved["latents"][j])
        assert saved["latents"].shape == (len(mosaics), 48, 24, 20)
        assert saved["obs_rows"].tolist() == proprio
        assert saved["mosaic_rows"][1:].tolist() == mosaics[1:] and saved["mosaic_rows"][0, 0] == 0
        assert torch.equal(saved["proprio"], torch.from_numpy(ep.state[proprio]))
        for j, rows_j in enumerate(chunks[: len(mosaics)]):
            valid = [r for r in rows_j if r < rows]
            assert saved["action_mask"][j].sum() == len(valid)
            assert torch.equal(saved["actions"][j][: len(valid)], torch.from_numpy(ep.action[valid]))


def test_precompute_resumes_and_writes_instructions(latents: tuple[Path, Path], tiny_checkpoint: Path) -> None:
    episodes, out = latents
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    result = precompute(episodes, tiny_checkpoint, out, random_text_dim=32, text_len=16, progress=False)
    assert not result.written and len(result.skipped) == 2
    assert before == {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    assert not list(out.glob(".*partial"))
    ds = LatentDataset(out)
    assert sorted(ds.instruction_embeddings()) == ["open the drawer", "stack the cubes"]
    assert ds.text("stack the cubes").shape == (16, 32)
    assert (out / "vae" / "config.json").is_file()


def test_window_frames_prepend_anchors() -> None:
    assert window_frames(20, 0, 5, 2) == [0, 1, 2, 3, 4]
    assert window_frames(20, 1, 5, 2) == [0, 1, 2, 3, 4, 5]  # anchor 0 in front, frame 1 is in the window
    assert window_frames(20, 7, 5, 2) == [0, 1, 7, 8, 9, 10, 11]
    assert window_frames(20, 7, 5, 0) == [7, 8, 9, 10, 11]  # policies without anchors
    assert window_frames(9, 7, 5, 2) == [0, 1, 7, 8]  # window clipped at the episode's end


def test_dataset_windows_and_masks(latents: tuple[Path, Path]) -> None:
    _, out = latents
    ds = LatentDataset(out, mode="window", window=2, n_init=2, seed=3)
    starts = set()
    for epoch in range(30):
        ds.set_epoch(epoch)
        sample = ds[1]  # 5 latent frames
        ids = sample["frame_ids"].tolist()
        start = ids[-2]
        starts.add(start)
        assert ids == window_frames(5, start, 2, 2)
        assert sample["video_mask"].tolist() == [b == a + 1 for a, b in itertools.pairwise(ids)]
        assert sample["latents"].shape == (len(ids), 48, 24, 20)
        assert torch.equal(ds[1]["frame_ids"], sample["frame_ids"])  # a function of (seed, epoch, index)
    assert {0, 3} <= starts  # windows at the start (no anchors needed) and late ones (anchors prepended)
    for epoch in range(30):
        ds.set_epoch(epoch)
        sample = ds[1]
        if sample["frame_ids"].tolist() == [0, 1, 3, 4]:
            break
    raw = load_file(str(out / "ep1.safetensors"))
    assert torch.equal(sample["latents"], raw["latents"][[0, 1, 3, 4]])
    assert sample["video_mask"].tolist() == [True, False, True]  # no "predict frame 3 from frame 1"
    whole = LatentDataset(out, mode="episode", max_frames=4)
    assert whole[1]["frame_ids"].tolist() == [0, 1, 2, 3] and whole[0]["frame_ids"].tolist() == [0, 1, 2]
    assert whole[0]["action_mask"].sum(1).tolist() == [16, 16, 5]


def test_normalisation_statistics(latents: tuple[Path, Path]) -> None:
    episodes, out = latents
    ds = LatentDataset(out, mode="episode")
    states, actions = [], []
    for i, rows in enumerate(ROWS):
        ep = read_episode(episodes / f"ep{i}.hdf5")
        n = num_latent_frames(rows)
        states.append(ep.state[[obs_row(j) for j in range(n)]])
        actions.append(ep.action[: min(rows, 16 * n)])  # every action row some chunk executes
    want = Normalizer.from_arrays(np.concatenate(states), np.concatenate(actions))
    np.testing.assert_allclose(ds.normalizer.state.mean, want.state.mean, rtol=1e-6)
    np.testing.assert_allclose(ds.normalizer.action.std, want.action.std, rtol=1e-6)
    assert ds.normalizer.action.count == want.action.count
    sample = ds[0]
    raw = load_file(str(out / "ep0.safetensors"))
    torch.testing.assert_close(sample["actions"], want.normalize_action(raw["actions"]))
    torch.testing.assert_close(sample["proprio"], want.normalize_state(raw["proprio"]))
    # a given normalizer (the resumed run's) is used as is
    assert LatentDataset(out, normalizer=Normalizer.identity(14, 14)).normalizer.state.std[0] == 1.0


def test_collate_pads_after_the_last_frame(latents: tuple[Path, Path]) -> None:
    _, out = latents
    ds = LatentDataset(out, mode="episode")
    batch = collate([ds[0], ds[1]])  # 3 and 5 frames
    assert batch["latents"].shape == (2, 5, 48, 24, 20)
    assert batch["frame_ids"][0].tolist() == [0, 1, 2, 3, 4]  # padding continues the ids: never visible
    assert batch["frame_valid"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert not batch["action_mask"][0, 3:].any() and not batch["video_mask"][0, 2:].any()
    assert batch["text"].shape == (2, 16, 32)


def test_chunk_size_scales_the_observation_protocol() -> None:
    from memorywam_train.precompute import mosaic_rows, num_latent_frames, observation_substeps

    assert observation_substeps(16) == (3, 7, 11, 15)
    assert observation_substeps(4) == (0, 1, 2, 3)
    assert mosaic_rows(2, chunk=4) == [5, 6, 7, 8]
    assert num_latent_frames(9, chunk=4) == 3
    with pytest.raises(ValueError, match="multiple of 4"):
        observation_substeps(6)
    # the node's executor samples on the same sub-steps for any chunk size (one shared definition)
    from memorywam_ros.runtime.chunk_executor import ChunkExecutor

    ex = ChunkExecutor(4)
    ex.restart_episode()
    ex.tick(0.0)
    ex.deliver(np.zeros((4, 1)), np.zeros(1))
    # rows 1..4 = after sub-steps 0..3, sampled on the ticks of rows 1..4 (tick 1 commands row 0)
    assert [i for i in range(1, 6) if ex.tick(float(i)).sample] == [2, 3, 4, 5]


def test_model_overrides_merge_into_the_preset() -> None:
    from memorywam_train.train import TrainConfig, model_config

    cfg = TrainConfig.load(None, ["memory_policy=no_gist", "model={memory: {n_recent: 2}, action: {chunk_size: 4}}"])
    config = model_config(cfg)
    assert (config.memory.policy, config.memory.n_recent, config.memory.n_init) == ("no_gist", 2, 2)
    assert config.action.chunk_size == 4 and config.video.num_layers == 2
    with pytest.raises(SystemExit, match="invalid model overrides"):
        model_config(TrainConfig.load(None, ["model={memory: {n_recnt: 2}}"]))
