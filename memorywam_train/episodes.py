"""Episode storage: one HDF5 file per demonstration, written by the bag converter and the RoboTwin
importer, read by latent precompute and the trainer.

Schema (schema_version 1)::

    /images/head          uint8   (T, H, W, 3)  RGB, chunked one frame per chunk, gzip (level 1)
    /images/left_wrist    uint8   (T, H, W, 3)  (cameras may differ in H, W from each other)
    /images/right_wrist   uint8   (T, H, W, 3)
    /state                float32 (T, 14)       measured joints at stamps_ns[t]
    /action               float32 (T, 14)       commanded joints for time t (see attr `action_convention`)
    /stamps_ns            int64   (T,)          grid times, uniform: stamps_ns[t] = stamps_ns[0] +
                                                round(t * 1e9 / control_rate_hz) (precompute refuses
                                                rows off by > 10 % of a period); bags: ROS time (ns)
                                                of the head-camera grid (split at gaps); imports:
                                                round(t / control_rate_hz * 1e9)
    attrs:
      schema_version      int     1
      instruction         str     the language instruction of the episode
      source              str     where it came from (bag path, HDF5 path), plus episode index
      control_rate_hz     float   rate of the rows (10 for converted bags)
      joint_order         str     "left arm 6, left gripper, right arm 6, right gripper"
      action_convention   str     how action rows relate to state rows (converter / importer)
      streams             str     JSON: per stream {topic, messages, largest_gap_s} inside this
                                  episode, plus the source bag's counts {dropped, repeated,
                                  conflicting, reordered, backward} (convert.py / alignment.py)
      segment             str     JSON (converted bags): {index, part, parts, first_grid_index}:
                                  which marker segment / clock part and which piece between gaps
      created_by          str     tool that wrote the file

Joint order everywhere (CONTRACTS.md): left arm 6 joints, left gripper, right arm 6, right gripper.

Rows are one control step each (10 Hz); frame i of every dataset belongs to stamps_ns[i].
Files are written to a temporary name and renamed when complete, so a crash never leaves a
half-written episode under the final name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
CAMERAS: tuple[str, ...] = ("head", "left_wrist", "right_wrist")
JOINT_ORDER = "left arm 6, left gripper, right arm 6, right gripper"
_REQUIRED_ATTRS = ("schema_version", "instruction", "source", "control_rate_hz")


class EpisodeError(ValueError):
    """An episode file that does not follow the schema."""


def _partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


class EpisodeWriter:
    """Streaming writer: T is known up front, frames are written one at a time so a long bag
    never has to sit in memory. An image dataset is created when its camera's first frame
    arrives (or up front from `image_shapes`). Use as a context manager; the file appears under
    its final name only after `finish()`."""

    def __init__(
        self,
        path: str | Path,
        num_frames: int,
        image_shapes: Mapping[str, tuple[int, int]] | None = None,
        dof: int = 14,
        compression: str | None = "gzip",
        compression_opts: int | None = 1,
    ) -> None:
        import h5py

        if num_frames <= 0:
            raise EpisodeError("an episode needs at least one frame")
        self.path = Path(path)
        self.num_frames = num_frames
        self._tmp = _partial_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = h5py.File(self._tmp, "w")
        self._compression = compression
        self._opts = compression_opts if compression == "gzip" else None
        self._images: dict[str, Any] = {}
        self._written: dict[str, np.ndarray] = {}
        self._dof = dof
        for cam, (h, w) in (image_shapes or {}).items():
            self._create(cam, h, w)

    def _create(self, camera: str, h: int, w: int) -> None:
        if camera not in CAMERAS:
            raise EpisodeError(f"unknown camera {camera!r} (cameras: {', '.join(CAMERAS)})")
        self._images[camera] = self._f.create_dataset(
            f"images/{camera}",
            shape=(self.num_frames, h, w, 3),
            dtype=np.uint8,
            chunks=(1, h, w, 3),  # one frame per chunk: random frame access reads one chunk
            compression=self._compression,
            compression_opts=self._opts,
        )
        self._written[camera] = np.zeros(self.num_frames, dtype=bool)

    def write_frame(self, camera: str, index: int, rgb: np.ndarray) -> None:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise EpisodeError(
                f"camera {camera!r} frame {index}: expected uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}"
            )
        if camera not in self._images:
            self._create(camera, rgb.shape[0], rgb.shape[1])
        ds = self._images[camera]
        if rgb.shape != ds.shape[1:]:
            raise EpisodeError(
                f"camera {camera!r} frame {index}: {rgb.shape[1]}x{rgb.shape[0]} but earlier frames are "
                f"{ds.shape[2]}x{ds.shape[1]} (image size changed within the episode)"
            )
        ds[index] = rgb
        self._written[camera][index] = True

    def finish(
        self,
        state: np.ndarray,
        action: np.ndarray,
        stamps_ns: np.ndarray,
        attrs: Mapping[str, Any],
    ) -> Path:
        """Write the low-dimensional arrays and attributes, close, and move into place."""
        t = self.num_frames
        for cam in CAMERAS:
            if cam not in self._written or not self._written[cam].all():
                n = int(self._written[cam].sum()) if cam in self._written else 0
                raise EpisodeError(f"camera {cam!r}: {n} of {t} frames written")
        for name, arr in (("state", state), ("action", action)):
            if arr.shape != (t, self._dof):
                raise EpisodeError(f"{name}: expected shape {(t, self._dof)}, got {arr.shape}")
        if stamps_ns.shape != (t,):
            raise EpisodeError(f"stamps_ns: expected shape {(t,)}, got {stamps_ns.shape}")
        self._f.create_dataset("state", data=np.asarray(state, dtype=np.float32))
        self._f.create_dataset("action", data=np.asarray(action, dtype=np.float32))
        self._f.create_dataset("stamps_ns", data=np.asarray(stamps_ns, dtype=np.int64))
        full = {"schema_version": SCHEMA_VERSION, "joint_order": JOINT_ORDER, **attrs}
        for key in _REQUIRED_ATTRS:
            if key not in full or full[key] is None:
                raise EpisodeError(f"attribute {key!r} is required")
        for key, value in full.items():
            self._f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
        self._f.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._f.close()
        finally:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is not None or self._tmp.exists():
            # an exception, or the caller never called finish(): leave nothing behind
            if self._f.id.valid:
                self.abort()
            else:
                self._tmp.unlink(missing_ok=True)


def write_episode(
    path: str | Path,
    images: Mapping[str, np.ndarray],
    state: np.ndarray,
    action: np.ndarray,
    stamps_ns: np.ndarray,
    attrs: Mapping[str, Any],
    compression: str | None = "gzip",
) -> Path:
    """Write a whole in-memory episode (images uint8 (T, H, W, 3) per camera)."""
    t = int(np.asarray(stamps_ns).shape[0])
    shapes = {}
    for cam in CAMERAS:
        if cam not in images:
            raise EpisodeError(f"images: camera {cam!r} missing")
        arr = images[cam]
        if arr.ndim != 4 or arr.shape[0] != t or arr.shape[3] != 3:
            raise EpisodeError(f"images/{cam}: expected (T={t}, H, W, 3), got {arr.shape}")
        shapes[cam] = (arr.shape[1], arr.shape[2])
    with EpisodeWriter(path, t, shapes, dof=np.asarray(state).shape[-1], compression=compression) as w:
        for cam in CAMERAS:
            w._images[cam][...] = np.asarray(images[cam], dtype=np.uint8)
            w._written[cam][:] = True
        return w.finish(np.asarray(state), np.asarray(action), np.asarray(stamps_ns), attrs)


@dataclass
class Episode:
    """A fully loaded episode (small episodes, tests, tools)."""

    images: dict[str, np.ndarray]
    state: np.ndarray
    action: np.ndarray
    stamps_ns: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def instruction(self) -> str:
        return str(self.attrs["instruction"])

    def __len__(self) -> int:
        return int(self.stamps_ns.shape[0])


def _decode_attr(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class EpisodeReader:
    """Lazy access to one episode file. Opens the HDF5 file on first use (so it can be created in
    one process and used in DataLoader workers: the handle is not pickled)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f: Any = None
        f = self._file()
        missing = [k for k in ("state", "action", "stamps_ns") if k not in f] + [
            f"images/{c}" for c in CAMERAS if f"images/{c}" not in f
        ]
        if missing:
            raise EpisodeError(f"{self.path}: not an episode file, missing {missing[0]!r}")
        version = int(f.attrs.get("schema_version", -1))
        if not 1 <= version <= SCHEMA_VERSION:
            raise EpisodeError(f"{self.path}: schema_version {version} not supported (this reader: {SCHEMA_VERSION})")
        self.attrs: dict[str, Any] = {k: _decode_attr(v) for k, v in f.attrs.items()}
        # low-dimensional arrays are tiny: load them once
        self.state = np.asarray(f["state"], dtype=np.float32)
        self.action = np.asarray(f["action"], dtype=np.float32)
        self.stamps_ns = np.asarray(f["stamps_ns"], dtype=np.int64)

    def _file(self) -> Any:
        if self._f is None:
            import h5py

            self._f = h5py.File(self.path, "r")
        return self._f

    @property
    def instruction(self) -> str:
        return str(self.attrs["instruction"])

    @property
    def control_rate_hz(self) -> float:
        return float(self.attrs["control_rate_hz"])

    def __len__(self) -> int:
        return int(self.stamps_ns.shape[0])

    def image_shape(self, camera: str) -> tuple[int, int]:
        return tuple(self._file()[f"images/{camera}"].shape[1:3])  # type: ignore[return-value]

    def images(self, camera: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """uint8 (n, H, W, 3) frames [start, stop) of one camera; reads only those chunks."""
        return np.asarray(self._file()[f"images/{camera}"][start:stop])

    def frame(self, index: int) -> dict[str, Any]:
        """One row: the three images, state, action and stamp."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame {index} out of range for {len(self)} frames")
        f = self._file()
        out: dict[str, Any] = {c: np.asarray(f[f"images/{c}"][index]) for c in CAMERAS}
        out.update(state=self.state[index], action=self.action[index], stamp_ns=int(self.stamps_ns[index]))
        return out

    def load(self) -> Episode:
        return Episode(
            images={c: self.images(c) for c in CAMERAS},
            state=self.state,
            action=self.action,
            stamps_ns=self.stamps_ns,
            attrs=dict(self.attrs),
        )

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_f"] = None
        return state

    def __enter__(self) -> EpisodeReader:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def read_episode(path: str | Path) -> Episode:
    """Load a whole episode into memory."""
    with EpisodeReader(path) as r:
        return r.load()
