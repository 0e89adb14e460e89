"""Synthetic rosbag2 bags for the converter tests, written with `rosbags` (no ROS).

Every camera frame is a solid colour whose red channel encodes the frame number, and every joint
value encodes the stamp it was published with, so a test can tell exactly which message the
converter picked for each grid row (and that it never picked one from the future).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

REPO = Path(__file__).resolve().parent.parent
MSG_DIR = REPO / "config" / "msg"
T0_NS = 1_700_000_000 * 1_000_000_000
H, W = 64, 80
CAM_TOPICS = {
    "head": "/cam_high/camera/color/image_raw",
    "left_wrist": "/cam_left_wrist/camera/color/image_raw",
    "right_wrist": "/cam_right_wrist/camera/color/image_raw/compressed",
}
CAM_GREEN = {"head": 40, "left_wrist": 120, "right_wrist": 200}
JOINT_NAMES = [f"left_j{i}" for i in range(7)] + [f"right_j{i}" for i in range(7)]


def red_of(frame: int) -> int:
    return (frame * 3) % 250


def typestore_with_arx() -> Any:
    ts = get_typestore(Stores.ROS2_HUMBLE)
    typs: dict[str, Any] = {}
    for f in MSG_DIR.rglob("*.msg"):
        typs.update(get_types_from_msg(f.read_text(), f"{f.parent.parent.name}/msg/{f.stem}"))
    ts.register(typs)
    return ts


def _time(ts: Any, ns: int) -> Any:
    return ts.types["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _header(ts: Any, ns: int) -> Any:
    return ts.types["std_msgs/msg/Header"](stamp=_time(ts, ns), frame_id="f")


def image_msg(ts: Any, cam: str, frame: int, stamp: int, kind: str) -> Any:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = red_of(frame), CAM_GREEN[cam], 90
    rgb[:16, :16] = (255, 0, 0)  # a pure-red corner: stays red only with the right channel order
    if kind == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
        return ts.types["sensor_msgs/msg/CompressedImage"](
            header=_header(ts, stamp),
            format="rgb8; jpeg compressed bgr8",
            data=np.frombuffer(buf.getvalue(), np.uint8),
        )
    data = rgb[..., ::-1] if kind == "bgr8" else rgb
    pad = 8  # row padding: step > width * 3
    rows = np.zeros((H, W * 3 + pad), np.uint8)
    rows[:, : W * 3] = np.ascontiguousarray(data).reshape(H, W * 3)
    return ts.types["sensor_msgs/msg/Image"](
        header=_header(ts, stamp),
        height=H,
        width=W,
        encoding=kind,
        is_bigendian=0,
        step=W * 3 + pad,
        data=rows.reshape(-1),
    )


def joint_value(stamp_ns: int, j: int, offset: float = 0.0) -> float:
    """Joint j's value in a message stamped stamp_ns: the stamp is recoverable from the value."""
    return j + offset + (stamp_ns - T0_NS) / 1e9


@dataclass
class BagSpec:
    duration_s: float = 2.0
    cam_hz: float = 30.0
    joint_hz: float = 100.0
    cmd_hz: float = 50.0
    cam_kinds: dict[str, str] = field(
        default_factory=lambda: {"head": "rgb8", "left_wrist": "bgr8", "right_wrist": "jpeg"}
    )
    drop: dict[str, list[int]] = field(default_factory=dict)  # camera -> frame numbers left out
    # clock faults (header stamps only; receive times stay true time + latency):
    repeat_stamp: dict[str, list[int]] = field(default_factory=dict)  # camera -> frames stamped like frame k-1
    shift_stamps: dict[str, tuple[int, int]] = field(default_factory=dict)  # camera -> (from frame, +ns)
    outlier_stamps: dict[str, dict[int, int]] = field(default_factory=dict)  # camera -> {frame: stamp ns}
    duplicate_state: list[int] = field(default_factory=list)  # JointState messages stored twice, +50 the 2nd
    instruction: str | None = "stack the cubes"
    seed: int = 0
    arx: bool = False  # state/action as ARX RobotStatus (state) + JointControl (action) per arm
    store_definitions: bool = True
    include_cameras: bool = True


@dataclass
class Written:
    """Ground truth of what went into the bag (header/receive stamps per stream)."""

    cams: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # cam -> [(header stamp, frame)]
    true_ns: dict[str, dict[int, int]] = field(default_factory=dict)  # cam -> {frame: when it was taken}
    state: list[int] = field(default_factory=list)  # stamps used for state
    action: list[int] = field(default_factory=list)  # stamps used for action


def write_bag(path: Path, spec: BagSpec, storage: str = "mcap") -> Written:
    rng = np.random.default_rng(spec.seed)
    ts = typestore_with_arx()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    truth = Written()
    msgs: list[tuple[int, str, str, Any]] = []  # (receive ns, topic, type, msg)
    end = T0_NS + int(spec.duration_s * 1e9)

    if spec.include_cameras:
        for cam, topic in CAM_TOPICS.items():
            kind = spec.cam_kinds[cam]
            mt = "sensor_msgs/msg/CompressedImage" if kind == "jpeg" else "sensor_msgs/msg/Image"
            truth.cams[cam], truth.true_ns[cam] = [], {}
            n = int(spec.duration_s * spec.cam_hz)
            for k in range(n):
                stamp = T0_NS + int(k / spec.cam_hz * 1e9) + int(rng.integers(-3_000_000, 3_000_000))
                if k == 0:
                    stamp = T0_NS + (0 if cam == "head" else -5_000_000)
                true = stamp
                if k in spec.repeat_stamp.get(cam, []):
                    stamp = truth.cams[cam][-1][0]
                if cam in spec.shift_stamps and k >= spec.shift_stamps[cam][0]:
                    stamp += spec.shift_stamps[cam][1]
                stamp = spec.outlier_stamps.get(cam, {}).get(k, stamp)
                if k in spec.drop.get(cam, []):
                    continue
                truth.cams[cam].append((stamp, k))
                truth.true_ns[cam][k] = true
                msgs.append((true + 8_000_000, topic, mt, (cam, k, stamp, kind)))
    period = int(1e9 / spec.joint_hz)
    t = T0_NS - 20_000_000
    while t < end + 20_000_000:
        stamp = t + int(rng.integers(-2_000_000, 2_000_000))
        truth.state.append(stamp)
        if spec.arx:
            for side, off in (("l", 0), ("r", 7)):
                msg = ts.types["arx5_arm_msg/msg/RobotStatus"](
                    header=_header(ts, stamp),
                    end_pos=np.zeros(6),
                    joint_pos=np.array([joint_value(stamp, off + j) for j in range(7)]),
                    joint_vel=np.zeros(7),
                    joint_cur=np.zeros(7),
                )
                msgs.append((stamp + 1_000_000, f"/arm_slave_{side}_status", "arx5_arm_msg/msg/RobotStatus", msg))
        else:
            order = rng.permutation(14)  # names in a different order in every message
            msg = ts.types["sensor_msgs/msg/JointState"](
                header=_header(ts, stamp),
                name=[JOINT_NAMES[i] for i in order],
                position=np.array([joint_value(stamp, int(i)) for i in order]),
                velocity=np.zeros(14),
                effort=np.zeros(0),
            )
            msgs.append((stamp + 1_000_000, "/joint_states", "sensor_msgs/msg/JointState", msg))
            if len(truth.state) - 1 in spec.duplicate_state:  # same stamp, other values, stored right after
                twin = ts.types["sensor_msgs/msg/JointState"](
                    header=_header(ts, stamp),
                    name=[JOINT_NAMES[i] for i in order],
                    position=np.array([joint_value(stamp, int(i), 50.0) for i in order]),
                    velocity=np.zeros(14),
                    effort=np.zeros(0),
                )
                msgs.append((stamp + 1_000_001, "/joint_states", "sensor_msgs/msg/JointState", twin))
        t += period
    period = int(1e9 / spec.cmd_hz)
    t = T0_NS - 30_000_000
    while t < end + 20_000_000:
        recv = t + int(rng.integers(0, 3_000_000))
        if spec.arx:  # JointControl has no header: the converter must use the receive time
            truth.action.append(recv)
            for side, off in (("l", 0), ("r", 7)):
                vals = [joint_value(recv, off + j, 100.0) for j in range(7)] + [0.0]
                msg = ts.types["arm_control/msg/JointControl"](
                    joint_pos=np.array(vals, np.float32),
                    joint_vel=np.zeros(8, np.float32),
                    joint_cur=np.zeros(8, np.float32),
                    mode=0,
                )
                msgs.append((recv, f"/joint_control_{side}", "arm_control/msg/JointControl", msg))
        else:
            truth.action.append(t)
            msg = ts.types["sensor_msgs/msg/JointState"](
                header=_header(ts, t),
                name=JOINT_NAMES,
                position=np.array([joint_value(t, j, 100.0) for j in range(14)]),
                velocity=np.zeros(0),
                effort=np.zeros(0),
            )
            msgs.append((recv, "/command", "sensor_msgs/msg/JointState", msg))
        t += period
    if spec.instruction is not None:
        msgs.append(
            (
                T0_NS + 50_000_000,
                "/instruction",
                "std_msgs/msg/String",
                ts.types["std_msgs/msg/String"](data=spec.instruction),
            )
        )

    msgs.sort(key=lambda m: m[0])
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns: dict[str, Any] = {}
        for recv, topic, mt, msg in msgs:
            if topic not in conns:
                if spec.store_definitions:
                    conns[topic] = writer.add_connection(topic, mt, typestore=ts)
                else:
                    conns[topic] = writer.add_connection(topic, mt, msgdef="", rihs01="RIHS01_" + "0" * 64)
            if isinstance(msg, tuple):  # images are built lazily (keeps memory flat)
                msg = image_msg(ts, msg[0], msg[1], msg[2], msg[3])
            writer.write(conns[topic], recv, ts.serialize_cdr(msg, mt))
    return truth


def config_dict(arx: bool = False, cam_age: float = 0.05, **top: Any) -> dict[str, Any]:
    cams = {c: {"topic": t, "max_age_s": cam_age} for c, t in CAM_TOPICS.items()}
    if arx:
        state = [
            {
                "topic": f"/arm_slave_{s}_status",
                "type": "arx5_arm_msg/msg/RobotStatus",
                "field": "joint_pos",
                "slice": [0, 7],
            }
            for s in ("l", "r")
        ]
        action = [
            {
                "topic": f"/joint_control_{s}",
                "type": "arm_control/msg/JointControl",
                "field": "joint_pos",
                "slice": [0, 7],
            }
            for s in ("l", "r")
        ]
    else:
        state = [{"topic": "/joint_states", "type": "sensor_msgs/msg/JointState", "names": JOINT_NAMES}]
        action = [{"topic": "/command", "field": "position"}]
    return {
        "control_rate_hz": 10,
        "instruction_topic": "/instruction",
        "cameras": cams,
        "state": {"max_age_s": 0.03, "sources": state},
        "action": {"max_age_s": 0.05, "sources": action},
        **top,
    }
