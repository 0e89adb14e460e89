"""Converter configuration: which bag topics become which episode streams.

The YAML file (`config/record_topics.yaml`) is both the recording set-up (its topics are what
`ros2 bag record` should capture, see docs/recording.md) and the converter's configuration:

```yaml
control_rate_hz: 10            # grid rate; episodes are written at this rate
dof: 14                        # width of state and action after concatenating the sources
instruction: null              # fallback instruction text (CLI > instruction topic > this)
instruction_topic: /instruction          # std_msgs/msg/String, optional
split_topic: null              # any topic; each message starts a new episode (optional)
min_episode_rows: 17           # shorter pieces (between gaps) are dropped and counted
max_latency_spread_s: 0.5      # paired messages' (receive - stamp) may differ this much
cameras:                       # exactly head, left_wrist, right_wrist
  head:       {topic: /cam_high/camera/color/image_raw/compressed, max_age_s: 0.1}
  left_wrist: {topic: ..., max_age_s: 0.1, type: sensor_msgs/msg/CompressedImage}
  right_wrist: {...}
state:                         # measured joints, sources concatenated in order (left, then right)
  max_age_s: 0.05
  sources:
    - {topic: /joint_states, type: sensor_msgs/msg/JointState, field: position, names: [...]}
action:                        # commanded joints (command topic or master-arm status)
  max_age_s: 0.1
  sources:
    - {topic: /arm_master_l_status, type: arx5_arm_msg/msg/RobotStatus, field: joint_pos, slice: [0, 7]}
    - {topic: /arm_master_r_status, type: arx5_arm_msg/msg/RobotStatus, field: joint_pos, slice: [0, 7]}
msg_paths: [msg]               # .msg files or folders (<pkg>/msg/<Type>.msg), relative to this file
```

Per source: `topic` (required), `type` (optional hint, checked against the bag), `field`
(message attribute holding the values; default `position` for JointState), `names` (select by
joint name from the message's parallel `name` list, JointState style), `slice: [start, stop]` or
`indices: [...]` (select by position), `stamp: auto|header|receive` (auto = header.stamp when the
message has a header, otherwise the bag receive time; JointControl has no header).

`min_episode_rows` and `max_latency_spread_s` are the alignment rules' knobs (alignment.py):
an episode is split at every gap, pieces shorter than `min_episode_rows` rows are dropped (17 =
two latent frames), and a grid row whose picked messages' latencies (receive time minus stamp)
differ by more than `max_latency_spread_s` pairs different clocks and is dropped.

Errors are `ConfigError` and name the offending key (e.g. `state.sources[1].slice`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CAMERA_NAMES: tuple[str, ...] = ("head", "left_wrist", "right_wrist")
STAMP_MODES: tuple[str, ...] = ("auto", "header", "receive")


class ConfigError(ValueError):
    """Invalid converter configuration; the message names the key."""


@dataclass(frozen=True)
class CameraConfig:
    topic: str
    max_age_s: float = 0.1
    type: str | None = None
    stamp: str = "auto"


@dataclass(frozen=True)
class SourceConfig:
    topic: str
    type: str | None = None
    field: str | None = None
    names: tuple[str, ...] | None = None
    slice: tuple[int, int] | None = None
    indices: tuple[int, ...] | None = None
    stamp: str = "auto"

    @property
    def key(self) -> str:
        """Short unique-enough label for reports (topic, plus names/slice when given)."""
        if self.names:
            return f"{self.topic}[{self.names[0]}..{self.names[-1]}]"
        if self.slice:
            return f"{self.topic}[{self.slice[0]}:{self.slice[1]}]"
        return self.topic


@dataclass(frozen=True)
class JointStreamConfig:
    sources: tuple[SourceConfig, ...]
    max_age_s: float = 0.05


@dataclass(frozen=True)
class ConvertConfig:
    cameras: dict[str, CameraConfig]
    state: JointStreamConfig
    action: JointStreamConfig
    control_rate_hz: float = 10.0
    dof: int = 14
    instruction: str | None = None
    instruction_topic: str | None = None
    split_topic: str | None = None
    msg_paths: tuple[Path, ...] = field(default_factory=tuple)
    min_episode_rows: int = 17
    max_latency_spread_s: float = 0.5

    def topics(self) -> list[str]:
        """Every topic the converter reads (and that recording must capture)."""
        out = [c.topic for c in self.cameras.values()]
        for stream in (self.state, self.action):
            out += [s.topic for s in stream.sources]
        for extra in (self.instruction_topic, self.split_topic):
            if extra:
                out.append(extra)
        return list(dict.fromkeys(out))


# ---------------------------------------------------------------- validation helpers


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
    return value


def _check_keys(d: dict[str, Any], allowed: set[str], key: str) -> None:
    # Unknown keys are errors: a typo such as `max_age` would otherwise silently use the default.
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ConfigError(f"{_k(key, unknown[0])}: unknown key (allowed: {', '.join(sorted(allowed))})")


def _k(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _str(d: dict[str, Any], name: str, key: str, required: bool = False) -> str | None:
    v = d.get(name)
    if v is None:
        if required:
            raise ConfigError(f"{_k(key, name)}: required")
        return None
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{_k(key, name)}: expected a non-empty string, got {v!r}")
    return v


def _positive(d: dict[str, Any], name: str, key: str, default: float) -> float:
    v = d.get(name, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise ConfigError(f"{_k(key, name)}: expected a positive number, got {v!r}")
    return float(v)


def _stamp(d: dict[str, Any], key: str) -> str:
    v = d.get("stamp", "auto")
    if v not in STAMP_MODES:
        raise ConfigError(f"{_k(key, 'stamp')}: expected one of {STAMP_MODES}, got {v!r}")
    return str(v)


def _source(raw: Any, key: str) -> SourceConfig:
    d = _mapping(raw, key)
    _check_keys(d, {"topic", "type", "field", "names", "slice", "indices", "stamp"}, key)
    names = d.get("names")
    if names is not None and (not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names)):
        raise ConfigError(f"{key}.names: expected a non-empty list of joint names")
    sl = d.get("slice")
    if sl is not None and (
        not isinstance(sl, list)
        or len(sl) != 2
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in sl)
        or not 0 <= sl[0] < sl[1]
    ):
        raise ConfigError(f"{key}.slice: expected [start, stop] with 0 <= start < stop, got {sl!r}")
    idx = d.get("indices")
    if idx is not None and (
        not isinstance(idx, list)
        or not idx
        or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in idx)
    ):
        raise ConfigError(f"{key}.indices: expected a non-empty list of non-negative integers")
    if sum(x is not None for x in (names, sl, idx)) > 1:
        raise ConfigError(f"{key}: give at most one of names, slice, indices")
    return SourceConfig(
        topic=_str(d, "topic", key, required=True) or "",
        type=_str(d, "type", key),
        field=_str(d, "field", key),
        names=tuple(names) if names is not None else None,
        slice=(sl[0], sl[1]) if sl is not None else None,
        indices=tuple(idx) if idx is not None else None,
        stamp=_stamp(d, key),
    )


def _joint_stream(raw: Any, key: str, default_age: float) -> JointStreamConfig:
    d = _mapping(raw, key)
    _check_keys(d, {"sources", "max_age_s"}, key)
    sources = d.get("sources")
    if not isinstance(sources, list) or not sources:
        raise ConfigError(f"{key}.sources: expected a non-empty list of sources")
    return JointStreamConfig(
        sources=tuple(_source(s, f"{key}.sources[{i}]") for i, s in enumerate(sources)),
        max_age_s=_positive(d, "max_age_s", key, default_age),
    )


def config_from_dict(raw: Any, base_dir: Path | None = None) -> ConvertConfig:
    """Validate a parsed YAML mapping; relative `msg_paths` resolve against `base_dir`."""
    d = _mapping(raw, "<top level>")
    _check_keys(
        d,
        {
            "control_rate_hz",
            "dof",
            "instruction",
            "instruction_topic",
            "split_topic",
            "cameras",
            "state",
            "action",
            "msg_paths",
            "min_episode_rows",
            "max_latency_spread_s",
        },
        "",
    )
    cams_raw = _mapping(d.get("cameras"), "cameras")
    missing = [c for c in CAMERA_NAMES if c not in cams_raw]
    if missing:
        raise ConfigError(f"cameras.{missing[0]}: required (cameras are {', '.join(CAMERA_NAMES)})")
    _check_keys(cams_raw, set(CAMERA_NAMES), "cameras")
    cameras: dict[str, CameraConfig] = {}
    for name in CAMERA_NAMES:
        key = f"cameras.{name}"
        c = _mapping(cams_raw[name], key)
        _check_keys(c, {"topic", "max_age_s", "type", "stamp"}, key)
        cameras[name] = CameraConfig(
            topic=_str(c, "topic", key, required=True) or "",
            max_age_s=_positive(c, "max_age_s", key, 0.1),
            type=_str(c, "type", key),
            stamp=_stamp(c, key),
        )
    dof, min_rows = d.get("dof", 14), d.get("min_episode_rows", 17)
    for name, value in (("dof", dof), ("min_episode_rows", min_rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
    msg_paths_raw = d.get("msg_paths", []) or []
    if not isinstance(msg_paths_raw, list) or not all(isinstance(p, str) for p in msg_paths_raw):
        raise ConfigError("msg_paths: expected a list of paths")
    base = base_dir or Path.cwd()
    msg_paths = tuple((base / p) if not Path(p).is_absolute() else Path(p) for p in msg_paths_raw)
    return ConvertConfig(
        cameras=cameras,
        state=_joint_stream(d.get("state"), "state", 0.05),
        action=_joint_stream(d.get("action"), "action", 0.1),
        control_rate_hz=_positive(d, "control_rate_hz", "", 10.0),
        dof=dof,
        instruction=_str(d, "instruction", ""),
        instruction_topic=_str(d, "instruction_topic", ""),
        split_topic=_str(d, "split_topic", ""),
        msg_paths=msg_paths,
        min_episode_rows=min_rows,
        max_latency_spread_s=_positive(d, "max_latency_spread_s", "", 0.5),
    )


def load_config(path: str | Path) -> ConvertConfig:
    """Read and validate a converter YAML file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from exc
    try:
        return config_from_dict(raw, base_dir=path.parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def default_config_path() -> Path:
    """The shipped `config/record_topics.yaml` (source checkout or installed share dir)."""
    here = Path(__file__).resolve().parent.parent / "config" / "record_topics.yaml"
    if here.exists():
        return here
    try:  # installed with colcon: <prefix>/share/memorywam_ros/config
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("memorywam_ros")) / "config" / "record_topics.yaml"
    except Exception:
        return here
