"""LeRobot datasets (v2.1 and v3.0) written here from the published layout with PyArrow and PyAV.

Independent of memorywam_train's exporter on purpose (a fixture written by the code under test
would prove nothing): it follows LeRobot's own writer (`lerobot_dataset.py`: info.json,
meta/tasks, meta/episodes, data parquet, one MP4 per key with episodes back to back in v3.0,
one per episode in v2.1; pandas-style tasks.parquet; `stats/...` columns in v3.0's episodes).

Every frame says which it is: camera `k` of episode `e`, frame `i` is a solid colour with red =
red_of(e, i) and green = 40 + 60 k; state[i, j] = e * 1000 + i + j / 100, action = state + 0.5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ALOHA_CAMS = ("cam_high", "cam_left_wrist", "cam_right_wrist", "cam_low")
ALOHA_MOTORS = [
    f"{side}_{j}"
    for side in ("left", "right")
    for j in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
]
H, W = 64, 64


def red_of(episode: int, frame: int) -> int:
    return (episode * 40 + frame * 9) % 240


def frame_rgb(cam: int, episode: int, frame: int) -> np.ndarray:
    rgb = np.empty((H, W, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = red_of(episode, frame), 40 + 60 * cam, 100
    return rgb


def state_of(episode: int, frames: np.ndarray, width: int = 14) -> np.ndarray:
    return (episode * 1000 + frames[:, None] + np.arange(width)[None, :] / 100).astype(np.float32)


@dataclass
class Spec:
    fps: int = 30
    lengths: tuple[int, ...] = (31, 16)
    cams: tuple[str, ...] = ALOHA_CAMS
    state_width: int = 14
    tasks: tuple[str, ...] = ("insert the peg", "fold the towel")
    vcodec: str = "libx264"
    drop_frames: dict[int, list[int]] = field(default_factory=dict)  # episode -> frame numbers left out

    def key(self, cam: str) -> str:
        return f"observation.images.{cam}"


def _features(spec: Spec) -> dict:
    feats: dict = {
        spec.key(c): {
            "dtype": "video",
            "shape": [H, W, 3],
            "names": ["height", "width", "channels"],
            "info": {"video.fps": spec.fps, "video.codec": spec.vcodec, "video.pix_fmt": "yuv420p"},
        }
        for c in spec.cams
    }
    names = {"motors": ALOHA_MOTORS} if spec.state_width == 14 else None
    feats["observation.state"] = {"dtype": "float32", "shape": [spec.state_width], "names": names}
    feats["action"] = {"dtype": "float32", "shape": [spec.state_width], "names": names}
    for k, d in (
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
    ):
        feats[k] = {"dtype": d, "shape": [1], "names": None}
    return feats


def _frames(spec: Spec, e: int) -> np.ndarray:
    """Frame numbers kept in episode e (recorded timestamps i / fps, some frames left out)."""
    return np.array([i for i in range(spec.lengths[e]) if i not in spec.drop_frames.get(e, [])])


def _rows(spec: Spec, e: int, start: int) -> pa.Table:
    frames = _frames(spec, e)
    n = frames.size
    vec = pa.list_(pa.float32(), spec.state_width)
    st = state_of(e, frames, spec.state_width)
    return pa.table(
        {
            "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(st.reshape(-1)), spec.state_width),
            "action": pa.FixedSizeListArray.from_arrays(pa.array((st + 0.5).reshape(-1)), spec.state_width),
            "timestamp": pa.array((frames / spec.fps).astype(np.float32)),
            "frame_index": pa.array(np.arange(n, dtype=np.int64)),
            "episode_index": pa.array(np.full(n, e, dtype=np.int64)),
            "index": pa.array(np.arange(start, start + n, dtype=np.int64)),
            "task_index": pa.array(np.full(n, e % len(spec.tasks), dtype=np.int64)),
        },
        schema=pa.schema(
            [
                ("observation.state", vec),
                ("action", vec),
                ("timestamp", pa.float32()),
                ("frame_index", pa.int64()),
                ("episode_index", pa.int64()),
                ("index", pa.int64()),
                ("task_index", pa.int64()),
            ]
        ),
    )


def _encode(path: Path, spec: Spec, cam: int, episodes: list[int]) -> list[tuple[float, float]]:
    """One MP4 holding the episodes back to back (pts in frames of 1/fps); their (from, to) times."""
    path.parent.mkdir(parents=True, exist_ok=True)
    spans = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream(spec.vcodec, rate=spec.fps, options={"g": "2", "crf": "12"})
        stream.pix_fmt, stream.height, stream.width = "yuv420p", H, W
        offset = 0
        for e in episodes:
            frames = _frames(spec, e)
            for i in frames.tolist():
                vf = av.VideoFrame.from_ndarray(frame_rgb(cam, e, i), format="rgb24")
                vf.pts = offset + i
                out.mux(stream.encode(vf))
            spans.append((offset / spec.fps, (offset + spec.lengths[e]) / spec.fps))
            offset += spec.lengths[e]
        out.mux(stream.encode(None))
    return spans


def _info(spec: Spec, version: str, total: int) -> dict:
    v3 = version == "v3.0"
    return {
        "codebase_version": version,
        "robot_type": "aloha",
        "total_episodes": len(spec.lengths),
        "total_frames": total,
        "total_tasks": len(spec.tasks),
        "chunks_size": 1000,
        "fps": spec.fps,
        "splits": {"train": f"0:{len(spec.lengths)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
        if v3
        else "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
        if v3
        else "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": _features(spec),
    }


def write_v30(root: Path, spec: Spec) -> Path:
    eps = list(range(len(spec.lengths)))
    tables, start = [], 0
    for e in eps:
        tables.append(_rows(spec, e, start))
        start += tables[-1].num_rows
    (root / "data/chunk-000").mkdir(parents=True)
    pq.write_table(pa.concat_tables(tables), root / "data/chunk-000/file-000.parquet")
    spans = {
        c: _encode(root / f"videos/{spec.key(c)}/chunk-000/file-000.mp4", spec, k, eps) for k, c in enumerate(spec.cams)
    }
    rows, start = [], 0
    for e in eps:
        n = tables[e].num_rows
        row = {
            "episode_index": e,
            "tasks": [spec.tasks[e % len(spec.tasks)]],
            "length": n,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": start,
            "dataset_to_index": start + n,
        }
        for c in spec.cams:
            row.update(
                {
                    f"videos/{spec.key(c)}/chunk_index": 0,
                    f"videos/{spec.key(c)}/file_index": 0,
                    f"videos/{spec.key(c)}/from_timestamp": spans[c][e][0],
                    f"videos/{spec.key(c)}/to_timestamp": spans[c][e][1],
                }
            )
        row.update(
            {
                "stats/action/mean": [0.0] * spec.state_width,
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
            }
        )
        rows.append(row)
        start += n
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), root / "meta/episodes/chunk-000/file-000.parquet")
    # tasks.parquet as pandas' DataFrame({"task_index": ...}, index=tasks).to_parquet() writes it
    pandas_meta = {"index_columns": ["__index_level_0__"], "column_indexes": [], "columns": []}
    tasks = pa.table(
        {"task_index": pa.array(range(len(spec.tasks)), pa.int64()), "__index_level_0__": pa.array(list(spec.tasks))}
    )
    pq.write_table(
        tasks.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}), root / "meta/tasks.parquet"
    )
    (root / "meta/info.json").write_text(json.dumps(_info(spec, "v3.0", start), indent=4))
    return root


def write_v21(root: Path, spec: Spec) -> Path:
    (root / "meta").mkdir(parents=True)
    (root / "data/chunk-000").mkdir(parents=True)
    start, eps_lines = 0, []
    for e in range(len(spec.lengths)):
        t = _rows(spec, e, start)
        pq.write_table(t, root / f"data/chunk-000/episode_{e:06d}.parquet")
        for k, c in enumerate(spec.cams):
            _encode(root / f"videos/chunk-000/{spec.key(c)}/episode_{e:06d}.mp4", spec, k, [e])
        eps_lines.append(
            json.dumps({"episode_index": e, "tasks": [spec.tasks[e % len(spec.tasks)]], "length": t.num_rows})
        )
        start += t.num_rows
    (root / "meta/episodes.jsonl").write_text("\n".join(eps_lines) + "\n")
    (root / "meta/tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(spec.tasks))
    )
    (root / "meta/info.json").write_text(json.dumps(_info(spec, "v2.1", start), indent=4))
    return root
