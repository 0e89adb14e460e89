"""memorywam-import-lerobot / memorywam-export-lerobot on LeRobot datasets written here from the
published v2.1 and v3.0 layouts (test/lerobot_helpers.py, PyArrow + PyAV), on bad input, and a
round trip rosbag2 -> episodes -> LeRobot -> episodes.

LeRobot's own writer and loader are checked outside CI by scripts/lerobot_loader_check.py (the
`lerobot` package cannot be installed beside our torch; README "LeRobot datasets")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from lerobot_helpers import ALOHA_CAMS, Spec, frame_rgb, red_of, state_of, write_v21, write_v30
from train_bag_helpers import BagSpec, config_dict, write_bag

from memorywam_train.config import ConfigError, config_from_dict
from memorywam_train.convert import convert_bag
from memorywam_train.episodes import CAMERAS, read_episode, write_episode
from memorywam_train.lerobot_export import export_episodes
from memorywam_train.lerobot_export import main as export_main
from memorywam_train.lerobot_import import CONFIG_DIR, load_mapping, mapping_from_dict
from memorywam_train.lerobot_import import main as import_main
from memorywam_train.precompute import check_grid

WRITERS = {"v2.1": write_v21, "v3.0": write_v30}
# our camera -> index of the ALOHA camera feeding it in config/lerobot_aloha.yaml (green = 40 + 60 k)
ALOHA_INDEX = {"head": 0, "left_wrist": 1, "right_wrist": 2}
OURS = str(CONFIG_DIR / "lerobot_memorywam.yaml")


def _nothing_written(out: Path) -> bool:
    return not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("fps", [30, 50])
@pytest.mark.parametrize("version", ["v2.1", "v3.0"])
def test_import_resamples_to_10hz_with_the_right_frames(tmp_path: Path, version: str, fps: int) -> None:
    spec = Spec(fps=fps, lengths=(fps + 1, fps // 2 + 1))  # 11 and 6 rows: short videos, cheap to encode
    root = WRITERS[version](tmp_path / "aloha_ds", spec)
    assert import_main([str(root), "--out", str(tmp_path / "out"), "--min-episode-rows", "1"]) == 0
    files = sorted((tmp_path / "out").iterdir())
    assert [f.name for f in files] == ["aloha_ds_ep000000.hdf5", "aloha_ds_ep000001.hdf5"]
    step = fps // 10
    for e, f in enumerate(files):
        ep = read_episode(f)
        picked = np.arange(0, spec.lengths[e], step)  # every 3rd (30 Hz) / 5th (50 Hz) frame
        assert len(ep) == picked.size
        np.testing.assert_array_equal(ep.stamps_ns, np.arange(picked.size) * 100_000_000)
        np.testing.assert_array_equal(ep.state, state_of(e, picked))  # exact: float32 end to end
        np.testing.assert_array_equal(ep.action, state_of(e, picked) + np.float32(0.5))
        assert ep.instruction == spec.tasks[e]
        assert ep.attrs["control_rate_hz"] == 10.0 and ep.attrs["created_by"] == "memorywam-import-lerobot"
        assert ep.attrs["streams"]["lerobot"]["frame_indices"] == picked.tolist()
        assert all(ep.attrs["streams"][s]["dropped"] == 0 for s in CAMERAS)
        for cam, k in ALOHA_INDEX.items():
            px = ep.images[cam][:, 32, 32].astype(int)
            np.testing.assert_allclose(px[:, 0], [red_of(e, i) for i in picked], atol=4)  # the right frame
            np.testing.assert_allclose(px[:, 1], 40 + 60 * k, atol=4)  # the right camera


def test_gaps_split_episodes_and_are_counted_per_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 30 Hz, frames 4-7 (0.133-0.233 s) missing: at grid time 0.2 s the latest frame is frame 3
    # (0.1 s, 100 ms old): too old for state (max age 50 ms), fresh enough for cameras/action (100 ms).
    # The gap splits the 3 s episode (as memorywam-convert does): grid 0-0.1 s and 0.3-3.0 s.
    spec = Spec(fps=30, lengths=(91,), drop_frames={0: [4, 5, 6, 7]}, tasks=("t",))
    root = write_v30(tmp_path / "ds", spec)
    assert import_main([str(root), "--out", str(tmp_path / "out"), "--min-episode-rows", "2"]) == 0
    assert "split into 2 pieces at 1 gap" in capsys.readouterr().err
    files = sorted((tmp_path / "out").iterdir())
    assert [f.name for f in files] == ["ds_ep000000_part00.hdf5", "ds_ep000000_part01.hdf5"]
    pieces = ([0, 3], list(range(9, 91, 3)))  # dataset frames of the rows: 2 and 28 rows
    for f, kept, first in zip(files, pieces, (0, 3)):
        ep = read_episode(f)
        # grid times of the kept rows: exactly 100 ms apart, so precompute takes them as they are
        np.testing.assert_array_equal(ep.stamps_ns, [round(i / 30 * 10) * 100_000_000 for i in kept])
        check_grid(ep.stamps_ns, 10.0, f)
        np.testing.assert_array_equal(ep.state[:, 0], [float(i) for i in kept])
        np.testing.assert_allclose(ep.images["head"][:, 0, 0, 0].astype(int), [red_of(0, i) for i in kept], atol=4)
        streams = ep.attrs["streams"]
        assert streams["state"]["dropped"] == 1 and streams["action"]["dropped"] == 0
        assert all(streams[c]["dropped"] == 0 for c in CAMERAS)
        assert ep.attrs["segment"] == {"index": 0, "part": files.index(f), "parts": 2, "first_grid_index": first}
    # the default min_episode_rows (17): the 2-row piece is dropped and counted, the rest is one file
    assert import_main([str(root), "--out", str(tmp_path / "out17")]) == 0
    err = capsys.readouterr().err
    assert "1 piece(s) shorter than min_episode_rows=17 dropped (2 rows)" in err
    assert [f.name for f in (tmp_path / "out17").iterdir()] == ["ds_ep000000.hdf5"]
    np.testing.assert_array_equal(read_episode(tmp_path / "out17/ds_ep000000.hdf5").state[:, 0], pieces[1])
    # --overwrite replaces an episode's old parts instead of leaving them beside the new file
    assert import_main([str(root), "--out", str(tmp_path / "out"), "--overwrite"]) == 0
    assert [f.name for f in (tmp_path / "out").iterdir()] == ["ds_ep000000.hdf5"]
    # every piece too short: one clear error, nothing written
    assert import_main([str(root), "--out", str(tmp_path / "out99"), "--min-episode-rows", "99"]) == 1
    assert "every piece is shorter than min_episode_rows=99" in capsys.readouterr().err
    assert _nothing_written(tmp_path / "out99")


def _bad_mapping(tmp_path: Path, **over: object) -> str:
    d = {
        "cameras": {c: f"observation.images.{a}" for c, a in zip(CAMERAS, ALOHA_CAMS)},
        "state": {"key": "observation.state"},
        "action": {"key": "action"},
    }
    d.update(over)
    path = tmp_path / "mapping.yaml"
    path.write_text(json.dumps(d))
    return str(path)


def _truncate(path: Path, keep: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing video", "video missing"),
        ("unknown key", "not in the dataset"),
        ("state too narrow", "is 12 wide"),
        ("rows narrower than info.json", "info.json says width 14"),
        ("damaged parquet", "damaged parquet"),
        ("damaged parquet pages", "episode_000001.parquet: damaged parquet"),
        ("truncated mp4", "damaged video"),
        ("video shorter than its episode", "no frame at"),
        ("video missing a frame", "no frame at 0.2000 s"),
        ("no instruction anywhere", "no task text"),
    ],
)
def test_bad_input_is_one_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, message: str
) -> None:
    spec = Spec(fps=30, lengths=(31, 16), state_width=12 if damage == "state too narrow" else 14)
    # v2.1 where the damage is in one episode's own file: episode 0 is fine and converts first,
    # so these also check that a late failure leaves nothing behind
    per_episode = damage in (
        "video shorter than its episode", "video missing a frame", "damaged parquet", "damaged parquet pages"
    )
    root = (write_v21 if per_episode else write_v30)(tmp_path / "ds", spec)
    args = [str(root), "--out", str(tmp_path / "out"), "--min-episode-rows", "1"]
    videos = sorted(root.glob("videos/**/*.mp4"))
    if damage == "missing video":
        videos[0].unlink()
    elif damage == "unknown key":
        args += [
            "--mapping",
            _bad_mapping(
                tmp_path,
                cameras={
                    "head": "observation.images.nope",
                    "left_wrist": "observation.images.cam_high",
                    "right_wrist": "observation.images.cam_high",
                },
            ),
        ]
    elif damage == "state too narrow":
        args += ["--mapping", _bad_mapping(tmp_path)]
    elif damage == "rows narrower than info.json":
        info = json.loads((root / "meta/info.json").read_text())
        shutil.rmtree(root)
        write_v30(root, Spec(fps=30, lengths=(31, 16), state_width=12))
        (root / "meta/info.json").write_text(json.dumps(info))  # still says 14
        args += ["--mapping", _bad_mapping(tmp_path)]
    elif damage == "damaged parquet":
        _truncate(root / "data/chunk-000/episode_000001.parquet", 0.5)
    elif damage == "damaged parquet pages":  # footer intact (the schema reads), data pages garbled
        path = root / "data/chunk-000/episode_000001.parquet"
        data = bytearray(path.read_bytes())
        data[8 : len(data) // 2] = bytes(b ^ 0x5A for b in data[8 : len(data) // 2])
        path.write_bytes(bytes(data))
    elif damage == "truncated mp4":
        _truncate(root / "videos/observation.images.cam_left_wrist/chunk-000/file-000.mp4", 0.6)
    elif damage == "video shorter than its episode":  # episode 1's video cut to its first 9 frames
        key = "observation.images.cam_high"
        short = Spec(fps=30, lengths=(31, 9))
        write_v21(tmp_path / "short", short)
        shutil.copy(
            tmp_path / f"short/videos/chunk-000/{key}/episode_000001.mp4",
            root / f"videos/chunk-000/{key}/episode_000001.mp4",
        )
    elif damage == "video missing a frame":  # episode 1's frame 6 (0.2 s) not in its video, its row still there
        key = "observation.images.cam_high"
        write_v21(tmp_path / "holey", Spec(fps=30, lengths=(31, 16), drop_frames={1: [6]}))
        shutil.copy(
            tmp_path / f"holey/videos/chunk-000/{key}/episode_000001.mp4",
            root / f"videos/chunk-000/{key}/episode_000001.mp4",
        )
    elif damage == "no instruction anywhere":
        info = json.loads((root / "meta/info.json").read_text())
        rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
        for r in rows:
            r["tasks"] = []
        import pyarrow as pa

        pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
        tasks = pq.read_table(root / "meta/tasks.parquet")
        pq.write_table(tasks.slice(0, 0), root / "meta/tasks.parquet")
        assert info["total_tasks"] == 2
    assert import_main(args) == 1
    raw = capsys.readouterr().err
    assert len(raw.strip().splitlines()) == 1, raw  # one line, also when stderr is not a terminal
    err = " ".join(raw.split())
    assert message in err and "nothing written" in err, err
    assert not (tmp_path / "out").exists()  # not even an empty folder


def test_mapping_validation_and_shipped_mappings() -> None:
    for name in ("lerobot_aloha.yaml", "lerobot_aloha_sim.yaml", "lerobot_memorywam.yaml"):
        m = load_mapping(CONFIG_DIR / name)
        assert set(m.cameras) == set(CAMERAS) and m.control_rate_hz == 10.0
    base = {"cameras": {c: "k" for c in CAMERAS}}
    with pytest.raises(ConfigError, match=r"state\.names"):
        mapping_from_dict({**base, "state": {"names": "left_waist"}})
    with pytest.raises(ConfigError, match="13 columns selected"):
        mapping_from_dict({**base, "state": {"indices": list(range(13))}})
    with pytest.raises(ConfigError, match="camera_max_age: unknown key"):
        mapping_from_dict({**base, "camera_max_age": 0.1})
    with pytest.raises(ConfigError, match=r"cameras\.right_wrist: required"):
        mapping_from_dict({"cameras": {"head": "a", "left_wrist": "b"}})


def test_mapping_picks_columns_by_name_and_by_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a dataset storing the right arm first: the ALOHA mapping picks by name, so our state still
    # starts with the left arm; an `indices` mapping picks by position
    from lerobot_helpers import ALOHA_MOTORS

    root = write_v30(tmp_path / "ds", Spec(fps=30, lengths=(7,), cams=ALOHA_CAMS[:3], tasks=("t",)))
    info = json.loads((root / "meta/info.json").read_text())
    stored = ALOHA_MOTORS[7:] + ALOHA_MOTORS[:7]  # column j of the parquet holds joint stored[j]
    for key in ("observation.state", "action"):
        info["features"][key]["names"] = {"motors": stored}
    (root / "meta/info.json").write_text(json.dumps(info))
    raw = state_of(0, np.arange(0, 7, 3))  # the parquet rows of the grid points (frames 0, 3, 6)

    assert import_main([str(root), "--out", str(tmp_path / "by_name"), "--min-episode-rows", "1"]) == 0
    ep = read_episode(tmp_path / "by_name/ds_ep000000.hdf5")
    cols = [stored.index(n) for n in ALOHA_MOTORS]  # [7..13, 0..6]
    np.testing.assert_array_equal(ep.state, raw[:, cols])
    np.testing.assert_array_equal(ep.action, raw[:, cols] + np.float32(0.5))

    rev = list(range(13, -1, -1))
    mapping = _bad_mapping(tmp_path, state={"key": "observation.state", "indices": rev},
                           action={"key": "action", "indices": rev})
    args = [str(root), "--out", str(tmp_path / "by_index"), "--min-episode-rows", "1", "--mapping", mapping]
    assert import_main(args) == 0
    ep = read_episode(tmp_path / "by_index/ds_ep000000.hdf5")
    np.testing.assert_array_equal(ep.state, raw[:, rev])
    np.testing.assert_array_equal(ep.action, raw[:, rev] + np.float32(0.5))

    # a name the dataset does not have: one error, nothing written
    info["features"]["observation.state"]["names"] = {"motors": [n.replace("left_waist", "l_waist") for n in stored]}
    (root / "meta/info.json").write_text(json.dumps(info))
    capsys.readouterr()
    assert import_main([str(root), "--out", str(tmp_path / "bad"), "--min-episode-rows", "1"]) == 1
    assert "has no element 'left_waist'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def _check_features(root: Path) -> None:
    """info.json's features describe what the files hold: LeRobot's loader and policies size
    their inputs from `shape`, and time the videos by `fps`."""
    import av

    info = json.loads((root / "meta/info.json").read_text())
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    feats = info["features"]
    videos = {k for k, f in feats.items() if f["dtype"] == "video"}
    assert set(data.column_names) == set(feats) - videos
    for key, f in feats.items():
        if key in videos:
            assert f["info"]["video.fps"] == info["fps"]
            assert [f["info"]["video.height"], f["info"]["video.width"]] == f["shape"][:2]
            for mp4 in sorted((root / "videos" / key).glob("*/*.mp4")):
                with av.open(str(mp4)) as c:
                    st = c.streams.video[0]
                    assert st.average_rate == info["fps"], (mp4, st.average_rate)
                    frame = next(c.decode(st))
                    assert [frame.height, frame.width, 3] == f["shape"], (key, f["shape"], frame.height, frame.width)
        elif f["shape"] != [1]:
            assert data.schema.field(key).type.list_size == f["shape"][0], key
            assert len(f["names"]) == f["shape"][0], key


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("vcodec", ["libsvtav1", "h264"])
def test_round_trip_bag_episodes_lerobot_episodes(tmp_path: Path, vcodec: str) -> None:
    write_bag(tmp_path / "bag", BagSpec(duration_s=2.0))  # >= min_episode_rows (17) rows
    report = convert_bag(tmp_path / "bag", config_from_dict(config_dict()), tmp_path / "eps")
    assert report.ok, report.error
    orig = read_episode(report.episodes[0].path)
    assert export_main([str(tmp_path / "eps"), "--out", str(tmp_path / "lr"), "--vcodec", vcodec]) == 0
    info = json.loads((tmp_path / "lr/meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10 and info["total_frames"] == len(orig)
    assert info["features"]["observation.state"]["shape"] == [14]
    _check_features(tmp_path / "lr")
    tasks = pq.read_table(tmp_path / "lr/meta/tasks.parquet")
    assert tasks["task"].to_pylist() == [orig.instruction] and b"pandas" in tasks.schema.metadata
    data = pq.read_table(tmp_path / "lr/data/chunk-000/file-000.parquet")
    np.testing.assert_array_equal(data["timestamp"].to_numpy(), (np.arange(len(orig)) / 10).astype(np.float32))
    assert import_main([str(tmp_path / "lr"), "--out", str(tmp_path / "back"), "--mapping", OURS]) == 0
    back = read_episode(tmp_path / "back" / "lr_ep000000.hdf5")
    assert len(back) == len(orig) and back.instruction == orig.instruction
    np.testing.assert_array_equal(back.state, orig.state)
    np.testing.assert_array_equal(back.action, orig.action)
    np.testing.assert_array_equal(back.stamps_ns, orig.stamps_ns - orig.stamps_ns[0])
    psnr = {c: min(_psnr(back.images[c][i], orig.images[c][i]) for i in range(len(orig))) for c in CAMERAS}
    print(f"round trip {vcodec} CRF 30 yuv420p, {orig.images['head'].shape[1:3]} px: min PSNR dB {psnr}")
    assert min(psnr.values()) > 30.0  # measured ~40 dB on these frames (README "LeRobot datasets")
    # the pure-red 16x16 corner stays red: no channel swap anywhere on the way
    corner = back.images["head"][:, 4, 4].astype(int)
    assert (corner[:, 0] > 200).all() and (corner[:, 1:] < 60).all()


def _episode(path: Path, t: int, text: str, hw: tuple[int, int] = (32, 48), stamps: np.ndarray | None = None) -> None:
    imgs = {c: np.stack([frame_rgb(k, 0, i)[: hw[0], : hw[1]] for i in range(t)]) for k, c in enumerate(CAMERAS)}
    state = np.arange(t * 14, dtype=np.float32).reshape(t, 14)
    stamps = np.arange(t, dtype=np.int64) * 100_000_000 if stamps is None else stamps
    write_episode(
        path, imgs, state, state + 1, stamps, {"instruction": text, "source": "test", "control_rate_hz": 10.0}
    )


def test_export_splits_gaps_and_shares_tasks(tmp_path: Path) -> None:
    gap = np.array([0, 1, 2, 5, 6, 7, 8], dtype=np.int64) * 100_000_000  # grid points 3, 4 dropped
    _episode(tmp_path / "eps" / "a.hdf5", 7, "stack", stamps=gap)
    _episode(tmp_path / "eps" / "b.hdf5", 4, "stack")
    _episode(tmp_path / "eps" / "c.hdf5", 3, "unstack")
    info = export_episodes(sorted((tmp_path / "eps").iterdir()), tmp_path / "lr", vcodec="h264")
    assert info["total_episodes"] == 4 and info["total_frames"] == 14 and info["total_tasks"] == 2
    _check_features(tmp_path / "lr")  # 32x48 images: height and width told apart
    eps = pq.read_table(tmp_path / "lr/meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["length"] for e in eps] == [3, 4, 4, 3]
    assert [e["tasks"] for e in eps] == [["stack"], ["stack"], ["stack"], ["unstack"]]
    key = "videos/observation.images.head"
    assert [e[f"{key}/from_timestamp"] for e in eps] == [0.0, 0.3, 0.7, 1.1]  # back to back in one MP4
    assert [e["dataset_from_index"] for e in eps] == [0, 3, 7, 11]
    assert import_main(
        [str(tmp_path / "lr"), "--out", str(tmp_path / "back"), "--mapping", OURS, "--min-episode-rows", "1"]
    ) == 0
    back = [read_episode(p) for p in sorted((tmp_path / "back").iterdir())]
    orig = read_episode(tmp_path / "eps" / "a.hdf5")
    np.testing.assert_array_equal(np.concatenate([back[0].state, back[1].state]), orig.state)  # every row kept
    assert [b.instruction for b in back] == ["stack", "stack", "stack", "unstack"]
    stats = json.loads((tmp_path / "lr/meta/stats.json").read_text())
    assert stats["observation.state"]["count"] == [14] and len(stats["observation.images.head"]["mean"]) == 3


@pytest.mark.parametrize("problem", ["image sizes differ", "odd image size", "output exists"])
def test_export_bad_input_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str) -> None:
    hw = (33, 48) if problem == "odd image size" else (32, 48)
    _episode(tmp_path / "eps" / "a.hdf5", 3, "x", hw=hw)
    _episode(tmp_path / "eps" / "b.hdf5", 3, "x", hw=(32, 46) if problem == "image sizes differ" else hw)
    out = tmp_path / "lr"
    if problem == "output exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    assert export_main([str(tmp_path / "eps"), "--out", str(out), "--vcodec", "h264"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert {"image sizes differ": "one shape", "odd image size": "even sizes", "output exists": "exists"}[
        problem
    ] in err
    if problem == "output exists":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()
    assert not list(tmp_path.glob(".lr.partial"))


def test_image_features_stored_in_the_parquet(tmp_path: Path) -> None:
    # dtype "image": PNG bytes in a {bytes, path} struct column (LeRobot's datasets.Image), no MP4
    import io

    import pyarrow as pa
    from PIL import Image

    spec = Spec(fps=30, lengths=(16,), cams=ALOHA_CAMS[1:3], tasks=("t",))
    root = write_v30(tmp_path / "ds", spec)
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    cells = []
    for i in range(data.num_rows):
        buf = io.BytesIO()
        Image.fromarray(frame_rgb(0, 0, i)).save(buf, format="PNG")
        cells.append({"bytes": buf.getvalue(), "path": None})
    key = "observation.images.cam_high"
    pq.write_table(data.append_column(key, pa.array(cells)), root / "data/chunk-000/file-000.parquet")
    info = json.loads((root / "meta/info.json").read_text())
    info["features"][key] = {"dtype": "image", "shape": [64, 64, 3], "names": ["height", "width", "channels"]}
    (root / "meta/info.json").write_text(json.dumps(info))
    assert import_main([str(root), "--out", str(tmp_path / "out"), "--min-episode-rows", "1"]) == 0
    ep = read_episode(tmp_path / "out" / "ds_ep000000.hdf5")
    picked = np.arange(0, 16, 3)
    np.testing.assert_array_equal(ep.images["head"][:, 0, 0], [frame_rgb(0, 0, i)[0, 0] for i in picked])  # lossless


def test_export_failing_mid_write_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the second episode's video cannot be written (a full disk): no dataset, no hidden partial folder
    from memorywam_train import lerobot_export

    _episode(tmp_path / "eps" / "a.hdf5", 3, "x")
    _episode(tmp_path / "eps" / "b.hdf5", 3, "x")
    append, calls = lerobot_export._VideoFile.append, []

    def failing(self: object, frames: np.ndarray) -> object:
        calls.append(1)
        if len(calls) > len(CAMERAS):
            raise OSError(28, "No space left on device")
        return append(self, frames)

    monkeypatch.setattr(lerobot_export._VideoFile, "append", failing)
    assert export_main([str(tmp_path / "eps"), "--out", str(tmp_path / "lr"), "--vcodec", "h264"]) == 1
    raw = capsys.readouterr().err
    assert len(raw.strip().splitlines()) == 1 and "No space left on device" in raw, raw
    assert not (tmp_path / "lr").exists() and not list(tmp_path.glob(".lr*"))
