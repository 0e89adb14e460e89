"""LeRobotDataset on disk (v2.1 and v3.0), read with PyArrow and PyAV: no `lerobot` import.

Why not LeRobot's own loader: the newest `lerobot` for Python 3.11 (0.4.4) pins `torch<2.11`
and we run torch 2.13, so the package cannot be a dependency. The layout below follows the
published format (LeRobot's `datasets/utils.py`, `lerobot_dataset.py`, `video_utils.py`):

v3.0 (`codebase_version: "v3.0"`)::

    meta/info.json                                  fps, features, data_path, video_path, chunks_size
    meta/tasks.parquet                              task text (pandas index) -> task_index
    meta/episodes/chunk-000/file-000.parquet        one row per episode: length, tasks,
                                                    data/{chunk,file}_index, dataset_{from,to}_index,
                                                    videos/<key>/{chunk_index,file_index,from_timestamp,to_timestamp}
    data/chunk-000/file-000.parquet                 frames of many episodes (episode_index column)
    videos/<key>/chunk-000/file-000.mp4             many episodes back to back; an episode's frame
                                                    at `timestamp` t plays at from_timestamp + t

v2.1 (`codebase_version: "v2.1"`, also "v2.0")::

    meta/info.json, meta/tasks.jsonl ({"task_index", "task"}), meta/episodes.jsonl
    ({"episode_index", "tasks", "length"}), meta/episodes_stats.jsonl
    data/chunk-{episode_index // chunks_size:03d}/episode_{episode_index:06d}.parquet
    videos/chunk-XXX/<key>/episode_{episode_index:06d}.mp4     one episode per file, from t = 0

Frame rows: `timestamp` (float32 s from the episode start), `frame_index`, `episode_index`,
`index`, `task_index`, plus one column per feature (`observation.state`, `action`: fixed-size
lists of float32; dtype "image" features: a struct of PNG/JPEG `bytes` in the parquet).

Every failure is a `LeRobotFormatError` naming the file and the part (a key, an episode, a
timestamp); damaged parquet / MP4 files are reported, never half-read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .images import ImageDecodeError, decode_image_bytes

V21, V30 = "v2.1", "v3.0"
SUPPORTED_VERSIONS = ("v2.0", V21, V30)
INFO_PATH = "meta/info.json"
V30_TASKS = "meta/tasks.parquet"
V30_EPISODES_DIR = "meta/episodes"
V30_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V30_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V30_EPISODES_PATH = V30_EPISODES_DIR + "/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V21_TASKS, V21_EPISODES = "meta/tasks.jsonl", "meta/episodes.jsonl"
DEFAULT_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
# LeRobot's default `tolerance_s`: a video frame belongs to a row when its presentation time is
# within this of the row's timestamp; the same tolerance absorbs float32 rounding of timestamps
TOLERANCE_S = 1e-4


class LeRobotFormatError(ValueError):
    """A LeRobot dataset (or part of one) that does not follow the published format."""


@dataclass(frozen=True)
class VideoRef:
    path: Path
    from_timestamp: float  # where the episode starts inside the file (v3.0), 0 for v2.1


@dataclass(frozen=True)
class EpisodeRef:
    index: int
    length: int
    tasks: tuple[str, ...]
    data_path: Path
    videos: dict[str, VideoRef]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LeRobotFormatError(f"{path}: missing (not a LeRobot dataset?)") from None
    except (OSError, ValueError) as exc:
        raise LeRobotFormatError(f"{path}: cannot read JSON ({exc})") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise LeRobotFormatError(f"{path}: missing") from None
    out = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise LeRobotFormatError(f"{path} line {n}: not JSON ({exc})") from None
    return out


def read_parquet_schema(path: Path) -> Any:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing")
    try:
        return pq.read_schema(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a damaged footer
        raise LeRobotFormatError(f"{path}: damaged parquet file ({exc})") from None


def _column_array(col: Any, what: str) -> np.ndarray:
    """A numeric column as numpy: (n,) for scalars, (n, width) for (fixed-size) list columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = col.combine_chunks()
    if col.null_count:
        raise LeRobotFormatError(f"{what}: {col.null_count} empty cells")
    if pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        widths = np.unique(pc.list_value_length(col).to_numpy(zero_copy_only=False)) if len(col) else np.array([0])
        if widths.size != 1:
            raise LeRobotFormatError(f"{what}: rows of different widths {widths.tolist()}")
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), int(widths[0]))
    return col.to_numpy(zero_copy_only=False)


def read_parquet(path: Path, columns: Iterable[str] | None = None) -> Any:
    """pyarrow Table of a parquet file; a missing or damaged file is a LeRobotFormatError."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise LeRobotFormatError(f"{path}: missing")
    try:
        return pq.read_table(path, columns=list(columns) if columns is not None else None)
    except (pa.ArrowException, OSError) as exc:
        raise LeRobotFormatError(f"{path}: damaged parquet file ({exc})") from None


def _task_text_column(table: Any, path: Path) -> str:
    # pandas writes the index (the task text) as a column named in its metadata; LeRobot's
    # tasks.parquet index has no name, so it is usually "__index_level_0__"
    meta = table.schema.metadata or {}
    if b"pandas" in meta:
        index_cols = [c for c in json.loads(meta[b"pandas"]).get("index_columns", []) if isinstance(c, str)]
        if index_cols and index_cols[0] in table.column_names:
            return index_cols[0]
    for name in ("task", "__index_level_0__"):
        if name in table.column_names:
            return name
    raise LeRobotFormatError(f"{path}: no task text column (columns: {', '.join(table.column_names)})")


class LeRobotSource:
    """The metadata of one local LeRobot dataset, and access to its frames and videos."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise LeRobotFormatError(f"{self.root}: not a directory")
        self.info: dict[str, Any] = _read_json(self.root / INFO_PATH)
        version = str(self.info.get("codebase_version", ""))
        if version not in SUPPORTED_VERSIONS:
            raise LeRobotFormatError(
                f"{self.root / INFO_PATH}: codebase_version {version!r} not supported "
                f"(supported: {', '.join(SUPPORTED_VERSIONS)})"
            )
        self.version = V30 if version == V30 else V21
        for key in ("fps", "features"):
            if key not in self.info:
                raise LeRobotFormatError(f"{self.root / INFO_PATH}: {key!r} missing")
        self.fps = float(self.info["fps"])
        if self.fps <= 0:
            raise LeRobotFormatError(f"{self.root / INFO_PATH}: fps {self.fps} is not positive")
        self.features: dict[str, dict[str, Any]] = dict(self.info["features"])
        self.tasks = self._load_tasks()
        self.episodes = self._load_episodes()
        self._table_cache: tuple[Path, Any] | None = None

    # ------------------------------------------------------------------ metadata
    @property
    def visual_keys(self) -> list[str]:
        return [k for k, f in self.features.items() if f.get("dtype") in ("video", "image")]

    def feature_names(self, key: str) -> list[str] | None:
        """The per-element names of a vector feature (a list, or {"motors": [...]}), if any."""
        names = self.features[key].get("names")
        if isinstance(names, dict) and len(names) == 1:
            names = next(iter(names.values()))
        return [str(n) for n in names] if isinstance(names, list) else None

    def _load_tasks(self) -> dict[int, str]:
        if self.version == V21:
            rows = _read_jsonl(self.root / V21_TASKS)
            try:
                return {int(r["task_index"]): str(r["task"]) for r in rows}
            except (KeyError, TypeError, ValueError) as exc:
                raise LeRobotFormatError(f"{self.root / V21_TASKS}: bad task entry ({exc!r})") from None
        path = self.root / V30_TASKS
        table = read_parquet(path)
        text = _task_text_column(table, path)
        if "task_index" not in table.column_names:
            raise LeRobotFormatError(f"{path}: no task_index column")
        return {int(i): str(t) for i, t in zip(table["task_index"].to_pylist(), table[text].to_pylist())}

    def _load_episodes(self) -> list[EpisodeRef]:
        rows = self._episode_rows()
        eps = [self._episode_ref(r) for r in rows]
        if not eps:
            raise LeRobotFormatError(f"{self.root}: the dataset has no episodes")
        return sorted(eps, key=lambda e: e.index)

    def _episode_rows(self) -> list[dict[str, Any]]:
        if self.version == V21:
            return _read_jsonl(self.root / V21_EPISODES)
        files = sorted((self.root / V30_EPISODES_DIR).glob("*/*.parquet"))
        if not files:
            raise LeRobotFormatError(f"{self.root / V30_EPISODES_DIR}: no episode metadata files")
        rows: list[dict[str, Any]] = []
        for f in files:
            names = read_parquet_schema(f).names
            rows += read_parquet(f, [n for n in names if not n.startswith("stats/")]).to_pylist()
        return rows

    def _episode_ref(self, row: dict[str, Any]) -> EpisodeRef:
        try:
            index, length = int(row["episode_index"]), int(row["length"])
            tasks = tuple(str(t) for t in (row.get("tasks") or []))
            video_keys = [k for k, f in self.features.items() if f.get("dtype") == "video"]
            if self.version == V21:
                chunk = index // int(self.info.get("chunks_size", 1000))
                data = str(self.info["data_path"]).format(episode_chunk=chunk, episode_index=index)
                videos = {
                    k: VideoRef(
                        self.root
                        / str(self.info["video_path"]).format(episode_chunk=chunk, video_key=k, episode_index=index),
                        0.0,
                    )
                    for k in video_keys
                }
            else:
                data = str(self.info.get("data_path", V30_DATA_PATH)).format(
                    chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"])
                )
                videos = {
                    k: VideoRef(
                        self.root
                        / str(self.info.get("video_path", V30_VIDEO_PATH)).format(
                            video_key=k,
                            chunk_index=int(row[f"videos/{k}/chunk_index"]),
                            file_index=int(row[f"videos/{k}/file_index"]),
                        ),
                        float(row[f"videos/{k}/from_timestamp"]),
                    )
                    for k in video_keys
                }
        except (KeyError, TypeError, ValueError) as exc:
            where = V21_EPISODES if self.version == V21 else V30_EPISODES_DIR
            raise LeRobotFormatError(
                f"{self.root / where}: episode entry {row.get('episode_index', '?')} lacks or mangles {exc}"
            ) from None
        return EpisodeRef(index, length, tasks, self.root / data, videos)

    # ------------------------------------------------------------------ frames
    def frames(self, ep: EpisodeRef, columns: Iterable[str]) -> dict[str, np.ndarray | list[Any]]:
        """The episode's rows (sorted by frame_index): numpy arrays for numeric columns, lists
        for image structs. Checks the row count against the episode metadata."""
        wanted = list(dict.fromkeys(["timestamp", "frame_index", "episode_index", *columns]))
        if self._table_cache is None or self._table_cache[0] != ep.data_path:
            names = read_parquet_schema(ep.data_path).names
            missing = [c for c in wanted if c not in names]
            if missing:
                raise LeRobotFormatError(f"{ep.data_path}: column {missing[0]!r} missing")
            self._table_cache = (ep.data_path, read_parquet(ep.data_path, wanted))
        import pyarrow.compute as pc

        table = self._table_cache[1]
        rows = table.filter(pc.equal(table["episode_index"], ep.index)).sort_by("frame_index")
        if rows.num_rows != ep.length:
            raise LeRobotFormatError(
                f"{ep.data_path}: episode {ep.index} has {rows.num_rows} rows, its metadata says {ep.length}"
            )
        out: dict[str, np.ndarray | list[Any]] = {}
        for c in wanted:
            if self.features.get(c, {}).get("dtype") == "image":
                out[c] = rows[c].to_pylist()
            else:
                out[c] = _column_array(rows[c], f"{ep.data_path}: column {c!r} of episode {ep.index}")
        return out

    def decode_images(self, ep: EpisodeRef, key: str, cells: list[Any], rows: np.ndarray) -> Iterator[np.ndarray]:
        """RGB frames of an "image" feature (PNG/JPEG bytes in the parquet) for the given rows."""
        for r in rows.tolist():
            cell = cells[r]
            data = cell.get("bytes") if isinstance(cell, dict) else cell
            if not data:
                raise LeRobotFormatError(f"{ep.data_path}: {key} row {r} of episode {ep.index} holds no image bytes")
            try:
                yield decode_image_bytes(bytes(data), what=f"{ep.data_path}:{key}[{r}]")
            except ImageDecodeError as exc:
                raise LeRobotFormatError(str(exc)) from None


def decode_video(
    ref: VideoRef, timestamps_s: np.ndarray, what: str, tolerance_s: float = TOLERANCE_S
) -> Iterator[np.ndarray]:
    """RGB uint8 frames of `ref` played at `from_timestamp + t` for each t of the sorted
    `timestamps_s`, in order (a timestamp may repeat). Decodes forward from the nearest key
    frame before the first one; a frame that cannot be found within `tolerance_s` (a truncated
    or damaged file, or timestamps that do not match the video) is a LeRobotFormatError."""
    import av

    if not ref.path.is_file():
        raise LeRobotFormatError(f"{ref.path}: video missing ({what})")
    wanted = ref.from_timestamp + np.asarray(timestamps_s, dtype=np.float64)
    try:
        container = av.open(str(ref.path))
    except (av.error.FFmpegError, OSError) as exc:
        raise LeRobotFormatError(f"{ref.path}: damaged video ({exc})") from None
    k = 0
    try:
        if not container.streams.video:
            raise LeRobotFormatError(f"{ref.path}: no video stream")
        stream = container.streams.video[0]
        base = stream.time_base
        if wanted.size and wanted[0] > tolerance_s:
            container.seek(int((wanted[0] - tolerance_s) / base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * base)
            if k < wanted.size and t > wanted[k] + tolerance_s:
                break  # skipped past a wanted time: that frame is not in the file
            rgb = None
            while k < wanted.size and abs(t - wanted[k]) <= tolerance_s:
                rgb = frame.to_ndarray(format="rgb24") if rgb is None else rgb
                yield rgb
                k += 1
            if k >= wanted.size:
                break
    except av.error.FFmpegError as exc:
        raise LeRobotFormatError(f"{ref.path}: damaged video ({exc})") from None
    finally:
        container.close()
    if k < wanted.size:
        raise LeRobotFormatError(
            f"{ref.path}: no frame at {wanted[k]:.4f} s ({what}; timestamp {timestamps_s[k]:.4f} s of the episode): "
            "the video is truncated or damaged, or does not match the parquet timestamps"
        )


def one_line(exc: BaseException) -> str:
    """An error as one line of rich-markup-safe text (library messages may hold newlines)."""
    from rich.markup import escape

    return escape(" ".join(str(exc).split()))
