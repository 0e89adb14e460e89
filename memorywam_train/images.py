"""Decode ROS image messages to RGB uint8 arrays without cv_bridge (PIL + numpy only).

`sensor_msgs/msg/Image`: rgb8, bgr8, rgba8, bgra8 and mono8 are accepted and returned as RGB
(H, W, 3); row padding (`step > width * channels`) is removed. Other encodings (depth, Bayer,
16-bit, YUV) are rejected with `ImageDecodeError` naming the encoding: silently reinterpreting
their bytes would train on garbage.

`sensor_msgs/msg/CompressedImage`: whatever PIL can open (jpeg, png, ...); the `format` string of
image_transport ("rgb8; jpeg compressed bgr8") describes the *raw* image that was compressed, but
a JPEG/PNG decoder already returns the visual colours, so no channel swap is applied.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

# encoding -> (channels, channel order to reach RGB)
_RAW_ENCODINGS: dict[str, tuple[int, tuple[int, ...]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}


class ImageDecodeError(ValueError):
    """An image message that cannot be turned into RGB uint8."""


def decode_raw_image(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> RGB uint8 (H, W, 3), always a fresh contiguous array."""
    enc = str(msg.encoding).lower()
    if enc not in _RAW_ENCODINGS:
        raise ImageDecodeError(
            f"unsupported Image encoding {msg.encoding!r} (supported: {', '.join(_RAW_ENCODINGS)}); "
            "record the colour stream, not depth/IR, or republish as rgb8"
        )
    ch, order = _RAW_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    if step < w * ch or data.size < h * step:
        raise ImageDecodeError(f"Image {w}x{h} {enc}: step {step} / {data.size} bytes too small for the declared size")
    rows = data[: h * step].reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    return np.ascontiguousarray(rows[:, :, list(order)])


def decode_compressed_image(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png/...) -> RGB uint8 (H, W, 3)."""
    return decode_image_bytes(bytes(memoryview(msg.data)), what=f"CompressedImage format {msg.format!r}")


def decode_image_bytes(data: bytes, what: str = "image") -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, ...) -> RGB uint8 (H, W, 3)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageDecodeError(f"cannot decode {what} ({len(data)} bytes): {exc}") from exc


def decode_image_msg(msg: Any, msgtype: str) -> np.ndarray:
    """Dispatch on the ROS type name (`sensor_msgs/msg/Image` or `.../CompressedImage`)."""
    if msgtype.endswith("/CompressedImage"):
        return decode_compressed_image(msg)
    if msgtype.endswith("/Image"):
        return decode_raw_image(msg)
    raise ImageDecodeError(f"{msgtype} is not an image type (expected sensor_msgs/msg/Image or CompressedImage)")


def is_image_type(msgtype: str) -> bool:
    return msgtype in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
