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
older than the stream's max age; a grid point where a stream has no such frame is a gap, counted
against that stream. So 30 Hz keeps frames 0, 3, 6, ...; 50 Hz frames 0, 5, 10, ...; a rate that
does not divide (15 Hz) the latest frame before each grid time. A gap ends the episode and the
next good grid point starts a new one (`<prefix>ep000007_part00.hdf5`, `_part01`, ...), exactly
as memorywam-convert does: the rows of an episode must be a uniform 10 Hz grid (precompute
refuses anything else). Pieces shorter than `min_episode_rows` (mapping key or
--min-episode-rows; 17 = two latent frames, as the converter) are dropped and counted. LeRobot's `action`
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
import dataclasses
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .alignment import BagPlan
from .config import ConfigError, _check_keys, _mapping, _positive, _str
from .convert import STREAMS, ConversionReport, EpisodeReport, summary_table
from .episodes import CAMERAS, EpisodeError, EpisodeWriter
from .lerobot_format import TOLERANCE_S, EpisodeRef, LeRobotFormatError, LeRobotSource, decode_video, one_line
from .sampling import NS, StreamCounts, StreamStats, asof, make_grid, runs, window_stats

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
    min_episode_rows: int = 17


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
    _check_keys(
        d, {"cameras", "state", "action", "camera_max_age_s", "control_rate_hz", "instruction", "min_episode_rows"}, ""
    )
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
        min_episode_rows=_min_rows(d.get("min_episode_rows", 17)),
    )


def _min_rows(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"min_episode_rows: expected an integer >= 1, got {value!r}")
    return value


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
class _Piece:
    """One output episode: a run of consecutive good grid points of a dataset episode."""

    part: int  # index among the kept pieces of its dataset episode
    first_grid_index: int  # index of row 0 on the dataset episode's grid
    grid: np.ndarray  # grid times, ns from the dataset episode's first frame, exactly 1/rate apart
    rows: dict[str, np.ndarray]  # stream -> dataset row per grid point
    state: np.ndarray
    action: np.ndarray
    stats: dict[str, StreamStats]


@dataclass
class _Plan:
    ep: EpisodeRef
    pieces: list[_Piece]
    counts: dict[str, StreamCounts]  # per stream: grid points of the episode without a fresh frame
    grid_points: int
    gaps: int  # gaps that split the episode
    short: int  # pieces shorter than min_episode_rows, dropped
    short_rows: int
    instruction: str
    frames: dict[str, Any]

    def name(self, stem: str, piece: _Piece) -> str:
        base = f"{stem}ep{self.ep.index:06d}"
        return f"{base}_part{piece.part:02d}.hdf5" if len(self.pieces) > 1 else f"{base}.hdf5"


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
    tol = int(TOLERANCE_S * NS)
    # up to the last frame + the tolerance: a float32 `timestamp` of 1.9 s reads 1.89999998 s, and the
    # grid point at 1.9 s must not be lost to that rounding
    grid = make_grid(np.array([0, int(stamps[-1]) + tol], dtype=np.int64), m.control_rate_hz)
    ages = {**{c: m.camera_max_age_s for c in CAMERAS}, "state": m.state.max_age_s, "action": m.action.max_age_s}
    idx: dict[str, np.ndarray] = {}
    valid: dict[str, np.ndarray] = {}
    for name in STREAMS:
        # each stream is a column of the same rows; as-of with the timestamp tolerance (module docstring)
        idx[name], valid[name] = asof(stamps, grid + tol, int(ages[name] * NS) + tol)
    keep = np.logical_and.reduce([valid[n] for n in STREAMS])
    counts = {n: StreamCounts(dropped=int((~valid[n]).sum())) for n in STREAMS}
    text = instruction or (ep.tasks[0] if ep.tasks else None)
    if not text and "task_index" in data:
        text = src.tasks.get(int(np.asarray(data["task_index"])[0]))
    text = text or m.instruction
    if not text:
        raise LeRobotImportError(f"episode {ep.index}: no task text; pass --instruction or set `instruction`")
    state_all = np.asarray(data[m.state.key], dtype=np.float32)
    action_all = np.asarray(data[m.action.key], dtype=np.float32)
    pieces: list[_Piece] = []
    found = runs(keep)
    short = short_rows = 0
    for start, stop in found:  # gaps split the episode (module docstring)
        if stop - start < m.min_episode_rows:
            short, short_rows = short + 1, short_rows + stop - start
            continue
        rows = {n: idx[n][start:stop] for n in STREAMS}
        # the frames whose stamps fall inside the piece (every stream is a column of the same rows)
        window = window_stats(stamps, int(grid[start]), int(grid[stop - 1]))
        pieces.append(
            _Piece(
                part=len(pieces),
                first_grid_index=start,
                grid=grid[start:stop],
                rows=rows,
                state=state_all[rows["state"]][:, cols["state"]],
                action=action_all[rows["action"]][:, cols["action"]],
                stats={n: StreamStats(window.messages, window.largest_gap_s) for n in STREAMS},
            )
        )
    return _Plan(ep, pieces, counts, int(grid.size), max(0, len(found) - 1), short, short_rows, text, data)


def _write_episode(src: LeRobotSource, plan: _Plan, piece: _Piece, m: LeRobotMapping, out: Path) -> None:
    ep = plan.ep
    with EpisodeWriter(out, int(piece.grid.size)) as w:
        for cam in CAMERAS:
            key = m.cameras[cam]
            rows = piece.rows[cam]
            if src.features[key].get("dtype") == "video":
                times = np.asarray(plan.frames["timestamp"], dtype=np.float64)[rows]
                frames = decode_video(ep.videos[key], times, f"{key}, episode {ep.index}")
            else:
                frames = src.decode_images(ep, key, plan.frames[key], rows)
            for row, rgb in enumerate(frames):
                w.write_frame(cam, row, rgb)
        streams = {n: {"key": _key_of(m, n), **piece.stats[n].as_dict(), **plan.counts[n].as_dict()} for n in STREAMS}
        w.finish(
            piece.state,
            piece.action,
            piece.grid,
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
                        "frame_indices": piece.rows["head"].tolist(),
                    },
                },
                "segment": {"index": ep.index, "part": piece.part, "parts": len(plan.pieces),
                            "first_grid_index": piece.first_grid_index},
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
    # an episode's file(s): <stem>ep000007.hdf5, or <stem>ep000007_part00.hdf5, ... when gaps split it
    existing = {e.index: sorted(out_dir.glob(f"{stem}ep{e.index:06d}.hdf5"))
                + sorted(out_dir.glob(f"{stem}ep{e.index:06d}_part[0-9][0-9].hdf5")) for e in eps}
    first = next((p for paths in existing.values() for p in paths), None)
    if first is not None and not overwrite:
        raise LeRobotImportError(f"{first} exists (use --overwrite to replace it)")
    report = ConversionReport(bag=src.root, plan=BagPlan())
    assert report.plan is not None
    staging = out_dir / f".{stem}import.partial"
    shutil.rmtree(staging, ignore_errors=True)
    created = not out_dir.exists()  # a failed import leaves no empty --out folder behind either
    written: list[tuple[int, str]] = []
    try:
        for e in eps:
            plan = _plan_episode(src, e, mapping, cols, instruction)
            _count(report.plan, plan, mapping)
            if not plan.pieces and not plan.short:
                lost = ", ".join(f"{n}: {c.dropped}" for n, c in plan.counts.items() if c.dropped)
                raise LeRobotImportError(f"episode {e.index}: 0 frames after alignment (grid points dropped: {lost})")
            for piece in plan.pieces:
                name = plan.name(stem, piece)
                _write_episode(src, plan, piece, mapping, staging / name)
                report.episodes.append(EpisodeReport(out_dir / name, int(piece.grid.size), plan.instruction,
                                                     piece.stats))
                written.append((e.index, name))
        if not written:
            raise LeRobotImportError(
                f"0 episodes: every piece is shorter than min_episode_rows={mapping.min_episode_rows} "
                f"({report.plan.short} pieces, {report.plan.short_rows} rows)"
            )
        for paths in existing.values():  # --overwrite: an episode's old parts never outlive it
            for old in paths:
                old.unlink()
        for _, name in written:
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
    return report


def _count(total: BagPlan, plan: _Plan, m: LeRobotMapping) -> None:
    """Add one dataset episode's drops to the report (the summary table's per-dataset row)."""
    for n, c in plan.counts.items():
        total.counts[n].add(c)
    total.gaps += plan.gaps
    total.short += plan.short
    total.short_rows += plan.short_rows
    total.segments += 1
    if plan.gaps:
        total.notes.append(f"episode {plan.ep.index}: split into {plan.gaps + 1} pieces at {plan.gaps} gap(s)")
    if plan.short:
        total.notes.append(f"episode {plan.ep.index}: {plan.short} piece(s) shorter than min_episode_rows="
                           f"{m.min_episode_rows} dropped ({plan.short_rows} rows)")


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
    p.add_argument(
        "--min-episode-rows",
        type=int,
        default=None,
        metavar="N",
        help="drop pieces (between gaps) shorter than N rows (default: the mapping's min_episode_rows, 17)",
    )
    args = p.parse_args(argv)
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True)
    try:
        mapping = load_mapping(args.mapping)
        if args.min_episode_rows is not None:
            mapping = dataclasses.replace(mapping, min_episode_rows=_min_rows(args.min_episode_rows))
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
        console.print(f"[red]mapping error:[/red] {one_line(exc)}", soft_wrap=True)
        return 2
    except (LeRobotImportError, LeRobotFormatError, EpisodeError, OSError) as exc:
        console.print(f"[red]{escape(str(args.dataset))}: {one_line(exc)}[/red] (nothing written)", soft_wrap=True)
        return 1

    for note in report.plan.notes if report.plan else []:
        console.print(f"[yellow]{escape(str(args.dataset))}:[/yellow] {escape(note)}", soft_wrap=True)
    table = summary_table([report])
    table.title = "memorywam-import-lerobot"
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
