"""First pass over a bag: stamps of every camera message and joint vectors of every state/action
source, gathered per topic in storage (= receive) order, with each message's receive time (the
pixels are decoded later, only for the frames that make it onto the grid). Sorting, repeated
stamps and clock jumps are alignment.py's business: it needs the storage order to tell them apart."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .bagio import BagSource, header_stamp_from_cdr
from .config import ConvertConfig, SourceConfig


class ConversionError(RuntimeError):
    """A bag that is readable but cannot become an episode (topics, types, alignment)."""


@dataclass
class CameraStream:
    topic: str
    msgtype: str
    stamps: np.ndarray  # int64, storage order (message k of the topic is stamps[k])
    recv: np.ndarray  # int64 bag receive time of each message
    header_stamps: bool = True  # stamps are header.stamp (False: bag receive time)


@dataclass
class JointSource:
    cfg: SourceConfig
    msgtype: str
    stamps: np.ndarray  # int64, storage order
    recv: np.ndarray  # int64 bag receive time of each message
    values: np.ndarray  # float64 (n, width)
    skipped: int = 0  # messages on the topic that lacked the configured joint names


@dataclass
class FirstPass:
    cameras: dict[str, CameraStream]
    state: list[JointSource]
    action: list[JointSource]
    instructions: list[tuple[int, str]] = field(default_factory=list)  # (receive ns, text), sorted
    split_marks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def _stamp_fn(bag: BagSource, msgtype: str, mode: str, topic: str) -> bool:
    """Whether to take header.stamp (True) or the bag receive time (False)."""
    has = bag.has_header(msgtype)
    if mode == "header" and not has:
        raise ConversionError(f"{topic}: stamp: header requested but {msgtype} has no std_msgs/Header")
    return has and mode != "receive"


def _extractor(src: SourceConfig, msgtype: str) -> Callable[[Any], np.ndarray | None]:
    """Function message -> joint values (or None when a message lacks the configured names)."""
    fieldname = src.field or ("position" if msgtype == "sensor_msgs/msg/JointState" else None)
    if fieldname is None:
        raise ConversionError(f"{src.topic} ({msgtype}): set `field` (e.g. joint_pos) for this source")
    cache: dict[tuple[str, ...], np.ndarray | None] = {}

    def get(msg: Any) -> np.ndarray | None:
        try:
            raw = np.asarray(getattr(msg, fieldname), dtype=np.float64).reshape(-1)
        except AttributeError:
            raise ConversionError(f"{src.topic} ({msgtype}) has no field {fieldname!r}") from None
        if src.names is not None:
            names = tuple(getattr(msg, "name", ()))
            if names not in cache:
                pos = {n: i for i, n in enumerate(names)}
                cache[names] = np.array([pos[n] for n in src.names]) if all(n in pos for n in src.names) else None
            sel = cache[names]
            if sel is None or sel.max() >= raw.size:
                return None
            return raw[sel]
        if src.slice is not None:
            if raw.size < src.slice[1]:
                raise ConversionError(f"{src.topic}: {fieldname} has {raw.size} values, slice needs {src.slice[1]}")
            return raw[src.slice[0] : src.slice[1]]
        if src.indices is not None:
            if raw.size <= max(src.indices):
                raise ConversionError(
                    f"{src.topic}: {fieldname} has {raw.size} values, indices need {max(src.indices) + 1}"
                )
            return raw[list(src.indices)]
        return raw

    return get


def check_topics(bag: BagSource, cfg: ConvertConfig, split_topic: str | None) -> dict[str, str]:
    """Validate that the bag has the configured topics with usable types; topic -> msgtype."""
    found = ", ".join(f"{t} ({i.msgtype}, {i.count} msgs)" for t, i in sorted(bag.topics.items())) or "none"
    cams = {name: c.topic for name, c in cfg.cameras.items()}
    missing = {n: t for n, t in cams.items() if t not in bag.topics}
    if missing:
        what = "no camera topics" if len(missing) == len(cams) else "missing camera topic(s)"
        raise ConversionError(
            f"{what}: configured {', '.join(f'{n}={t}' for n, t in missing.items())} not in the bag; "
            f"topics found: {found}"
        )
    types: dict[str, str] = {}
    for name, cam in cfg.cameras.items():
        mt = bag.topics[cam.topic].msgtype
        if mt not in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"):
            raise ConversionError(f"camera {name} topic {cam.topic} has type {mt}, not Image/CompressedImage")
        if bag.topics[cam.topic].count == 0:
            raise ConversionError(f"camera {name} topic {cam.topic} has no messages in the bag")
        types[cam.topic] = mt
    for stream_name, stream in (("state", cfg.state), ("action", cfg.action)):
        for src in stream.sources:
            if src.topic not in bag.topics:
                raise ConversionError(f"{stream_name} topic {src.topic} not in the bag; topics found: {found}")
            mt = bag.topics[src.topic].msgtype
            if src.type and src.type != mt:
                raise ConversionError(f"{stream_name} topic {src.topic}: config says {src.type}, bag has {mt}")
            types[src.topic] = mt
    extra = [t for t in (cfg.instruction_topic, split_topic) if t and t in bag.topics]
    if split_topic and split_topic not in bag.topics:
        raise ConversionError(f"split topic {split_topic} not in the bag; topics found: {found}")
    for t in extra:
        types[t] = bag.topics[t].msgtype
    for topic, mt in types.items():
        if not bag.has_type(mt):
            raise ConversionError(
                f"message type {mt} of {topic} is unknown: the bag stores no definition for it; "
                f"pass its .msg file with --msg (e.g. config/msg/<package>/msg/<Type>.msg)"
            )
    return types


def first_pass(
    bag: BagSource,
    cfg: ConvertConfig,
    types: dict[str, str],
    split_topic: str | None,
    progress: Callable[[int], None] | None = None,
) -> FirstPass:
    cam_by_topic = {c.topic: (name, c) for name, c in cfg.cameras.items()}
    cam_header = {c.topic: _stamp_fn(bag, types[c.topic], c.stamp, c.topic) for c in cfg.cameras.values()}
    sources: list[tuple[str, SourceConfig]] = [("state", s) for s in cfg.state.sources]
    sources += [("action", s) for s in cfg.action.sources]
    by_topic: dict[str, list[int]] = {}
    for i, (_, s) in enumerate(sources):
        by_topic.setdefault(s.topic, []).append(i)
    extract = [_extractor(s, types[s.topic]) for _, s in sources]
    src_header = [_stamp_fn(bag, types[s.topic], s.stamp, s.topic) for _, s in sources]
    src_stamps: list[list[int]] = [[] for _ in sources]
    src_recv: list[list[int]] = [[] for _ in sources]
    src_values: list[list[np.ndarray]] = [[] for _ in sources]
    skipped = [0] * len(sources)
    cam_stamps: dict[str, list[int]] = {t: [] for t in cam_by_topic}
    cam_recv: dict[str, list[int]] = {t: [] for t in cam_by_topic}
    instructions: list[tuple[int, str]] = []
    marks: list[int] = []
    instr_topic = cfg.instruction_topic if cfg.instruction_topic in types else None

    wanted = list(dict.fromkeys([*cam_by_topic, *by_topic, *(t for t in (instr_topic, split_topic) if t)]))
    for n, (topic, t_recv, raw) in enumerate(bag.messages(wanted)):
        if progress is not None and n % 256 == 0:
            progress(n)
        if topic in cam_by_topic:
            cam_stamps[topic].append(header_stamp_from_cdr(raw) if cam_header[topic] else t_recv)
            cam_recv[topic].append(t_recv)
            continue
        if topic in by_topic:
            msg = bag.deserialize(raw, types[topic])
            for i in by_topic[topic]:
                values = extract[i](msg)
                if values is None:
                    skipped[i] += 1
                    continue
                if src_header[i]:
                    st = msg.header.stamp
                    src_stamps[i].append(st.sec * 1_000_000_000 + st.nanosec)
                else:
                    src_stamps[i].append(t_recv)
                src_recv[i].append(t_recv)
                src_values[i].append(values)
        if topic == instr_topic:
            msg = bag.deserialize(raw, types[topic])
            instructions.append((t_recv, str(getattr(msg, "data", ""))))
        if topic == split_topic:
            if bag.has_header(types[topic]):
                marks.append(header_stamp_from_cdr(raw))
            else:
                marks.append(t_recv)

    cameras: dict[str, CameraStream] = {}
    for topic, (name, _) in cam_by_topic.items():
        st, rt = (np.asarray(x[topic], dtype=np.int64) for x in (cam_stamps, cam_recv))
        cameras[name] = CameraStream(topic, types[topic], st, rt, cam_header[topic])
    state: list[JointSource] = []
    action: list[JointSource] = []
    for i, (stream_name, s) in enumerate(sources):
        if not src_values[i]:
            why = f" ({skipped[i]} messages lacked joint names {list(s.names or ())})" if skipped[i] else ""
            raise ConversionError(f"{stream_name} source {s.key}: no usable messages{why}")
        widths = {v.size for v in src_values[i]}
        if len(widths) != 1:
            raise ConversionError(f"{stream_name} source {s.key}: message width varies {sorted(widths)}")
        st, rt = (np.asarray(x[i], dtype=np.int64) for x in (src_stamps, src_recv))
        js = JointSource(s, types[s.topic], st, rt, np.stack(src_values[i]), skipped[i])
        (state if stream_name == "state" else action).append(js)
    for stream_name, js_list in (("state", state), ("action", action)):
        width = sum(j.values.shape[1] for j in js_list)
        if width != cfg.dof:
            parts = " + ".join(f"{j.cfg.key}:{j.values.shape[1]}" for j in js_list)
            raise ConversionError(f"{stream_name}: sources give {width} values ({parts}), config dof is {cfg.dof}")
    instructions.sort(key=lambda x: x[0])
    return FirstPass(cameras, state, action, instructions, np.asarray(sorted(marks), dtype=np.int64))
