"""`memorywam-import-lerobot`: a local LeRobot dataset (v2.1 or v3.0) -> MemoryWAM episodes.

    memorywam-import-lerobot DATASET_DIR --out EPISODES_DIR [--mapping MAPPING.yaml]
        [--instruction TEXT] [--episodes 0,3,7] [--overwrite]

The mapping YAML (config/lerobot_aloha.yaml is the default; config/lerobot_aloha_sim.yaml for
the one-camera simulated ALOHA datasets) names the dataset's keys for our streams::

    control_rate_hz: 10                      # our grid
    instruction: null                        # used when the dataset has no task text
    cameras:                                 # our camera -> the dataset's video (or image) key
      head: observation.images.cam_high      # one key may serve several cameras
      left_wrist: observation.images.cam_left_wrist
      right_wrist: observation.images.cam_right_wrist
    camera_max_age_s: 0.1
    state:  {key: observation.state, names: [...], max_age_s: 0.05}   # or indices: [...]
    action: {key: action, max_age_s: 0.1}                              # all 14 columns in order

`names` picks the columns by the feature's names in info.json, `indices` by position; with
neither the feature must be exactly 14 wide. The result is always our joint order (left arm 6,
left gripper, right arm 6, right gripper).

Resampling (the same as-of rules and drop accounting as memorywam-convert, sampling.py): per
episode a 10 Hz grid runs from its first frame's `timestamp` to its last; every stream takes the
latest dataset frame at or before each grid time (a frame within 0.1 ms after it counts as at
it: LeRobot's timestamp tolerance, which absorbs the float32 rounding of `timestamp`) and no
older than the stream's max age; a grid point where a stream has no such frame is dropped and
counted against that stream. So 30 Hz keeps frames 0, 3, 6, ...; 50 Hz frames 0, 5, 10, ...;
a rate that does not divide (15 Hz) the latest frame before each grid time. LeRobot's `action`
is the command issued at its frame, so state[t] and action[t] come from the same frame, as in
the converter (action[t] = latest command at or before t).

Instruction: --instruction, else the episode's task text (the first, if it has several), else
`instruction` in the mapping. Everything is checked and written into a hidden folder first and
moved into place only when every episode succeeded: bad input (a missing video, a key not in
the dataset, a state of the wrong width, a damaged parquet or MP4) is one clear error and leaves
nothing under --out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .config import ConfigError, _check_keys, _mapping, _positive, _str
from .convert import STREAMS, ConversionReport, EpisodeReport, summary_table
from .episodes import CAMERAS, EpisodeError, EpisodeWriter
from .lerobot_format import TOLERANCE_S, EpisodeRef, LeRobotFormatError, LeRobotSource, decode_video
from .sampling import NS, StreamStats, asof, make_grid, window_stats

DOF = 14
ACTION_CONVENTION = (
    "as-of: state[t] = observation.state and action[t] = action of the latest LeRobot frame at or "
    "before stamps_ns[t] (LeRobot's action is the command issued at its frame)"
)
CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"


class LeRobotImportError(RuntimeError):
    """A dataset that cannot be imported with this mapping."""


@dataclass(frozen=True)
class JointSelect:
    key: str
    names: tuple[str, ...] | None = None
    indices: tuple[int, ...] | None = None
    max_age_s: float = 0.05


@dataclass(frozen=True)
class LeRobotMapping:
    cameras: dict[str, str]
    state: JointSelect
    action: JointSelect
    camera_max_age_s: float = 0.1
    control_rate_hz: float = 10.0
    instruction: str | None = None


def _joint_select(raw: Any, key: str, default_key: str, default_age: float) -> JointSelect:
    d = _mapping(raw if raw is not None else {}, key)
    _check_keys(d, {"key", "names", "indices", "max_age_s"}, key)
    names, idx = d.get("names"), d.get("indices")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise ConfigError(f"{key}.names: expected a list of the feature's names")
    if idx is not None and (
        not isinstance(idx, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in idx)
    ):
        raise ConfigError(f"{key}.indices: expected a list of non-negative integers")
    if names is not None and idx is not None:
        raise ConfigError(f"{key}: give names or indices, not both")
    sel = names if names is not None else idx
    if sel is not None and len(sel) != DOF:
        raise ConfigError(f"{key}: {len(sel)} columns selected, our joint order has {DOF}")
    return JointSelect(
        key=_str(d, "key", key) or default_key,
        names=tuple(names) if names is not None else None,
        indices=tuple(idx) if idx is not None else None,
        max_age_s=_positive(d, "max_age_s", key, default_age),
    )


def mapping_from_dict(raw: Any) -> LeRobotMapping:
    d = _mapping(raw, "<top level>")
    _check_keys(d, {"cameras", "state", "action", "camera_max_age_s", "control_rate_hz", "instruction"}, "")
    cams = _mapping(d.get("cameras"), "cameras")
    _check_keys(cams, set(CAMERAS), "cameras")
    missing = [c for c in CAMERAS if c not in cams]
    if missing:
        raise ConfigError(f"cameras.{missing[0]}: required (cameras are {', '.join(CAMERAS)})")
    return LeRobotMapping(
        cameras={c: _str(cams, c, "cameras", required=True) or "" for c in CAMERAS},
        state=_joint_select(d.get("state"), "state", "observation.state", 0.05),
        action=_joint_select(d.get("action"), "action", "action", 0.1),
        camera_max_age_s=_positive(d, "camera_max_age_s", "", 0.1),
        control_rate_hz=_positive(d, "control_rate_hz", "", 10.0),
        instruction=_str(d, "instruction", ""),
    )


def load_mapping(path: str | Path) -> LeRobotMapping:
    path = Path(path)
    try:
        return mapping_from_dict(yaml.safe_load(path.read_text()))
    except OSError as exc:
        raise ConfigError(f"cannot read mapping {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"mapping {path} is not valid YAML: {exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _columns(src: LeRobotSource, sel: JointSelect, what: str) -> np.ndarray:
    """Column indices of `sel.key` that give our joint order; checks the key and its width."""
    if sel.key not in src.features:
        vectors = [k for k, f in src.features.items() if len(f.get("shape", ())) == 1 and k not in ("timestamp",)]
        raise LeRobotImportError(f"{what}: key {sel.key!r} not in the dataset (vector features: {', '.join(vectors)})")
    shape = tuple(src.features[sel.key].get("shape", ()))
    width = int(shape[0]) if len(shape) == 1 else -1
    if width < 0:
        raise LeRobotImportError(f"{what}: {sel.key} has shape {list(shape)}, expected a vector")
    if sel.names is not None:
        names = src.feature_names(sel.key)
        if names is None:
            raise LeRobotImportError(f"{what}: {sel.key} has no names in info.json; select by indices instead")
        unknown = [n for n in sel.names if n not in names]
        if unknown:
            raise LeRobotImportError(f"{what}: {sel.key} has no element {unknown[0]!r} (names: {', '.join(names)})")
        return np.array([names.index(n) for n in sel.names])
    if sel.indices is not None:
        bad = [i for i in sel.indices if i >= width]
        if bad:
            raise LeRobotImportError(f"{what}: index {bad[0]} out of range for {sel.key} of width {width}")
        return np.array(sel.indices)
    if width != DOF:
        raise LeRobotImportError(
            f"{what}: {sel.key} is {width} wide, our joint order has {DOF}; select the columns with names or indices"
        )
    return np.arange(DOF)


@dataclass
class _Plan:
    ep: EpisodeRef
    grid: np.ndarray  # kept grid times, ns from the episode's first frame
    rows: dict[str, np.ndarray]  # stream -> dataset row per kept grid point
    state: np.ndarray
    action: np.ndarray
    stats: dict[str, StreamStats]
    instruction: str
    frames: dict[str, Any]


def _plan_episode(
    src: LeRobotSource, ep: EpisodeRef, m: LeRobotMapping, cols: dict[str, np.ndarray], instruction: str | None
) -> _Plan:
    keys = list(dict.fromkeys([*m.cameras.values(), m.state.key, m.action.key]))
    data = src.frames(ep, [k for k in keys if src.features[k].get("dtype") != "video"])
    for name, sel in (("state", m.state), ("action", m.action)):
        arr = data[sel.key]
        width = src.features[sel.key]["shape"][0]
        if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.shape[1] != width:
            got = arr.shape if isinstance(arr, np.ndarray) else type(arr).__name__
            raise LeRobotImportError(
                f"{ep.data_path}: {sel.key} of episode {ep.index} has shape {got}, "
                f"info.json says width {width} ({name})"
            )
    stamps = np.round(np.asarray(data["timestamp"], dtype=np.float64) * NS).astype(np.int64)
    if stamps.size == 0:
        raise LeRobotImportError(f"{ep.data_path}: episode {ep.index} has no frames")
    if np.any(np.diff(stamps) <= 0):
        raise LeRobotImportError(f"{ep.data_path}: episode {ep.index} timestamps are not increasing")
    t0 = int(stamps[0])
    stamps = stamps - t0
    grid = make_grid(stamps, m.control_rate_hz)
    tol = int(TOLERANCE_S * NS)
    ages = {**{c: m.camera_max_age_s for c in CAMERAS}, "state": m.state.max_age_s, "action": m.action.max_age_s}
    idx: dict[str, np.ndarray] = {}
    valid: dict[str, np.ndarray] = {}
    for name in STREAMS:
        # each stream is a column of the same rows; as-of with the timestamp tolerance (module docstring)
        idx[name], valid[name] = asof(stamps, grid + tol, int(ages[name] * NS) + tol)
    keep = np.logical_and.reduce([valid[n] for n in STREAMS])
    stats = {n: window_stats(stamps, int(grid[0]), int(grid[-1])) for n in STREAMS}
    for n in STREAMS:
        stats[n].dropped = int((~valid[n]).sum())
    rows = {n: idx[n][keep] for n in STREAMS}
    text = instruction or (ep.tasks[0] if ep.tasks else None)
    if not text and "task_index" in data:
        text = src.tasks.get(int(np.asarray(data["task_index"])[0]))
    text = text or m.instruction
    if not text:
        raise LeRobotImportError(f"episode {ep.index}: no task text; pass --instruction or set `instruction`")
    state = np.asarray(data[m.state.key], dtype=np.float32)[rows["state"]][:, cols["state"]]
    action = np.asarray(data[m.action.key], dtype=np.float32)[rows["action"]][:, cols["action"]]
    return _Plan(ep, grid[keep], rows, state, action, stats, text, data)


def _write_episode(src: LeRobotSource, plan: _Plan, m: LeRobotMapping, out: Path) -> None:
    ep = plan.ep
    with EpisodeWriter(out, int(plan.grid.size)) as w:
        for cam in CAMERAS:
            key = m.cameras[cam]
            rows = plan.rows[cam]
            if src.features[key].get("dtype") == "video":
                times = np.asarray(plan.frames["timestamp"], dtype=np.float64)[rows]
                frames = decode_video(ep.videos[key], times, f"{key}, episode {ep.index}")
            else:
                frames = src.decode_images(ep, key, plan.frames[key], rows)
            for row, rgb in enumerate(frames):
                w.write_frame(cam, row, rgb)
        streams = {n: {"key": _key_of(m, n), **plan.stats[n].as_dict()} for n in STREAMS}
        w.finish(
            plan.state,
            plan.action,
            plan.grid,
            {
                "instruction": plan.instruction,
                "source": f"{src.root.resolve()} episode {ep.index}",
                "control_rate_hz": float(m.control_rate_hz),
                "action_convention": ACTION_CONVENTION,
                "streams": {
                    **streams,
                    "lerobot": {
                        "codebase_version": src.info.get("codebase_version"),
                        "fps": src.fps,
                        "episode_index": ep.index,
                        "frames": ep.length,
                        "frame_indices": plan.rows["head"].tolist(),
                    },
                },
                "created_by": "memorywam-import-lerobot",
            },
        )


def _key_of(m: LeRobotMapping, stream: str) -> str:
    if stream in m.cameras:
        return m.cameras[stream]
    return m.state.key if stream == "state" else m.action.key


def import_dataset(
    dataset: str | Path,
    out_dir: str | Path,
    mapping: LeRobotMapping,
    *,
    instruction: str | None = None,
    episodes: Sequence[int] | None = None,
    overwrite: bool = False,
    prefix: str | None = None,
) -> ConversionReport:
    """Import every (selected) episode, all or nothing (module docstring). Raises
    LeRobotImportError / LeRobotFormatError / EpisodeError on bad input."""
    src = LeRobotSource(dataset)
    out_dir = Path(out_dir)
    for cam, key in mapping.cameras.items():
        if key not in src.features:
            raise LeRobotImportError(
                f"cameras.{cam}: key {key!r} not in the dataset (camera keys: {', '.join(src.visual_keys) or 'none'})"
            )
        if src.features[key].get("dtype") not in ("video", "image"):
            raise LeRobotImportError(f"cameras.{cam}: {key} is a {src.features[key].get('dtype')}, not video/image")
    cols = {"state": _columns(src, mapping.state, "state"), "action": _columns(src, mapping.action, "action")}
    eps = src.episodes
    if episodes is not None:
        known = {e.index for e in eps}
        unknown = [i for i in episodes if i not in known]
        if unknown:
            raise LeRobotImportError(f"--episodes: episode {unknown[0]} not in the dataset ({len(eps)} episodes)")
        eps = [e for e in eps if e.index in set(episodes)]
    for e in eps:  # cheap checks first: every file an episode needs exists
        for key in set(mapping.cameras.values()):
            if src.features[key].get("dtype") == "video" and not e.videos[key].path.is_file():
                raise LeRobotImportError(f"{e.videos[key].path}: video missing ({key}, episode {e.index})")
        if not e.data_path.is_file():
            raise LeRobotImportError(f"{e.data_path}: data file missing (episode {e.index})")
    stem = prefix if prefix is not None else f"{src.root.resolve().name}_"
    names = {e.index: f"{stem}ep{e.index:06d}.hdf5" for e in eps}
    existing = [out_dir / n for n in names.values() if (out_dir / n).exists()]
    if existing and not overwrite:
        raise LeRobotImportError(f"{existing[0]} exists (use --overwrite to replace it)")
    report = ConversionReport(bag=src.root)
    staging = out_dir / f".{stem}import.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for e in eps:
            plan = _plan_episode(src, e, mapping, cols, instruction)
            if plan.grid.size == 0:
                lost = ", ".join(f"{n}: {s.dropped}" for n, s in plan.stats.items() if s.dropped)
                raise LeRobotImportError(f"episode {e.index}: 0 frames after alignment (grid points dropped: {lost})")
            _write_episode(src, plan, mapping, staging / names[e.index])
            report.episodes.append(
                EpisodeReport(out_dir / names[e.index], int(plan.grid.size), plan.instruction, plan.stats)
            )
        for e in eps:
            os.replace(staging / names[e.index], out_dir / names[e.index])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _episode_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated episode indices, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="memorywam-import-lerobot", description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", type=Path, metavar="DATASET_DIR", help="a local LeRobot dataset (meta/info.json inside)")
    p.add_argument("--out", required=True, type=Path, help="output directory for the episodes")
    p.add_argument(
        "--mapping", type=Path, default=CONFIG_DIR / "lerobot_aloha.yaml", help="key mapping YAML (module docstring)"
    )
    p.add_argument("--instruction", default=None, help="instruction for every episode (wins over the task text)")
    p.add_argument("--episodes", type=_episode_list, default=None, help="only these episode indices, e.g. 0,3,7")
    p.add_argument("--prefix", default=None, help="output name prefix (default: the dataset folder name + '_')")
    p.add_argument("--overwrite", action="store_true", help="replace existing episode files")
    args = p.parse_args(argv)
    from rich.console import Console

    console = Console(stderr=True)
    try:
        mapping = load_mapping(args.mapping)
        report = import_dataset(
            args.dataset,
            args.out,
            mapping,
            instruction=args.instruction,
            episodes=args.episodes,
            overwrite=args.overwrite,
            prefix=args.prefix,
        )
    except ConfigError as exc:
        console.print(f"[red]mapping error:[/red] {exc}")
        return 2
    except (LeRobotImportError, LeRobotFormatError, EpisodeError, OSError) as exc:
        console.print(f"[red]{args.dataset}: {exc}[/red] (nothing written)")
        return 1
    table = summary_table([report])
    table.title = "memorywam-import-lerobot"
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
