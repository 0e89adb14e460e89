"""`memorywam-import-robotwin`: RoboTwin 2.0 / RMBench demonstration HDF5 -> MemoryWAM episodes.

    memorywam-import-robotwin EPISODE.hdf5... --out DIR
        [--instruction TEXT | --instructions JSON_OR_DIR] [--source-rate-hz HZ] [--overwrite]

Their layout (eval-anchors §1): `observation/{head_camera,left_camera,right_camera}/rgb` (T,)
JPEG bytes, `joint_action/vector` (T, 14) = left 6 + left gripper + right 6 + right gripper.

Decisions:
* Images: their JPEGs were encoded by `cv2.imencode` from RGB arrays, so decoding yields RGB
  numerically; no channel swap (swapping would train on blue skin and red sky). Arrays already
  stored as uint8 (T, H, W, 3) are taken as they are.
* State/action: state[t] = vector[t], action[t] = vector[t+1] (the next recorded joint target);
  the last frame has no action, so an episode of T frames gives T-1 rows.
* Rate: by default every recorded frame becomes one 10 Hz control row (their frames are 15 sim
  steps apart, ~16.7 Hz, but policies trained on RoboTwin treat one frame as one step). With
  `--source-rate-hz R` the frames are resampled as-of onto a 10 Hz grid (frame at or before each
  grid time), and action[k] = state of grid point k+1.
* Instruction: --instruction wins; else --instructions (a JSON file, or a folder holding
  `<episode>.json`); else `../instructions/<episode>.json` next to their `data/` folder (RMBench
  layout). JSON may be a string, a list (first entry) or {"seen": [...], ...} (first seen).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .episodes import EpisodeError, EpisodeWriter
from .images import ImageDecodeError, decode_image_bytes

CAMERA_KEYS = {"head": "head_camera", "left_wrist": "left_camera", "right_wrist": "right_camera"}
CONTROL_RATE_HZ = 10.0
ACTION_CONVENTION = "next frame: state[t] = joint_action/vector[i_t], action[t] = joint_action/vector[i_(t+1)]"


class RoboTwinImportError(RuntimeError):
    """A RoboTwin file that cannot be imported."""


def _instruction_from_json(path: Path) -> str:
    try:
        data: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RoboTwinImportError(f"cannot read instructions {path}: {exc}") from exc
    if isinstance(data, dict):
        data = (
            data.get("seen") or data.get("instruction") or data.get("instructions") or next(iter(data.values()), None)
        )
    if isinstance(data, list):
        data = data[0] if data else None
    if not isinstance(data, str) or not data.strip():
        raise RoboTwinImportError(
            f"{path}: no instruction text found (expected a string, a list, or {{'seen': [...]}})"
        )
    return data.strip()


def find_instruction(episode: Path, instruction: str | None, instructions: Path | None) -> str:
    if instruction:
        return instruction
    if instructions is not None:
        return _instruction_from_json(instructions / f"{episode.stem}.json" if instructions.is_dir() else instructions)
    guess = episode.parent.parent / "instructions" / f"{episode.stem}.json"
    if guess.exists():
        return _instruction_from_json(guess)
    raise RoboTwinImportError(f"{episode}: no instruction (pass --instruction or --instructions; looked for {guess})")


def frame_indices(num_frames: int, source_rate_hz: float | None) -> np.ndarray:
    """Source frame index per output grid point (all frames when no rate is given)."""
    if source_rate_hz is None:
        return np.arange(num_frames)
    duration = (num_frames - 1) / source_rate_hz
    grid = np.arange(int(np.floor(duration * CONTROL_RATE_HZ + 1e-9)) + 1) / CONTROL_RATE_HZ
    # as-of: the latest frame at or before each grid time (the epsilon absorbs float rounding)
    return np.minimum(np.floor(grid * source_rate_hz + 1e-6).astype(np.int64), num_frames - 1)


def _decode(ds: Any, index: int, what: str) -> np.ndarray:
    item = ds[index]
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 3:
        return np.ascontiguousarray(item)  # already decoded RGB
    data = item.tobytes() if isinstance(item, np.ndarray) else bytes(item)
    return decode_image_bytes(data, what=what)  # RGB already: no channel swap (module docstring)


def import_episode(
    src: str | Path,
    out: str | Path,
    instruction: str,
    source_rate_hz: float | None = None,
    overwrite: bool = False,
) -> int:
    """Import one RoboTwin HDF5 episode; returns the number of rows written."""
    import h5py

    src, out = Path(src), Path(out)
    if out.exists() and not overwrite:
        raise RoboTwinImportError(f"{out} exists (use --overwrite to replace it)")
    try:
        f = h5py.File(src, "r")
    except OSError as exc:
        raise RoboTwinImportError(f"{src}: cannot open HDF5 ({exc})") from exc
    with f:
        missing = [
            k for k in ("joint_action/vector", *(f"observation/{v}/rgb" for v in CAMERA_KEYS.values())) if k not in f
        ]
        if missing:
            raise RoboTwinImportError(f"{src}: not a RoboTwin episode, missing {missing[0]!r}")
        vector = np.asarray(f["joint_action/vector"], dtype=np.float64)
        if vector.ndim != 2 or vector.shape[1] != 14:
            raise RoboTwinImportError(f"{src}: joint_action/vector has shape {vector.shape}, expected (T, 14)")
        n = vector.shape[0]
        for key in CAMERA_KEYS.values():
            if f[f"observation/{key}/rgb"].shape[0] != n:
                raise RoboTwinImportError(
                    f"{src}: {key} has {f[f'observation/{key}/rgb'].shape[0]} frames, joints have {n}"
                )
        idx = frame_indices(n, source_rate_hz)
        if idx.size < 2:
            raise RoboTwinImportError(f"{src}: {n} frames give no (state, next state) pair")
        rows = idx[:-1]
        state, action = vector[rows], vector[idx[1:]]
        stamps = np.round(np.arange(rows.size) / CONTROL_RATE_HZ * 1e9).astype(np.int64)
        with EpisodeWriter(out, int(rows.size)) as w:
            for cam, key in CAMERA_KEYS.items():
                ds = f[f"observation/{key}/rgb"]
                for row, i in enumerate(rows.tolist()):
                    w.write_frame(cam, row, _decode(ds, i, f"{src}:{key}[{i}]"))
            w.finish(
                state,
                action,
                stamps,
                {
                    "instruction": instruction,
                    "source": str(src.resolve()),
                    "control_rate_hz": CONTROL_RATE_HZ,
                    "action_convention": ACTION_CONVENTION,
                    "streams": {
                        "source_frames": n,
                        "source_rate_hz": source_rate_hz,
                        "frame_indices": "all" if source_rate_hz is None else rows.tolist(),
                    },
                    "created_by": "memorywam-import-robotwin",
                },
            )
    return int(rows.size)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="memorywam-import-robotwin", description=__doc__.split("\n\n")[0])
    p.add_argument("episodes", nargs="+", type=Path, metavar="EPISODE.hdf5")
    p.add_argument("--out", required=True, type=Path)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--instruction", default=None, help="instruction text for every episode")
    g.add_argument(
        "--instructions",
        type=Path,
        default=None,
        help="instructions JSON file, or a folder with <episode>.json (RMBench instructions/)",
    )
    p.add_argument(
        "--source-rate-hz",
        type=float,
        default=None,
        help="their frame rate (RoboTwin: ~16.67); resample to 10 Hz. Default: keep every frame",
    )
    p.add_argument("--prefix", default="", help="prefix for output names (e.g. the task name)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    if args.source_rate_hz is not None and args.source_rate_hz <= 0:
        p.error("--source-rate-hz must be positive")
    from rich.console import Console
    from rich.table import Table
    from tqdm import tqdm

    console = Console(stderr=True)
    table = Table(title="memorywam-import-robotwin")
    for col in ("source", "episode", "rows", "status"):
        table.add_column(col, overflow="fold")
    failed = 0
    seen: set[str] = set()
    for src in tqdm(args.episodes, unit="ep", disable=not sys.stderr.isatty()):
        out = args.out / f"{args.prefix}{src.stem}.hdf5"
        try:
            if out.name in seen:
                raise RoboTwinImportError(f"output name {out.name} used twice in this call (use --prefix)")
            seen.add(out.name)
            text = find_instruction(src, args.instruction, args.instructions)
            rows = import_episode(src, out, text, args.source_rate_hz, args.overwrite)
            table.add_row(str(src), out.name, str(rows), "ok")
        except (RoboTwinImportError, EpisodeError, ImageDecodeError, OSError, KeyError, ValueError) as exc:
            failed += 1
            console.print(f"[red]{src}: {exc}[/red]")
            table.add_row(str(src), out.name, "0", "[red]FAILED[/red]")
    console.print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
