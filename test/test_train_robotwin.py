"""memorywam-import-robotwin on a RoboTwin/RMBench-layout HDF5 made here (JPEG bytes via PIL)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from memorywam_train.episodes import read_episode
from memorywam_train.robotwin import frame_indices, main

KEYS = {"head": "head_camera", "left_wrist": "left_camera", "right_wrist": "right_camera"}
GREEN = {"head_camera": 30, "left_camera": 130, "right_camera": 230}


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def make_robotwin(path: Path, t: int = 12) -> np.ndarray:
    """RMBench layout: observation/<cam>/rgb (T,) S<maxlen> JPEG bytes, joint_action/vector (T, 14)."""
    vector = np.arange(t)[:, None] + np.arange(14)[None, :] / 100.0
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key in KEYS.values():
            frames = []
            for i in range(t):
                rgb = np.zeros((48, 64, 3), np.uint8)
                rgb[..., 0], rgb[..., 1], rgb[..., 2] = (i * 20) % 250, GREEN[key], 60
                frames.append(_jpeg(rgb))
            f.create_dataset(f"observation/{key}/rgb", data=np.array(frames, dtype=f"S{max(map(len, frames))}"))
        f["joint_action/vector"] = vector
        f["joint_action/left_arm"] = vector[:, :6]
    return vector


def test_import_keeps_rgb_and_next_frame_action(tmp_path: Path) -> None:
    src = tmp_path / "task" / "demo_clean" / "data" / "episode0.hdf5"
    vector = make_robotwin(src)
    (tmp_path / "task" / "demo_clean" / "instructions").mkdir()
    (tmp_path / "task" / "demo_clean" / "instructions" / "episode0.json").write_text(
        json.dumps({"seen": ["Put the block back.", "other"], "unseen": ["x"]})
    )
    assert main([str(src), "--out", str(tmp_path / "out")]) == 0
    e = read_episode(tmp_path / "out" / "episode0.hdf5")
    assert len(e) == 11 and e.instruction == "Put the block back."
    np.testing.assert_allclose(e.state, vector[:-1])
    np.testing.assert_allclose(e.action, vector[1:])  # action[t] = vector[t+1]
    for cam, key in KEYS.items():
        px = e.images[cam][5, 24, 32].astype(int)  # decoded JPEG is RGB already: no swap
        assert abs(px[0] - 100) <= 4 and abs(px[1] - GREEN[key]) <= 4 and abs(px[2] - 60) <= 4
    assert e.attrs["control_rate_hz"] == 10.0
    assert main([str(src), "--out", str(tmp_path / "out"), "--instruction", "y"]) == 1  # no overwrite
    assert main([str(src), "--out", str(tmp_path / "out"), "--instruction", "y", "--overwrite"]) == 0
    assert read_episode(tmp_path / "out" / "episode0.hdf5").instruction == "y"


def test_resample_to_10hz_and_errors(tmp_path: Path) -> None:
    src = tmp_path / "ep.hdf5"
    vector = make_robotwin(src, t=20)  # 20 frames at 20 Hz -> grid 0..0.95 s -> 10 points
    idx = frame_indices(20, 20.0)
    np.testing.assert_array_equal(idx, np.arange(0, 20, 2))
    assert main([str(src), "--out", str(tmp_path / "o"), "--instruction", "a", "--source-rate-hz", "20"]) == 0
    e = read_episode(tmp_path / "o" / "ep.hdf5")
    np.testing.assert_allclose(e.state, vector[idx[:-1]])
    np.testing.assert_allclose(e.action, vector[idx[1:]])
    # a non-RoboTwin file fails, the good one still imports, exit code 1
    bad = tmp_path / "bad.hdf5"
    with h5py.File(bad, "w") as f:
        f["x"] = 1
    assert main([str(bad), str(src), "--out", str(tmp_path / "o2"), "--instruction", "a"]) == 1
    assert [p.name for p in (tmp_path / "o2").iterdir()] == ["ep.hdf5"]
    assert main([str(src), "--out", str(tmp_path / "o3")]) == 1  # no instruction anywhere
