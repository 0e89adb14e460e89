"""Message ↔ numpy conversion and field mappings resolved by type name (ROS message packages, no graph)."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="ROS 2 message packages (pip wheels or a sourced ROS 2) needed")

from PIL import Image as PILImage
from sensor_msgs.msg import CompressedImage, Image, Imu, JointState
from std_msgs.msg import Float64MultiArray

from memorywam_ros.ros.conversions import (
    CommandWriter,
    ImageError,
    StateReader,
    check_compressed,
    chunk_to_trajectory,
    compressed_to_rgb,
    image_to_rgb,
    resolve_msg_type,
    rgb_to_image,
)
from memorywam_ros.runtime.robot_config import IOSpec, parse_field_spec

NAMES = tuple(f"j{i}" for i in range(14))


def _rgb(h: int = 6, w: int = 5) -> np.ndarray:
    return (np.arange(h * w * 3) % 251).astype(np.uint8).reshape(h, w, 3)


def test_raw_rgb8_and_bgr8_roundtrip() -> None:
    rgb = _rgb()
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(rgb)), rgb)
    np.testing.assert_array_equal(image_to_rgb(rgb_to_image(rgb, encoding="bgr8")), rgb)


def test_raw_row_padding_is_skipped() -> None:
    rgb = _rgb(4, 3)
    msg = Image(height=4, width=3, encoding="rgb8", step=12)  # 3 bytes of padding per row
    padded = np.zeros((4, 12), np.uint8)
    padded[:, :9] = rgb.reshape(4, 9)
    msg.data = padded.tobytes()
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"encoding": "mono8", "height": 2, "width": 2, "step": 2, "data": bytes(4)}, "unsupported encoding"),
        ({"encoding": "16UC1", "height": 2, "width": 2, "step": 4, "data": bytes(8)}, "unsupported encoding"),
        ({"encoding": "rgb8", "height": 0, "width": 0, "step": 0, "data": b""}, "zero-size"),
        ({"encoding": "rgb8", "height": 2, "width": 2, "step": 6, "data": bytes(11)}, "data length"),
        ({"encoding": "rgb8", "height": 2, "width": 2, "step": 5, "data": bytes(10)}, "step"),
    ],
)
def test_raw_bad_messages_raise_image_error(kwargs, match) -> None:
    with pytest.raises(ImageError, match=match) as ei:
        image_to_rgb(Image(**kwargs))
    assert ei.value.encoding == kwargs["encoding"]


def _compressed(rgb: np.ndarray, fmt: str, mode: str = "RGB") -> CompressedImage:
    buf = io.BytesIO()
    PILImage.fromarray(rgb).convert(mode).save(buf, format=fmt)
    return CompressedImage(format=f"rgb8; {fmt.lower()} compressed bgr8", data=buf.getvalue())


def test_compressed_png_exact_and_jpeg_close() -> None:
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (200, 30, 10)
    np.testing.assert_array_equal(compressed_to_rgb(_compressed(rgb, "PNG")), rgb)
    out = compressed_to_rgb(_compressed(rgb, "JPEG"))
    assert out.shape == (16, 16, 3) and np.abs(out.astype(int) - rgb).mean() < 8


def test_compressed_bad_messages_raise_image_error() -> None:
    with pytest.raises(ImageError, match="empty"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b""))
    with pytest.raises(ImageError, match="decode"):
        compressed_to_rgb(CompressedImage(format="jpeg", data=b"\xff\xd8garbage"))
    with pytest.raises(ImageError, match="colour"):
        compressed_to_rgb(_compressed(np.zeros((4, 4, 3), np.uint8), "PNG", mode="L"))


def _camera_like_jpeg(h: int = 96, w: int = 128) -> bytes:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], -1) + rng.integers(0, 30, (h, w, 3))
    buf = io.BytesIO()
    PILImage.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_jpeg_is_refused_on_arrival(keep: float) -> None:
    """A truncated JPEG has a perfect header: the arrival check must read the whole stream."""
    data = _camera_like_jpeg()
    good, rgb = check_compressed(CompressedImage(format="jpeg", data=data))
    assert good == data and rgb is None  # a JPEG stays encoded until it becomes part of a mosaic
    with pytest.raises(ImageError, match="truncated"):
        check_compressed(CompressedImage(format="jpeg", data=data[: int(len(data) * keep)]))


def test_png_is_decoded_once_on_arrival() -> None:
    rgb = _rgb(8, 8)
    data, out = check_compressed(_compressed(rgb, "PNG"))
    np.testing.assert_array_equal(out, rgb)
    with pytest.raises(ImageError):
        check_compressed(CompressedImage(format="png", data=data[: len(data) // 2]))


def test_resolve_msg_type() -> None:
    assert resolve_msg_type("sensor_msgs/msg/JointState") is JointState
    assert resolve_msg_type("std_msgs/Float64MultiArray") is Float64MultiArray
    with pytest.raises(ValueError, match="not importable"):
        resolve_msg_type("arx5_arm_msg_that_is_absent/msg/RobotStatus")
    with pytest.raises(ValueError, match="has no"):
        resolve_msg_type("sensor_msgs/msg/NoSuchType")
    with pytest.raises(ValueError, match="bad message type"):
        resolve_msg_type("JointState")


def _spec(type_: str, start: int, stop: int, field: str | None = None, names=None) -> IOSpec:
    return IOSpec("/t", type_, start, stop, parse_field_spec(field) if field else None,
                  tuple(names) if names else NAMES[start:stop])


def test_state_reader_joint_state_by_name_in_any_order() -> None:
    reader = StateReader(_spec("sensor_msgs/msg/JointState", 0, 14))
    order = list(reversed(range(14)))
    msg = JointState(name=[NAMES[i] for i in order] + ["extra"], position=[float(i) for i in order] + [99.0])
    np.testing.assert_array_equal(reader.read(msg), np.arange(14.0))
    with pytest.raises(ValueError, match="lacks"):
        reader.read(JointState(name=list(NAMES[:13]), position=[0.0] * 13))


@pytest.mark.parametrize(
    "type_, field, make",
    [
        ("sensor_msgs/msg/JointState", "position[0:7]", lambda v: JointState(position=v)),
        ("std_msgs/msg/Float64MultiArray", "data[0:7]", lambda v: Float64MultiArray(data=v)),
    ],
)
def test_state_reader_field_mapping_per_arm(type_, field, make) -> None:
    """The ARX path (RobotStatus joint_pos[0:7], one topic per arm) exercised with standard types."""
    left, right = StateReader(_spec(type_, 0, 7, field)), StateReader(_spec(type_, 7, 14, field))
    msg_l = make([float(i) for i in range(8)])  # an 8th value the mapping ignores
    msg_r = make([10.0 + i for i in range(7)])
    joined = np.concatenate([left.read(msg_l), right.read(msg_r)])
    np.testing.assert_array_equal(joined, [0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15, 16])
    with pytest.raises(ValueError):
        left.read(make([1.0, 2.0]))  # too short


def test_command_writers() -> None:
    q = np.arange(14.0) / 10
    js = CommandWriter(_spec("sensor_msgs/msg/JointState", 0, 14)).build(q)
    assert list(js.name) == list(NAMES) and np.allclose(js.position, q)
    fm = CommandWriter(_spec("std_msgs/msg/Float64MultiArray", 0, 14)).build(q)  # no field: data
    assert np.allclose(fm.data, q)
    right = CommandWriter(_spec("std_msgs/msg/Float64MultiArray", 7, 14, "data[0:7]")).build(q)
    assert np.allclose(right.data, q[7:])
    # fixed-size array field (like ARX JointControl float32[8] joint_pos): a slice is written, rest 0
    imu = CommandWriter(_spec("sensor_msgs/msg/Imu", 7, 14, "orientation_covariance[1:8]")).build(q)
    assert isinstance(imu, Imu)
    np.testing.assert_allclose(imu.orientation_covariance, np.concatenate([[0.0], q[7:], [0.0]]))
    with pytest.raises(ValueError, match="field"):
        CommandWriter(_spec("sensor_msgs/msg/Imu", 0, 14))  # no names, no data: needs a mapping


def test_chunk_to_trajectory() -> None:
    from builtin_interfaces.msg import Time

    chunk = np.arange(16 * 14, dtype=float).reshape(16, 14)
    traj = chunk_to_trajectory(chunk, NAMES, Time(sec=5, nanosec=7), 0.1)
    assert (traj.header.stamp.sec, traj.header.stamp.nanosec) == (5, 7)
    assert list(traj.joint_names) == list(NAMES) and len(traj.points) == 16
    for k, pt in enumerate(traj.points):
        assert pt.time_from_start.sec * 1e9 + pt.time_from_start.nanosec == pytest.approx((k + 1) * 1e8)
        np.testing.assert_array_equal(pt.positions, chunk[k])
