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
    # dotted keys reach into a section and keep its other entries (config/train_sim.yaml's model block)
    sim = TrainConfig.load(str(Path(__file__).resolve().parents[1] / "config" / "train_sim.yaml"),
                           ["model.action.committed_prefix=3"])
    config = model_config(sim)
    assert config.action.committed_prefix == 3 and config.action.hidden_dim == 64 and config.video.num_layers == 4
    with pytest.raises(SystemExit, match="not a section"):
        TrainConfig.load(None, ["steps=5", "steps.x=1"])
    assert TrainConfig.load(None, ["state_dropout=0.3"]).state_dropout == 0.3
    for bad in ("state_dropout=1.5", "cond_noise_prob=-0.1"):
        with pytest.raises(SystemExit, match="is a probability"):
            TrainConfig.load(None, [bad])


def test_paper_config_trains_long_episodes_in_windows() -> None:
    """config/train_paper.yaml's deliberate data choice (docs/training.md "Data"): mode window, so a
    long episode's every frame is trained (mode episode cuts it at max_frames); the anchors go in
    front of a late window and a sample still fits max_frames latent frames."""
    from memorywam_ros.model import MemoryRules
    from memorywam_train.train import TrainConfig, model_config

    cfg = TrainConfig.load(str(Path(__file__).resolve().parents[1] / "config" / "train_paper.yaml"), [])
    n_anchor = MemoryRules(model_config(cfg).memory).n_anchor
    assert cfg.mode == "window" and n_anchor > 0
    long = 4 * cfg.max_frames
    late = window_frames(long, long - cfg.window, cfg.window, n_anchor)  # the last window of a long episode
    assert late[:n_anchor] == list(range(n_anchor)) and late[-1] == long - 1
    assert len(late) == cfg.max_frames  # the longest sample is exactly max_frames: no frame budget wasted


def test_gap_in_a_real_bag_never_shifts_latent_frames(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """Head frames 20-22 dropped in a rosbag2 bag: grid point 0.7 s has no head frame, so the
    episode starts after the gap (the 7 rows before it are too short) and every latent frame takes
    its mosaics exactly 0.4 s apart: 0.8 s; 1.2/1.6/2.0/2.4 s; 2.8/... (not 0.9/1.3/1.7 s)."""
    from train_bag_helpers import T0_NS, BagSpec, config_dict, red_of, write_bag

    from memorywam_train.config import config_from_dict
    from memorywam_train.convert import convert_bag

    truth = write_bag(tmp_path / "bag", BagSpec(duration_s=6.0, drop={"head": [20, 21, 22]}), "mcap")
    rep = convert_bag(tmp_path / "bag", config_from_dict(config_dict()), tmp_path / "episodes")
    assert [(e.path.name, e.frames) for e in rep.episodes] == [("bag.hdf5", 52)]
    result = precompute(tmp_path / "episodes", tiny_checkpoint, tmp_path / "latents", random_text_dim=32,
                        text_len=16, progress=False)
    assert not result.failed
    saved = load_file(str(tmp_path / "latents" / "bag.safetensors"))
    ep = read_episode(tmp_path / "episodes" / "bag.hdf5")
    head = sorted(truth.cams["head"])
    ms = [[int(ep.stamps_ns[r] - T0_NS) // 1_000_000 for r in rows if r >= 0] for rows in saved["mosaic_rows"].tolist()]
    assert ms == [[800], [1200, 1600, 2000, 2400], [2800, 3200, 3600, 4000], [4400, 4800, 5200, 5600]]
    for rows in saved["mosaic_rows"].tolist():
        for r in (r for r in rows if r >= 0):  # the head frame of each mosaic is the as-of frame of its time
            g = int(ep.stamps_ns[r])
            want = max((s, k) for s, k in head if s <= g)[1]
            assert ep.images["head"][r, 32, 40, 0] == red_of(want)
    assert saved["proprio"].shape[0] == 4 and torch.equal(saved["proprio"], torch.from_numpy(ep.state[[0, 16, 32, 48]]))


def test_precompute_refuses_rows_off_the_grid(tmp_path: Path, tiny_checkpoint: Path) -> None:
    import h5py

    for name, rows in (("ok", 20), ("dropped_row", 20), ("jitter", 20), ("drift", 40)):
        _episode(tmp_path / "episodes" / f"{name}.hdf5", rows, 0, "stack the cubes")
    with h5py.File(tmp_path / "episodes" / "dropped_row.hdf5", "r+") as f:
        f["stamps_ns"][5:] = f["stamps_ns"][5:] + 100_000_000  # row 5 is the grid point after a missing one
    with h5py.File(tmp_path / "episodes" / "jitter.hdf5", "r+") as f:
        f["stamps_ns"][3] = f["stamps_ns"][3] + 9_000_000  # within 10 ms: timestamp jitter is fine
    with h5py.File(tmp_path / "episodes" / "drift.hdf5", "r+") as f:
        f["stamps_ns"][...] = np.arange(40) * 99_000_000  # 1 % fast: off by > 10 ms from row 11 on
    result = precompute(tmp_path / "episodes", tiny_checkpoint, tmp_path / "latents", random_text_dim=32,
                        text_len=16, progress=False)
    assert sorted(p.name for p in result.written) == ["jitter.safetensors", "ok.safetensors"]
    failed = {p.name: err for p, err in result.failed}
    assert sorted(failed) == ["drift.hdf5", "dropped_row.hdf5"]
    assert str(tmp_path / "episodes" / "dropped_row.hdf5") in failed["dropped_row.hdf5"]
    assert "row 5 is stamped 600.0 ms after row 0, expected 500.0 ms" in failed["dropped_row.hdf5"]
    assert "row 11 is stamped 1089.0 ms after row 0, expected 1100.0 ms" in failed["drift.hdf5"]
    assert not (tmp_path / "latents" / "dropped_row.safetensors").exists()


def test_long_episodes_cut_by_max_frames_are_counted(
    latents: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, out = latents  # 3 and 5 latent frames
    with caplog.at_level("WARNING", logger="memorywam_train.dataset"):
        ds = LatentDataset(out, mode="episode", max_frames=3)
    assert ds.cut == (1, 2)
    assert "1 of 2 episodes are longer than max_frames=3 latent frames: 2 of 8 latent frames (25%) are never " \
        "trained" in caplog.text and "the longest episode has 5" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="memorywam_train.dataset"):
        assert LatentDataset(out, mode="episode", max_frames=5).cut == (0, 0)
        assert LatentDataset(out, mode="window", window=3).cut == (0, 0)
    assert not caplog.text


def test_window_mode_frames_and_absolute_rope_ids(latents: tuple[Path, Path]) -> None:
    """Long episodes in window mode: anchors 0, 1 in front of the window, ids absolute all the way to
    the model's RoPE positions, and every frame (the last ones too) equally often in the window."""
    from memorywam_ros.model.rope import video_positions

    _, out = latents
    ds = LatentDataset(out, mode="window", window=2, n_init=2, seed=0)
    raw = load_file(str(out / "ep1.safetensors"))
    seen = np.zeros(5)
    for epoch in range(3000):
        ds.set_epoch(epoch)
        ids = ds.frames(1)
        rng = np.random.default_rng((0, epoch, 1))
        start = min(max(int(rng.integers(-1, 5)), 0), 3)
        assert ids == {0: [0, 1], 1: [0, 1, 2], 2: [0, 1, 2, 3], 3: [0, 1, 3, 4]}[start]  # anchors 0, 1 in front
        seen[start : start + 2] += 1
        if epoch < 20:
            sample = ds[1]
            assert sample["frame_ids"].tolist() == ids
            assert torch.equal(sample["latents"], raw["latents"][ids])
            batch = collate([sample])
            t = video_positions(batch["frame_ids"], 12, 10)[..., 0].reshape(1, len(ids), -1)
            assert (t == torch.tensor(ids, dtype=t.dtype)[None, :, None]).all()  # RoPE time = absolute frame id
    # the first, middle and last frame: window / (n + window - 1); frames 1 and 3 also get clipped starts
    np.testing.assert_allclose(seen / 3000, [2 / 6, 3 / 6, 2 / 6, 3 / 6, 2 / 6], atol=0.03)
