"""Episode HDF5 schema: write/read round trip, lazy access, atomic writes, schema checks."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from memorywam_train.episodes import (
    CAMERAS,
    SCHEMA_VERSION,
    EpisodeError,
    EpisodeReader,
    EpisodeWriter,
    read_episode,
    write_episode,
)
from memorywam_train.images import ImageDecodeError, decode_raw_image


def _episode(t: int = 5) -> dict:
    rng = np.random.default_rng(0)
    return {
        "images": {c: rng.integers(0, 255, (t, 24, 32, 3), dtype=np.uint8) for c in CAMERAS},
        "state": rng.normal(size=(t, 14)).astype(np.float32),
        "action": rng.normal(size=(t, 14)).astype(np.float32),
        "stamps_ns": np.arange(t, dtype=np.int64) * 100_000_000,
        "attrs": {
            "instruction": "fold",
            "source": "test",
            "control_rate_hz": 10.0,
            "streams": {"head": {"dropped": 1}},
        },
    }


def test_round_trip_and_schema(tmp_path: Path) -> None:
    ep = _episode()
    path = write_episode(tmp_path / "e.hdf5", **ep)
    back = read_episode(path)
    for c in CAMERAS:
        np.testing.assert_array_equal(back.images[c], ep["images"][c])
    np.testing.assert_array_equal(back.state, ep["state"])
    np.testing.assert_array_equal(back.action, ep["action"])
    np.testing.assert_array_equal(back.stamps_ns, ep["stamps_ns"])
    assert back.instruction == "fold" and len(back) == 5
    assert back.attrs["schema_version"] == SCHEMA_VERSION
    assert back.attrs["streams"] == {"head": {"dropped": 1}}  # JSON attrs decoded
    with h5py.File(path) as f:  # the documented layout
        assert f["images/head"].dtype == np.uint8 and f["images/head"].chunks == (1, 24, 32, 3)
        assert f["images/head"].compression == "gzip"
        assert f["state"].dtype == np.float32 and f["stamps_ns"].dtype == np.int64


def test_lazy_reader_frames_and_pickle(tmp_path: Path) -> None:
    ep = _episode(6)
    path = write_episode(tmp_path / "e.hdf5", **ep)
    r = EpisodeReader(path)
    fr = r.frame(3)
    np.testing.assert_array_equal(fr["left_wrist"], ep["images"]["left_wrist"][3])
    np.testing.assert_array_equal(fr["state"], ep["state"][3])
    assert fr["stamp_ns"] == 300_000_000
    np.testing.assert_array_equal(r.images("head", 2, 4), ep["images"]["head"][2:4])
    assert r.image_shape("right_wrist") == (24, 32)
    r2 = pickle.loads(pickle.dumps(r))  # DataLoader workers: handle re-opened lazily
    np.testing.assert_array_equal(r2.frame(-1)["head"], ep["images"]["head"][-1])
    with pytest.raises(IndexError):
        r.frame(6)
    r.close()
    r2.close()


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "e.hdf5"
    with pytest.raises(EpisodeError, match="image size changed"), EpisodeWriter(out, 3) as w:
        w.write_frame("head", 0, np.zeros((8, 8, 3), np.uint8))
        w.write_frame("head", 1, np.zeros((9, 8, 3), np.uint8))
    assert not out.exists() and not list(tmp_path.iterdir())
    with pytest.raises(EpisodeError, match="frames written"), EpisodeWriter(out, 2) as w:
        for c in CAMERAS:
            w.write_frame(c, 0, np.zeros((8, 8, 3), np.uint8))
        w.finish(
            np.zeros((2, 14)),
            np.zeros((2, 14)),
            np.zeros(2, np.int64),
            {"instruction": "a", "source": "s", "control_rate_hz": 10.0},
        )
    assert not list(tmp_path.iterdir())


def test_reader_rejects_non_episode(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "x.hdf5", "w") as f:
        f["state"] = np.zeros((1, 14))
    with pytest.raises(EpisodeError, match="not an episode"):
        EpisodeReader(tmp_path / "x.hdf5")


def test_raw_image_encodings() -> None:
    class Msg:
        def __init__(self, enc: str, data: np.ndarray, ch: int) -> None:
            self.encoding, self.height, self.width = enc, 2, 3
            self.step, self.data = 3 * ch + 2, data

    rgb = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    padded = np.zeros((2, 11), np.uint8)
    padded[:, :9] = rgb[..., ::-1].reshape(2, 9)
    np.testing.assert_array_equal(decode_raw_image(Msg("bgr8", padded.reshape(-1), 3)), rgb)
    with pytest.raises(ImageDecodeError, match="16UC1"):
        decode_raw_image(Msg("16UC1", padded.reshape(-1), 3))
