"""memorywam-convert on bags written here with rosbags (mcap and sqlite3), on the real rosbag2
talker bags in ../shared/testdata, and on truncated bags."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from train_bag_helpers import (
    CAM_GREEN,
    MSG_DIR,
    REPO,
    T0_NS,
    BagSpec,
    config_dict,
    red_of,
    write_bag,
)

from memorywam_train.config import ConfigError, config_from_dict, load_config
from memorywam_train.convert import convert_bag, main
from memorywam_train.episodes import EpisodeReader, read_episode

TALKER = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "rosbag2_talker"
if not TALKER.exists():  # a checkout elsewhere: the shared folder next to the repository root
    TALKER = REPO.parent / "shared" / "testdata" / "rosbag2_talker"
# the real talker bags live outside the repository (../shared/testdata): a fresh clone without it skips
needs_talker = pytest.mark.skipif(
    not TALKER.is_dir(), reason=f"real rosbag2 talker bags not found: {TALKER} (the ../shared folder beside the repo)"
)


def _asof(stamps: list[int], g: int, max_age_ns: int) -> int | None:
    """Brute-force reference: index of the latest stamp <= g within max age."""
    best = None
    for i, s in enumerate(stamps):
        if s <= g and (best is None or s >= stamps[best]):
            best = i
    if best is None or g - stamps[best] > max_age_ns:
        return None
    return best


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """One bag per storage plugin, same content, converted once for several tests."""
    root = tmp_path_factory.mktemp("conv")
    # head frames 20-22 (~100 ms: grid point 0.7 s has no fresh head frame) and left-wrist frame 40
    # are dropped; min_episode_rows 5 keeps both pieces around the gap
    spec = BagSpec(duration_s=6.0, drop={"head": [20, 21, 22], "left_wrist": [40]})
    out = {}
    for storage in ("mcap", "sqlite3"):
        truth = write_bag(root / f"bag_{storage}", spec, storage)
        cfg = config_from_dict(config_dict(min_episode_rows=5))
        report = convert_bag(root / f"bag_{storage}", cfg, root / "out")
        out[storage] = (truth, report, cfg)
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_gap_splits_the_episode_and_asof_values(converted: dict, storage: str) -> None:
    """A grid point with a stale stream ends the episode; the next one starts a new episode on the
    same grid (rows exactly 100 ms apart in both), and every value is the brute-force as-of pick."""
    truth, report, cfg = converted[storage]
    assert report.ok, report.error
    head_stamps = sorted(s for s, _ in truth.cams["head"])
    period = 100_000_000
    grid = [head_stamps[0] + k * period for k in range((head_stamps[-1] - head_stamps[0]) // period + 1)]
    ages = {c: int(cfg.cameras[c].max_age_s * 1e9) for c in cfg.cameras}
    kept, dropped = [], dict.fromkeys(("head", "left_wrist", "right_wrist", "state", "action"), 0)
    for k, g in enumerate(grid):
        picks = {c: _asof([s for s, _ in truth.cams[c]], g, ages[c]) for c in truth.cams}
        picks["state"] = _asof(truth.state, g, int(cfg.state.max_age_s * 1e9))
        picks["action"] = _asof(truth.action, g, int(cfg.action.max_age_s * 1e9))
        for key, v in picks.items():
            dropped[key] += v is None
        if all(v is not None for v in picks.values()):
            kept.append((k, g, picks))
    assert [k for k, _, _ in kept] == [k for k in range(60) if k != 7]  # only 0.7 s lacks a head frame

    first, second = report.episodes
    assert (first.path.name, second.path.name) == (f"bag_{storage}_part00.hdf5", f"bag_{storage}_part01.hdf5")
    a, b = read_episode(first.path), read_episode(second.path)
    np.testing.assert_array_equal(a.stamps_ns, T0_NS + np.arange(7) * period)  # 0.0 .. 0.6 s
    np.testing.assert_array_equal(b.stamps_ns, T0_NS + 800_000_000 + np.arange(52) * period)  # 0.8 .. 5.9 s
    assert {k: report.plan.counts[k].dropped for k in dropped} == dropped
    assert report.plan.gaps == 1 and report.plan.short == 0
    assert a.attrs["streams"]["head"]["dropped"] == dropped["head"] == 1
    assert b.attrs["segment"] == {"index": 0, "part": 1, "parts": 2, "first_grid_index": 8}
    assert any("split into 2 pieces at 1 gap" in n for n in report.notes)
    assert a.instruction == "stack the cubes"
    assert a.attrs["control_rate_hz"] == 10.0 and a.attrs["schema_version"] == 1

    rows = [(e, r) for e in (a, b) for r in range(len(e))]
    for (e, row), (_, g, picks) in zip(rows, kept, strict=True):
        assert e.stamps_ns[row] == g
        st = truth.state[picks["state"]]
        want = np.array([j + (st - T0_NS) / 1e9 for j in range(14)], np.float32)
        np.testing.assert_allclose(e.state[row], want, atol=1e-4)
        at = truth.action[picks["action"]]
        np.testing.assert_allclose(e.action[row], [100 + j + (at - T0_NS) / 1e9 for j in range(14)], atol=1e-4)
        # no future leakage: the stamp encoded in the values is never after the grid time
        assert (e.state[row, 0] * 1e9) <= (g - T0_NS) + 1e5
        for cam, (_, frame) in ((c, truth.cams[c][picks[c]]) for c in truth.cams):
            img = e.images[cam][row]
            tol = 6 if cam == "right_wrist" else 0  # JPEG
            assert abs(int(img[32, 40, 0]) - red_of(frame)) <= tol, (cam, row)
            assert abs(int(img[32, 40, 1]) - CAM_GREEN[cam]) <= tol
            assert abs(int(img[32, 40, 2]) - 90) <= tol

    # with the default minimum (17 rows) the 7-row piece is dropped and counted
    rep = convert_bag(first.path.parent.parent / f"bag_{storage}", config_from_dict(config_dict()),
                      first.path.parent.parent / f"default_{storage}")
    assert [(e.path.name, e.frames) for e in rep.episodes] == [(f"bag_{storage}.hdf5", 52)]
    assert (rep.plan.short, rep.plan.short_rows, rep.plan.gaps) == (1, 7, 1)
    assert any("1 piece(s) shorter than min_episode_rows=17 dropped (7 rows)" in n for n in rep.notes)


def test_bgr8_swapped_and_rgb8_kept(converted: dict) -> None:
    _, report, _ = converted["mcap"]
    e = read_episode(report.episodes[0].path)
    for cam in ("head", "left_wrist"):  # rgb8 and bgr8 (with row padding): the corner stays pure red
        assert tuple(e.images[cam][0, 0, 0]) == (255, 0, 0)
        assert e.images[cam].shape[1:] == (64, 80, 3)
    r, _, b = e.images["right_wrist"][0, 4, 4].astype(int)  # JPEG: red-ish, not blue-ish
    assert r > 150 and b < 100


def test_custom_arx_types_from_bag_and_msg_files(tmp_path: Path) -> None:
    truth = write_bag(tmp_path / "arx", BagSpec(arx=True, duration_s=2.0), "mcap")
    cfg = config_from_dict(config_dict(arx=True))
    rep = convert_bag(tmp_path / "arx", cfg, tmp_path / "out")
    assert rep.ok, rep.error
    e = read_episode(rep.episodes[0].path)
    assert len(e) == 20
    # JointControl has no header: action stamps are bag receive times, still never in the future
    for row, g in enumerate(e.stamps_ns):
        i = _asof(truth.action, int(g), int(0.05e9))
        assert i is not None
        np.testing.assert_allclose(
            e.action[row, :7], [100 + j + (truth.action[i] - T0_NS) / 1e9 for j in range(7)], atol=1e-3
        )
        np.testing.assert_allclose(
            e.action[row, 7:], [107 + j + (truth.action[i] - T0_NS) / 1e9 for j in range(7)], atol=1e-3
        )

    # a bag without stored definitions needs the shipped .msg files
    write_bag(tmp_path / "nodef", BagSpec(arx=True, duration_s=2.0, store_definitions=False), "sqlite3")
    bad = convert_bag(tmp_path / "nodef", cfg, tmp_path / "out")
    assert not bad.ok and "--msg" in (bad.error or "")
    good = convert_bag(tmp_path / "nodef", cfg, tmp_path / "out", msg_paths=[MSG_DIR])
    assert good.ok, good.error
    # same seed, same content: identical to the bag that stored its definitions
    np.testing.assert_allclose(read_episode(good.episodes[0].path).state, e.state, atol=1e-6)


@needs_talker
@pytest.mark.parametrize("target", ["mcap", "sqlite3", "mcap/talker.mcap", "sqlite3/talker.db3"])
def test_real_talker_bags_give_no_camera_topics(tmp_path: Path, target: str, capsys: pytest.CaptureFixture) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(config_dict()))
    rc = main([str(TALKER / target), "--out", str(tmp_path / "out"), "--config", str(cfg_file), "--quiet"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "no camera topics" in err and "/topic" in err and "std_msgs/msg/String" in err
    # the whole error on one line, however long the path (rich hard-wraps at 80 columns otherwise)
    assert any(line.startswith(str(TALKER / target)) and "no camera topics" in line for line in err.splitlines())
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@needs_talker
def test_talker_trap_is_read_via_storage_fallback() -> None:
    """Reader(<dir>) yields 0 of the 20 messages here; BagSource must still yield all 20."""
    from memorywam_train.bagio import BagSource

    for sub in ("mcap", "sqlite3"):
        bag = BagSource(TALKER / sub)
        got = [bag.deserialize(raw, "std_msgs/msg/String").data for _, _, raw in bag.messages(["/topic"])]
        assert got[:2] == ["Hello, world! 0", "Hello, world! 1"] and len(got) == 10
        assert any("did not yield" in n for n in bag.notes)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_bag_skipped_others_convert(tmp_path: Path, storage: str, capsys: pytest.CaptureFixture) -> None:
    spec = BagSpec(duration_s=2.0)
    write_bag(tmp_path / "good", spec, storage)
    write_bag(tmp_path / "broken", spec, storage)
    ext = ".mcap" if storage == "mcap" else ".db3"
    (data,) = (tmp_path / "broken").glob(f"*{ext}")
    os.truncate(data, data.stat().st_size // 2)
    single = tmp_path / f"single{ext}"  # the truncated storage file on its own, too
    shutil.copy(data, single)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(config_dict()))
    args = [str(tmp_path / "broken"), str(single), str(tmp_path / "good")]
    rc = main([*args, "--out", str(tmp_path / "out"), "--config", str(cfg_file), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "corrupt or truncated" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.hdf5"]
    assert len(EpisodeReader(tmp_path / "out" / "good.hdf5")) == 20


def test_overwrite_and_single_file_input(tmp_path: Path) -> None:
    write_bag(tmp_path / "b", BagSpec(duration_s=2.0), "mcap")
    (f,) = (tmp_path / "b").glob("*.mcap")
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(config_dict()))
    base = ["--out", str(tmp_path / "out"), "--config", str(cfg_file), "--quiet"]
    assert main([str(f), *base]) == 0  # single .mcap file, no metadata.yaml needed
    out = tmp_path / "out" / "b.hdf5"
    first = out.stat().st_mtime_ns
    assert main([str(f), *base, "--instruction", "other"]) == 1  # exists: refused, untouched
    assert out.stat().st_mtime_ns == first
    assert read_episode(out).instruction == "stack the cubes"
    assert main([str(f), *base, "--instruction", "other", "--overwrite"]) == 0
    assert read_episode(out).instruction == "other"  # CLI instruction wins over the topic
    assert not list((tmp_path / "out").glob(".*partial"))


def test_split_topic_and_missing_instruction(tmp_path: Path) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    write_bag(tmp_path / "b", BagSpec(duration_s=4.0, instruction=None), "sqlite3")
    cfg = config_from_dict(config_dict())
    rep = convert_bag(tmp_path / "b", cfg, tmp_path / "out")
    assert not rep.ok and "no instruction" in (rep.error or "")

    # add a marker topic: rewrite the bag with a /episode_start message at t0 + 1 s
    ts = get_typestore(Stores.ROS2_HUMBLE)
    from memorywam_train.bagio import BagSource

    src = BagSource(tmp_path / "b")
    with Writer(tmp_path / "split", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {t: w.add_connection(t, i.msgtype, typestore=ts) for t, i in src.topics.items()}
        mark = w.add_connection("/episode_start", "std_msgs/msg/Empty", typestore=ts)
        for topic, t, raw in src.messages(list(src.topics)):
            w.write(conns[topic], t, raw)
        w.write(mark, T0_NS + 2_000_000_000, ts.serialize_cdr(ts.types["std_msgs/msg/Empty"](), "std_msgs/msg/Empty"))
    rep = convert_bag(tmp_path / "split", cfg, tmp_path / "out", instruction="x", split_topic="/episode_start")
    assert rep.ok, rep.error
    assert [p.path.name for p in rep.episodes] == ["split_ep000.hdf5", "split_ep001.hdf5"]
    a, b = (read_episode(p.path) for p in rep.episodes)
    assert a.stamps_ns[-1] < T0_NS + 2_000_000_000 <= b.stamps_ns[0]
    assert len(a) + len(b) >= 38


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    d = config_dict()
    d["state"]["sources"][0]["slice"] = [3, 1]
    d["state"]["sources"][0].pop("names")
    with pytest.raises(ConfigError, match=r"state\.sources\[0\]\.slice"):
        config_from_dict(d)
    d = config_dict()
    d["cameras"]["head"]["max_age"] = 0.1
    with pytest.raises(ConfigError, match=r"cameras\.head\.max_age: unknown key"):
        config_from_dict(d)
    d = config_dict()
    del d["cameras"]["right_wrist"]
    with pytest.raises(ConfigError, match=r"cameras\.right_wrist: required"):
        config_from_dict(d)
    # the shipped configs load
    for name in ("record_topics.yaml", "record_topics_sim.yaml"):
        cfg = load_config(REPO / "config" / name)
        assert cfg.control_rate_hz == 10 and len(cfg.cameras) == 3
    qos = yaml.safe_load((REPO / "config" / "record_qos_overrides.yaml").read_text())
    cams = [c.topic for c in load_config(REPO / "config" / "record_topics.yaml").cameras.values()]
    assert all(qos[t]["reliability"] == "best_effort" for t in cams)


def _pairs_same_time(e, truth, cfg) -> None:
    """Every row's frames were taken at most max_age before the row time, and never after it (true
    capture times, not the possibly wrong header stamps); the state was measured then too."""
    for row, g in enumerate(e.stamps_ns.tolist()):
        for cam in truth.cams:
            frame = next(k for k, t in truth.true_ns[cam].items() if red_of(k) == e.images[cam][row, 32, 40, 0]
                         and abs(t - g) < 2e9) if cam != "right_wrist" else None
            if frame is not None:
                assert 0 <= g - truth.true_ns[cam][frame] <= cfg.cameras[cam].max_age_s * 1e9, (cam, row)
        measured = T0_NS + int(round(float(e.state[row, 0]) * 1e9, -5))  # joint 0 encodes its stamp
        assert -1e5 <= g - measured <= cfg.state.max_age_s * 1e9 + 1e5, row


def test_repeated_stamps_keep_the_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    """A head frame carrying its predecessor's stamp and a JointState stored twice with other values:
    the first message of each stamp is used, the rest counted and warned about."""
    repeats = [3 * m + 1 for m in range(2, 20, 2)]  # frame 3m+1 (taken ~33 ms after grid point m/10 s)
    dups = list(range(12, 300, 10))  # the state messages right at the grid points, stored twice
    truth = write_bag(tmp_path / "b", BagSpec(duration_s=3.0, repeat_stamp={"head": repeats},
                                              duplicate_state=dups), "mcap")
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(config_dict()))
    monkeypatch.setenv("COLUMNS", "400")
    assert main([str(tmp_path / "b"), "--out", str(tmp_path / "out"), "--config", str(cfg_file), "--quiet"]) == 0
    err = capsys.readouterr().err
    cfg = config_from_dict(config_dict())
    e = read_episode(tmp_path / "out" / "b.hdf5")
    assert len(e) == 30
    used = {int(x) for x in e.images["head"][:, 32, 40, 0]}
    assert not used & {red_of(k) for k in repeats}  # a frame with a stale stamp is never used
    assert (e.state < 40).all()  # never the +50 twin
    _pairs_same_time(e, truth, cfg)
    counts = e.attrs["streams"]
    assert counts["head"]["repeated"] == len(repeats) and counts["head"]["conflicting"] == 0
    assert counts["state"]["repeated"] == counts["state"]["conflicting"] == len(dups)
    assert f"head (/cam_high/camera/color/image_raw): {len(repeats)} message(s) repeat an earlier stamp" in err
    assert f"{len(dups)} of them with DIFFERENT values" in err
    caption = " ".join(err.split())  # the table caption wraps
    assert f"{len(repeats) + len(dups)} repeated stamps ({len(dups)} with conflicting values)" in caption


@pytest.mark.parametrize(
    ("duration", "frame", "back_s", "names"),
    [
        (7.0, 150, 4.0, [("b_ep000.hdf5", 50)]),  # head stamps jump back 4 s at 5 s: nothing after overlaps
        (6.0, 60, 1.0, [("b_ep000.hdf5", 20)]),  # back 1 s at 2 s: 3 s overlap the others, clocks disagree
    ],
)
def test_backward_head_stamps_never_pair_different_times(
    tmp_path: Path, duration: float, frame: int, back_s: float, names: list
) -> None:
    spec = BagSpec(duration_s=duration, shift_stamps={"head": (frame, -int(back_s * 1e9))})
    truth = write_bag(tmp_path / "b", spec, "mcap")
    cfg = config_from_dict(config_dict())
    rep = convert_bag(tmp_path / "b", cfg, tmp_path / "out")
    assert rep.ok, rep.error
    assert [(e.path.name, e.frames) for e in rep.episodes] == names
    e = read_episode(rep.episodes[0].path)
    np.testing.assert_array_equal(e.stamps_ns, T0_NS + np.arange(names[0][1]) * 100_000_000)
    _pairs_same_time(e, truth, cfg)
    assert rep.plan.counts["head"].backward == 1 and rep.plan.segments == 2
    (jump,) = [float(m.group(1)) for n in rep.notes if (m := re.search(r"stamps jump back (\d+\.\d+) s", n))]
    assert abs(jump - (back_s - 1 / 30)) < 0.01  # from the last frame before the jump
    if back_s < 2:  # the part after the jump overlaps in stamps: only the clock check keeps it apart
        assert rep.plan.clock > 0 and any("clocks disagree" in n for n in rep.notes)


def test_one_outlier_stamp_is_dropped_not_split(tmp_path: Path) -> None:
    write_bag(tmp_path / "b", BagSpec(duration_s=3.0, outlier_stamps={"head": {40: 0}}), "mcap")
    rep = convert_bag(tmp_path / "b", config_from_dict(config_dict()), tmp_path / "out")
    assert [(e.path.name, e.frames) for e in rep.episodes] == [("b.hdf5", 30)]
    assert rep.plan.counts["head"].backward == 1 and rep.plan.segments == 1
    assert any("out of line with their neighbours" in n for n in rep.notes)


def test_errors_name_the_bag_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture) -> None:
    write_bag(tmp_path / "nometa", BagSpec(duration_s=1.0), "mcap")
    (tmp_path / "nometa" / "metadata.yaml").unlink()
    (tmp_path / "empty").mkdir()
    write_bag(tmp_path / "short", BagSpec(duration_s=2.0), "mcap")
    (data,) = (tmp_path / "short").glob("*.mcap")
    os.truncate(data, data.stat().st_size // 2)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(config_dict()))
    monkeypatch.setenv("COLUMNS", "400")
    bags = [tmp_path / n for n in ("nometa", "empty", "short")]
    assert main([*map(str, bags), "--out", str(tmp_path / "out"), "--config", str(cfg_file), "--quiet"]) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if str(tmp_path) in ln]
    for bag in bags:
        (line,) = [ln for ln in lines if ln.startswith(f"{bag}:")]
        assert line.count(f"{bag}:") == 1 and line.count(f"{bag} ") == 0, line
    text = "\n".join(lines)
    assert "no metadata.yaml next to" in text and "ros2 bag reindex" in text and "corrupt or truncated?" not in \
        next(ln for ln in lines if ln.startswith(f"{bags[0]}:"))
    assert f"{bags[1]}: not a rosbag2 bag: no metadata.yaml and no .mcap/.db3 storage file" in text
