"""Optional camera source: three RealSense cameras read directly with pyrealsense2 (no camera nodes).

Why: it saves three realsense2_camera processes and a serialise/deserialise of every frame
(rclpy's image deserialisation is slow, ros2/rclpy#836), at the price of not having the images on
the ROS graph (no bag of them). Select it with `camera_source: realsense` and the
`cameras.<name>.serial` parameters.

Frames arrive on librealsense's own threads through `pipeline.start(config, callback)`; the
callback copies the pixels out (librealsense reuses its buffers after the callback) and hands
(name, rgb, stamp) to `on_frame`. Stamps: in the system/global time domains librealsense gives
host-based epoch milliseconds, comparable with the ROS system clock; in the hardware domain it
does not, so `stamp` is None and the receiver uses its arrival time.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["RealSenseSource", "frame_to_rgb"]

OnFrame = Callable[[str, np.ndarray, "float | None"], None]


def frame_to_rgb(frame: Any) -> tuple[np.ndarray, float | None]:
    """A pyrealsense2 colour frame (or a frameset holding one) → ((H, W, 3) uint8 RGB copy, stamp s)."""
    import pyrealsense2 as rs

    if frame.is_frameset():
        frame = frame.as_frameset().get_color_frame()
        if not frame:
            raise ValueError("frameset without a colour frame")
    vf = frame.as_video_frame()
    fmt = vf.get_profile().format()
    if fmt not in (rs.format.rgb8, rs.format.bgr8):
        raise ValueError(f"colour format {fmt} not supported; configure rgb8")
    h, w = vf.get_height(), vf.get_width()
    stride = vf.get_stride_in_bytes()
    buf = np.asanyarray(vf.get_data()).reshape(-1)
    img = buf[: h * stride].reshape(h, stride)[:, : 3 * w].reshape(h, w, 3)
    img = img[:, :, ::-1].copy() if fmt == rs.format.bgr8 else img.copy()
    domain = vf.get_frame_timestamp_domain()
    stamp = None
    if domain in (rs.timestamp_domain.system_time, rs.timestamp_domain.global_time):
        stamp = vf.get_timestamp() * 1e-3
    return img, stamp


class RealSenseSource:
    def __init__(
        self, serials: dict[str, str], width: int, height: int, fps: int, on_frame: OnFrame, log: Any = None
    ) -> None:
        missing = [name for name, serial in serials.items() if not serial]
        if missing:
            raise ValueError(f"camera_source realsense needs cameras.<name>.serial for {missing}")
        self.serials = dict(serials)
        self.width, self.height, self.fps = width, height, fps
        self._on_frame = on_frame
        self._log = log
        self._pipelines: list[Any] = []
        self.errors = 0
        self._lock = threading.Lock()

    def callback_for(self, name: str) -> Callable[[Any], None]:
        def cb(frame: Any) -> None:
            try:
                rgb, stamp = frame_to_rgb(frame)
            except Exception as e:  # librealsense would swallow it; count and report instead
                with self._lock:
                    self.errors += 1
                if self._log is not None:
                    self._log.warning(f"realsense {name}: dropped a frame: {e}", throttle_duration_sec=5.0)
                return
            self._on_frame(name, rgb, stamp)

        return cb

    def start(self) -> None:
        import pyrealsense2 as rs

        ctx = rs.context()
        present = {d.get_info(rs.camera_info.serial_number) for d in ctx.query_devices()}
        absent = {n: s for n, s in self.serials.items() if s.lstrip("_") not in present}
        if absent:
            raise RuntimeError(f"RealSense cameras not found: {absent}; connected: {sorted(present) or 'none'}")
        for name, serial in self.serials.items():
            cfg = rs.config()
            cfg.enable_device(serial.lstrip("_"))
            cfg.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
            pipe = rs.pipeline(ctx)
            pipe.start(cfg, self.callback_for(name))
            self._pipelines.append(pipe)

    def stop(self) -> None:
        for pipe in self._pipelines:
            with contextlib.suppress(RuntimeError):  # already stopped
                pipe.stop()
        self._pipelines.clear()
