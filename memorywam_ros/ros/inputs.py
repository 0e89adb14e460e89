"""Camera and joint-state inputs: subscribe, validate, keep the latest value with its rate and age.

Subscriptions use sensor-data QoS (best effort, keep last): a best-effort subscriber matches both
reliable publishers (realsense-ros' default, ARX's status) and best-effort ones, while a reliable
subscriber silently receives nothing from a best-effort publisher. Only the latest message matters.

Bad messages (unsupported encoding, wrong data length, zero size, an undecodable or truncated
JPEG/PNG, a stamp off by more than `camera_max_clock_offset_s`, missing joints) are dropped where
they arrive, with a throttled warning naming the camera/topic, and counted (`dropped` in
/diagnostics); they do not refresh the input's age, so a camera sending only garbage goes stale and
the node holds. A camera's age is measured from when its newest frame was *taken*, by header stamp
(runtime/stamp_clock.py: how clock offsets between hosts are handled), not when it arrived; joint
sources are aged by arrival (many robot status messages carry no stamp).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data

from memorywam_ros.ros.conversions import ImageError, StateReader, check_compressed, decode_compressed, image_to_rgb
from memorywam_ros.runtime.node_stats import RateMeter
from memorywam_ros.runtime.robot_config import IOSpec
from memorywam_ros.runtime.stamp_clock import StampClock, StampError

__all__ = ["CameraInput", "Frame", "JointInputs"]

_WARN_PERIOD_S = 5.0


def _stamp_s(stamp: Any) -> float:
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


@dataclass
class Frame:
    """The latest good frame of a camera. Compressed frames are verified on arrival and stay encoded
    until `image()` is called (in the inference thread, for the few frames that become part of a
    mosaic)."""

    stamp: float  # header stamp (s); receive time when the header is empty
    received: float  # node clock (s)
    rgb: np.ndarray | None = None  # (H, W, 3) uint8
    encoded: bytes | None = None
    format: str = ""
    time: float = 0.0  # node clock (s) when the frame was taken: stamp mapped by the camera's StampClock
    camera: str = ""

    def image(self) -> np.ndarray:
        if self.rgb is None:
            assert self.encoded is not None
            try:
                self.rgb = decode_compressed(self.encoded, self.format)
            except ImageError as e:  # verified on arrival, so not expected: still, say which camera
                raise ImageError(e.encoding, f"camera {self.camera}: {e.reason}") from None
            self.encoded = None
        return self.rgb


class CameraInput:
    def __init__(self, node: Node, name: str, topic: str, transport: str, now: Callable[[], float],
                 max_clock_offset_s: float = 1.0) -> None:
        self.name, self.topic, self.transport = name, topic, transport
        self._node, self._now = node, now
        self.meter = RateMeter()
        self.clock = StampClock(max_clock_offset_s)
        self.dropped = 0
        self._latest: Frame | None = None
        self._lock = threading.Lock()

    def subscribe(self, group: CallbackGroup) -> None:
        if self.transport == "compressed":
            from sensor_msgs.msg import CompressedImage

            self._node.create_subscription(
                CompressedImage, self.topic, self._on_compressed, qos_profile_sensor_data, callback_group=group
            )
        else:
            from sensor_msgs.msg import Image

            self._node.create_subscription(
                Image, self.topic, self._on_raw, qos_profile_sensor_data, callback_group=group
            )

    @property
    def latest(self) -> Frame | None:
        return self._latest

    def age(self, now: float) -> float | None:
        """Seconds since the newest good frame was taken (None: none yet)."""
        latest = self._latest
        return None if latest is None else max(0.0, now - latest.time)

    def update(self, rgb: np.ndarray | None, stamp: float | None, encoded: bytes | None = None,
               fmt: str = "") -> None:
        """Store a good frame (also the entry point of the pyrealsense2 source)."""
        t = self._now()
        with self._lock:  # the clock's window is per camera state: one frame at a time
            try:
                taken = self.clock.frame_time(stamp, t)
            except StampError as e:
                err: StampError | None = e
            else:
                err = None
                if self._latest is not None and taken <= self._latest.time:
                    return  # not newer than what we hold (a republished or reordered frame): no refresh
                self._latest = Frame(stamp if stamp else t, t, rgb, encoded, fmt, taken, self.name)
        if err is not None:
            self._drop(err, None)
            return
        self.meter.tick(t)

    def _drop(self, err: Exception, encoding: str | None) -> None:
        self.dropped += 1
        what = f", encoding {encoding!r}" if encoding is not None else ""
        self._node.get_logger().warning(
            f"camera {self.name} ({self.topic}): dropped a frame{what}: {err}",
            throttle_duration_sec=_WARN_PERIOD_S,
        )

    def _on_raw(self, msg: Any) -> None:
        try:
            rgb = image_to_rgb(msg)
        except ImageError as e:
            self._drop(e, e.encoding)
            return
        except Exception as e:  # never let one malformed message stop the node
            self._drop(e, str(getattr(msg, "encoding", "?")))
            return
        self.update(rgb, _stamp_s(msg.header.stamp))

    def _on_compressed(self, msg: Any) -> None:
        try:
            data, rgb = check_compressed(msg)
        except ImageError as e:
            self._drop(e, e.encoding)
            return
        except Exception as e:
            self._drop(e, str(getattr(msg, "format", "?")))
            return
        self.update(rgb, _stamp_s(msg.header.stamp), encoded=None if rgb is not None else data, fmt=str(msg.format))


class _JointSource:
    def __init__(self, spec: IOSpec) -> None:
        self.spec = spec
        self.reader = StateReader(spec)
        self.meter = RateMeter()
        self.value: np.ndarray | None = None
        self.dropped = 0


class JointInputs:
    """The measured joint vector, assembled from one or more state topics (robot config `state`)."""

    def __init__(self, node: Node, specs: tuple[IOSpec, ...], num_joints: int, now: Callable[[], float]):
        if not specs:
            raise ValueError("robot config has no `state` entries: nowhere to read the joints from")
        self._node, self._now = node, now
        self.num_joints = num_joints
        self.sources = [_JointSource(s) for s in specs]
        self._lock = threading.Lock()

    def subscribe(self, group: CallbackGroup) -> None:
        for src in self.sources:
            self._node.create_subscription(
                src.reader.msg_type,
                src.spec.topic,
                lambda msg, src=src: self._on_msg(src, msg),
                qos_profile_sensor_data,
                callback_group=group,
            )

    def _on_msg(self, src: _JointSource, msg: Any) -> None:
        try:
            value = src.reader.read(msg)
            if not np.all(np.isfinite(value)):
                raise ValueError("non-finite joint positions")
        except Exception as e:
            src.dropped += 1
            self._node.get_logger().warning(
                f"joint state {src.spec.topic} ({src.spec.type}): dropped a message: {e}",
                throttle_duration_sec=_WARN_PERIOD_S,
            )
            return
        with self._lock:
            src.value = value
        src.meter.tick(self._now())

    def vector(self) -> np.ndarray | None:
        """All joints, or None until every source has reported once."""
        with self._lock:
            if any(s.value is None for s in self.sources):
                return None
            out = np.empty(self.num_joints, dtype=np.float64)
            for s in self.sources:
                out[s.spec.start : s.spec.stop] = s.value
            return out

    def ages(self, now: float) -> dict[str, float | None]:
        return {f"joints:{s.spec.topic}": s.meter.age(now) for s in self.sources}
