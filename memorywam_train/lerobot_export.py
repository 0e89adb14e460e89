"""`memorywam-export-lerobot`: MemoryWAM episodes -> a LeRobot v3.0 dataset.

    memorywam-export-lerobot EPISODES_DIR --out DATASET_DIR [--vcodec libsvtav1|h264|hevc]
        [--crf 30] [--gop 2] [--robot-type NAME] [--overwrite]

So any converted rosbag2 recording (or RoboTwin import) can be visualised and used to train
LeRobot's policies (ACT, Diffusion Policy, pi0) on exactly the demonstrations MemoryWAM gets.
The layout is the one lerobot_format.py describes (written with PyArrow and PyAV; no `lerobot`
import, see there for why):

* features: `observation.images.{head,left_wrist,right_wrist}` (video), `observation.state` and
  `action` (float32, 14, named in our joint order), plus LeRobot's timestamp, frame_index,
  episode_index, index, task_index; fps = our control rate (10).
* one LeRobot episode per episode file, or several where an episode has gaps in its grid
  (dropped grid points): LeRobot assumes frame k+1 is 1/fps after frame k (its delta
  timestamps index by frame), so each gap-free run becomes its own episode and every frame
  keeps `timestamp = frame_index / fps`.
* videos: episodes back to back in `videos/<key>/chunk-000/file-000.mp4` (a new file past
  `--video-file-mb`), encoded with LeRobot's recording defaults (libsvtav1, yuv420p, GOP 2,
  CRF 30); frame pts = frame count, so an episode starts at its `from_timestamp`.
* the instruction becomes the task text; meta/stats.json carries mean/std/min/max/count (and
  quantiles for state/action) for normalisation.

Checked before anything is written: one control rate (an integer, LeRobot's fps is), one state
width and one image size per camera over all episodes, even image sizes (yuv420p). The dataset
is written into a hidden sibling folder and renamed into place when complete.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .episodes import CAMERAS, EpisodeError, EpisodeReader
from .lerobot_format import INFO_PATH, V30, V30_DATA_PATH, V30_EPISODES_PATH, V30_TASKS, V30_VIDEO_PATH

STATE_NAMES = [
    *(f"left_arm_{i}" for i in range(6)),
    "left_gripper",
    *(f"right_arm_{i}" for i in range(6)),
    "right_gripper",
]
VIDEO_KEY = "observation.images.{camera}"
CHUNKS_SIZE = 1000  # files per chunk folder (LeRobot's default)
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)


class LeRobotExportError(RuntimeError):
    """Episodes that cannot be exported together."""


@dataclass
class _Segment:
    source: Path
    start: int
    stop: int
    task_index: int


@dataclass
class _VideoFile:
    """One camera's current MP4: episodes are appended; a new file starts past the size limit."""

    root: Path
    key: str
    fps: int
    size: tuple[int, int]  # (H, W)
    vcodec: str
    options: dict[str, str]
    limit_bytes: int
    file_number: int = 0
    frames: int = 0
    _container: Any = None
    _stream: Any = None
    path: Path = field(default_factory=Path)

    def where(self) -> tuple[int, int]:
        return divmod(self.file_number, CHUNKS_SIZE)

    def _open(self) -> None:
        import av

        chunk, file = self.where()
        self.path = self.root / V30_VIDEO_PATH.format(video_key=self.key, chunk_index=chunk, file_index=file)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # moov atom first, as LeRobot writes its files: players and decoders start without seeking
        self._container = av.open(str(self.path), "w", options={"movflags": "faststart"})
        self._stream = self._container.add_stream(self.vcodec, rate=self.fps, options=self.options)
        self._stream.pix_fmt = "yuv420p"
        self._stream.height, self._stream.width = self.size
        self.frames = 0

    def append(self, frames: np.ndarray) -> tuple[int, int, float, float]:
        """Encode one episode's frames; returns (chunk, file, from_timestamp, to_timestamp)."""
        import av

        if self._container is not None and self.path.exists() and self.path.stat().st_size >= self.limit_bytes:
            self.close()
            self.file_number += 1
        if self._container is None:
            self._open()
        start = self.frames
        for rgb in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            vf.pts = self.frames
            self._container.mux(self._stream.encode(vf))
            self.frames += 1
        chunk, file = self.where()
        return chunk, file, start / self.fps, self.frames / self.fps

    def close(self) -> None:
        if self._container is not None:
            self._container.mux(self._stream.encode(None))
            self._container.close()
            self._container = None


def _codec_options(vcodec: str, crf: int, gop: int) -> dict[str, str]:
    # the options LeRobot's encoder passes (video_utils._get_codec_options)
    opts = {"g": str(gop), "crf": str(crf)}
    if vcodec == "libsvtav1":
        opts["preset"] = "12"
    return opts


def _encoder_name(vcodec: str) -> str:
    return {"h264": "libx264", "hevc": "libx265"}.get(vcodec, vcodec)


class _Stats:
    """Running mean/std/min/max per channel (LeRobot's stats.json layout)."""

    def __init__(self) -> None:
        self.n = 0
        self.sum: np.ndarray | None = None
        self.sq: np.ndarray | None = None
        self.min: np.ndarray | None = None
        self.max: np.ndarray | None = None
        self.rows: list[np.ndarray] = []

    def add(self, x: np.ndarray, keep_rows: bool = False) -> None:
        x = x.astype(np.float64)
        s, q, lo, hi = x.sum(0), (x * x).sum(0), x.min(0), x.max(0)
        if self.sum is None:
            self.sum, self.sq, self.min, self.max = s, q, lo, hi
        else:
            self.sum, self.sq = self.sum + s, self.sq + q
            self.min, self.max = np.minimum(self.min, lo), np.maximum(self.max, hi)
        self.n += x.shape[0]
        if keep_rows:
            self.rows.append(x)

    def as_dict(self, shape: tuple[int, ...] | None = None) -> dict[str, Any]:
        assert self.sum is not None and self.sq is not None and self.min is not None and self.max is not None
        mean = self.sum / self.n
        std = np.sqrt(np.maximum(self.sq / self.n - mean * mean, 0.0))
        out = {"mean": mean, "std": std, "min": self.min, "max": self.max}
        if self.rows:
            allrows = np.concatenate(self.rows)
            out.update({f"q{round(q * 100):02d}": np.quantile(allrows, q, axis=0) for q in QUANTILES})
        res: dict[str, Any] = {k: (v.reshape(shape) if shape else v).tolist() for k, v in out.items()}
        res["count"] = [self.n]
        return res


def _segments(stamps: np.ndarray, rate: float) -> list[tuple[int, int]]:
    """Gap-free runs [start, stop) of a grid: a step longer than 1.5 periods starts a new run."""
    cuts = np.flatnonzero(np.diff(stamps) > 1.5e9 / rate) + 1
    bounds = [0, *cuts.tolist(), int(stamps.size)]
    return list(itertools.pairwise(bounds))


def _check(readers: list[EpisodeReader]) -> tuple[int, int, dict[str, tuple[int, int]]]:
    first = readers[0]
    rate = first.control_rate_hz
    if abs(rate - round(rate)) > 1e-6 or round(rate) <= 0:
        raise LeRobotExportError(f"{first.path}: control rate {rate} Hz is not an integer (LeRobot's fps is)")
    dof = first.state.shape[1]
    shapes = {c: first.image_shape(c) for c in CAMERAS}
    for r in readers:
        if abs(r.control_rate_hz - rate) > 1e-6:
            raise LeRobotExportError(f"{r.path}: control rate {r.control_rate_hz} Hz, {first.path} has {rate} Hz")
        if r.state.shape[1] != dof or r.action.shape[1] != dof:
            raise LeRobotExportError(f"{r.path}: state/action width {r.state.shape[1]}, {first.path} has {dof}")
        for c in CAMERAS:
            if r.image_shape(c) != shapes[c]:
                raise LeRobotExportError(
                    f"{r.path}: images/{c} are {r.image_shape(c)}, {first.path} has {shapes[c]} "
                    "(a LeRobot feature has one shape)"
                )
    for c, (h, w) in shapes.items():
        if h % 2 or w % 2:
            raise LeRobotExportError(f"{first.path}: images/{c} are {w}x{h}; yuv420p video needs even sizes")
    return round(rate), dof, shapes


def _tasks_table(tasks: list[str]) -> Any:
    """meta/tasks.parquet as pandas writes it (the task text is the index), without pandas."""
    import pyarrow as pa

    meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.0",
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), "task": pa.array(tasks, pa.string())})
    return table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()})


def export_episodes(
    episodes: Sequence[str | Path],
    out: str | Path,
    *,
    vcodec: str = "libsvtav1",
    crf: int = 30,
    gop: int = 2,
    robot_type: str | None = None,
    overwrite: bool = False,
    video_file_mb: float = 200.0,
) -> dict[str, Any]:
    """Write the episodes as one LeRobot v3.0 dataset at `out`; returns its info.json."""
    out = Path(out)
    paths = [Path(p) for p in episodes]
    if not paths:
        raise LeRobotExportError("no episode files given")
    if out.exists() and not overwrite:
        raise LeRobotExportError(f"{out} exists (use --overwrite to replace it)")
    readers = [EpisodeReader(p) for p in paths]
    try:
        fps, dof, shapes = _check(readers)
        tasks: list[str] = list(dict.fromkeys(r.instruction for r in readers))
        segs = [
            _Segment(r.path, a, b, tasks.index(r.instruction))
            for r in readers
            for a, b in _segments(r.stamps_ns, r.control_rate_hz)
        ]
        tmp = out.with_name(f".{out.name}.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            info = _write(tmp, readers, segs, tasks, fps, dof, shapes, vcodec, crf, gop, robot_type, video_file_mb)
            if out.exists():
                shutil.rmtree(out)
            tmp.rename(out)
        except Exception as exc:
            import av

            if isinstance(exc, av.error.FFmpegError):
                raise LeRobotExportError(f"video encoding failed ({vcodec}): {exc}") from None
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        for r in readers:
            r.close()
    return info


def _write(
    root: Path,
    readers: list[EpisodeReader],
    segs: list[_Segment],
    tasks: list[str],
    fps: int,
    dof: int,
    shapes: dict[str, tuple[int, int]],
    vcodec: str,
    crf: int,
    gop: int,
    robot_type: str | None,
    video_file_mb: float,
) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    by_path = {r.path: r for r in readers}
    names = STATE_NAMES if dof == len(STATE_NAMES) else [f"joint_{i}" for i in range(dof)]
    videos = {
        c: _VideoFile(
            root,
            VIDEO_KEY.format(camera=c),
            fps,
            shapes[c],
            _encoder_name(vcodec),
            _codec_options(vcodec, crf, gop),
            int(video_file_mb * 2**20),
        )
        for c in CAMERAS
    }
    vec = pa.list_(pa.float32(), dof)
    schema = pa.schema(
        [
            ("observation.state", vec),
            ("action", vec),
            ("timestamp", pa.float32()),
            ("frame_index", pa.int64()),
            ("episode_index", pa.int64()),
            ("index", pa.int64()),
            ("task_index", pa.int64()),
        ]
    )
    data_path = root / V30_DATA_PATH.format(chunk_index=0, file_index=0)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    stats = {k: _Stats() for k in ("observation.state", "action", *(VIDEO_KEY.format(camera=c) for c in CAMERAS))}
    ep_rows: list[dict[str, Any]] = []
    total = 0
    try:
        with pq.ParquetWriter(data_path, schema, compression="snappy") as writer:
            for e, seg in enumerate(segs):
                r = by_path[seg.source]
                n = seg.stop - seg.start
                state, action = r.state[seg.start : seg.stop], r.action[seg.start : seg.stop]
                writer.write_table(
                    pa.table(
                        {
                            "observation.state": pa.FixedSizeListArray.from_arrays(pa.array(state.reshape(-1)), dof),
                            "action": pa.FixedSizeListArray.from_arrays(pa.array(action.reshape(-1)), dof),
                            "timestamp": pa.array((np.arange(n) / fps).astype(np.float32)),
                            "frame_index": pa.array(np.arange(n, dtype=np.int64)),
                            "episode_index": pa.array(np.full(n, e, dtype=np.int64)),
                            "index": pa.array(np.arange(total, total + n, dtype=np.int64)),
                            "task_index": pa.array(np.full(n, seg.task_index, dtype=np.int64)),
                        },
                        schema=schema,
                    )
                )
                stats["observation.state"].add(state, keep_rows=True)
                stats["action"].add(action, keep_rows=True)
                row: dict[str, Any] = {
                    "episode_index": e,
                    "tasks": [tasks[seg.task_index]],
                    "length": n,
                    "data/chunk_index": 0,
                    "data/file_index": 0,
                    "dataset_from_index": total,
                    "dataset_to_index": total + n,
                }
                for c in CAMERAS:
                    frames = r.images(c, seg.start, seg.stop)
                    key = VIDEO_KEY.format(camera=c)
                    chunk, file, t_from, t_to = videos[c].append(frames)
                    stats[key].add(frames.reshape(-1, 3) / 255.0)
                    row.update(
                        {
                            f"videos/{key}/chunk_index": chunk,
                            f"videos/{key}/file_index": file,
                            f"videos/{key}/from_timestamp": t_from,
                            f"videos/{key}/to_timestamp": t_to,
                        }
                    )
                row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
                ep_rows.append(row)
                total += n
    finally:
        for v in videos.values():
            v.close()
    ep_path = root / V30_EPISODES_PATH.format(chunk_index=0, file_index=0)
    ep_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(ep_rows), ep_path)
    pq.write_table(_tasks_table(tasks), root / V30_TASKS)
    features: dict[str, Any] = {
        VIDEO_KEY.format(camera=c): {
            "dtype": "video",
            "shape": [h, w, 3],
            "names": ["height", "width", "channels"],
            "info": {
                "video.height": h,
                "video.width": w,
                "video.codec": {"libx264": "h264", "libx265": "hevc", "libsvtav1": "av1"}.get(
                    _encoder_name(vcodec), vcodec
                ),
                "video.pix_fmt": "yuv420p",
                "video.is_depth_map": False,
                "video.fps": fps,
                "video.channels": 3,
                "has_audio": False,
            },
        }
        for c, (h, w) in shapes.items()
    }
    for key in ("observation.state", "action"):
        features[key] = {"dtype": "float32", "shape": [dof], "names": names}
    for key, dtype in (
        ("timestamp", "float32"),
        *((k, "int64") for k in ("frame_index", "episode_index", "index", "task_index")),
    ):
        features[key] = {"dtype": dtype, "shape": [1], "names": None}
    info = {
        "codebase_version": V30,
        "robot_type": robot_type,
        "total_episodes": len(segs),
        "total_frames": total,
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": int(video_file_mb),
        "fps": fps,
        "splits": {"train": f"0:{len(segs)}"},
        "data_path": V30_DATA_PATH,
        "video_path": V30_VIDEO_PATH,
        "features": features,
    }
    (root / INFO_PATH).write_text(json.dumps(info, indent=4))
    stats_json = {k: s.as_dict((3, 1, 1) if k.startswith("observation.images.") else None) for k, s in stats.items()}
    (root / "meta" / "stats.json").write_text(json.dumps(stats_json, indent=4))
    return info


def episode_files(inputs: Sequence[Path]) -> list[Path]:
    """Episode files from files and folders (a folder: its *.hdf5, sorted by name)."""
    out: list[Path] = []
    for p in inputs:
        out += sorted(p.glob("*.hdf5")) if p.is_dir() else [p]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="memorywam-export-lerobot", description=__doc__.split("\n\n")[0])
    p.add_argument("episodes", nargs="+", type=Path, metavar="EPISODES_DIR", help="episode folder(s) or .hdf5 files")
    p.add_argument("--out", required=True, type=Path, metavar="DATASET_DIR")
    p.add_argument("--vcodec", default="libsvtav1", choices=["libsvtav1", "h264", "hevc"])
    p.add_argument("--crf", type=int, default=30, help="quality (lower: better, larger); LeRobot's default 30")
    p.add_argument("--gop", type=int, default=2, help="key frame interval; LeRobot's default 2 (fast random access)")
    p.add_argument("--robot-type", default=None, help="info.json robot_type (e.g. aloha)")
    p.add_argument("--video-file-mb", type=float, default=200.0, help="start a new MP4 past this size")
    p.add_argument("--overwrite", action="store_true", help="replace DATASET_DIR")
    args = p.parse_args(argv)
    from rich.console import Console

    from .lerobot_format import one_line

    console = Console(stderr=True)
    files = episode_files(args.episodes)
    try:
        info = export_episodes(
            files,
            args.out,
            vcodec=args.vcodec,
            crf=args.crf,
            gop=args.gop,
            robot_type=args.robot_type,
            overwrite=args.overwrite,
            video_file_mb=args.video_file_mb,
        )
    except (LeRobotExportError, EpisodeError, OSError, ValueError) as exc:
        console.print(f"[red]{one_line(exc)}[/red] (nothing written)", soft_wrap=True)
        return 1
    console.print(
        f"{args.out}: LeRobot {V30}, {info['total_episodes']} episodes ({len(files)} files), "
        f"{info['total_frames']} frames at {info['fps']} fps, {info['total_tasks']} tasks"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
