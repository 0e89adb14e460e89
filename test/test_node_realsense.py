"""pyrealsense2 camera source, fed by `rs.software_device()` (no camera, no USB)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

try:
    import pyrealsense2 as rs
except ImportError as e:  # the wheel needs Debian's libusb-1.0-0
    pytest.skip(f"pyrealsense2 not importable ({e}); pip install pyrealsense2 + libusb-1.0-0",
                allow_module_level=True)

from memorywam_ros.ros.realsense_source import RealSenseSource


def _software_color_sensor(width: int, height: int, fmt):
    dev = rs.software_device()
    sensor = dev.add_sensor("Color")
    intr = rs.intrinsics()
    intr.width, intr.height, intr.ppx, intr.ppy, intr.fx, intr.fy = width, height, width / 2, height / 2, 50, 50
    intr.model, intr.coeffs = rs.distortion.none, [0.0] * 5
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp = rs.stream.color, 0, 0, width, height, 30, 3
    vs.fmt, vs.intrinsics = fmt, intr
    profile = sensor.add_video_stream(vs)
    return dev, sensor, profile


def _inject(sensor, profile, pixels: np.ndarray, n: int, timestamp_ms: float, domain) -> None:
    f = rs.software_video_frame()
    f.pixels, f.stride, f.bpp = pixels, pixels.shape[1] * 3, 3
    f.timestamp, f.domain, f.frame_number = timestamp_ms, domain, n
    f.profile = profile.as_video_stream_profile()
    sensor.on_video_frame(f)


@pytest.mark.parametrize("fmt", ["rgb8", "bgr8"])
def test_software_device_frames_reach_the_receiver(fmt) -> None:
    got: list[tuple[str, np.ndarray, float | None]] = []
    event = threading.Event()

    def on_frame(name, rgb, stamp):
        got.append((name, rgb, stamp))
        if len(got) == 2:
            event.set()

    src = RealSenseSource({"head": "123"}, 64, 48, 30, on_frame)
    _dev, sensor, profile = _software_color_sensor(64, 48, getattr(rs.format, fmt))
    sensor.open(profile)
    sensor.start(src.callback_for("head"))
    rgb = (np.arange(48 * 64 * 3) % 251).astype(np.uint8).reshape(48, 64, 3)
    wire = rgb[:, :, ::-1].copy() if fmt == "bgr8" else rgb
    try:
        _inject(sensor, profile, wire, 1, 1_700_000_000_123.0, rs.timestamp_domain.system_time)
        _inject(sensor, profile, wire, 2, 5.0, rs.timestamp_domain.hardware_clock)
        assert event.wait(5.0), "no frames delivered"
    finally:
        sensor.stop()
        sensor.close()
    name, out, stamp = got[0]
    assert name == "head" and out.shape == (48, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)  # RGB whatever the wire order, and a copy
    assert stamp == pytest.approx(1_700_000_000.123)  # system time: epoch seconds
    assert got[1][2] is None  # hardware clock: not comparable, receiver uses arrival time
    assert src.errors == 0


def test_missing_serials_fail_clearly() -> None:
    with pytest.raises(ValueError, match="serial"):
        RealSenseSource({"head": "1", "left_wrist": ""}, 640, 480, 30, lambda *a: None)
    src = RealSenseSource({"head": "_000000000000"}, 640, 480, 30, lambda *a: None)
    with pytest.raises(RuntimeError, match="not found"):
        src.start()
