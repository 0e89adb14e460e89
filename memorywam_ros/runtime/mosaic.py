"""Three-camera mosaic: the single image the VAE sees.

Layout (height H=384, width W=320 by default)::

    +-------------------+-------------------+
    | left wrist        | right wrist       |   rows    0 : H/3   (128)
    | H/3 x W/2         | H/3 x W/2         |
    +-------------------+-------------------+
    | head                                  |   rows  H/3 : H     (256)
    | 2H/3 x W                              |
    +---------------------------------------+

The same function builds the mosaic for training latents and on the robot (pitfall 8: layout and
resolution must be identical at latent extraction and deployment), so change it only together
with re-extracting every latent.

Resizing rule, for any camera resolution: centre-crop the camera image to the aspect ratio of its
tile (whole pixels; crop size rounded to nearest, offset floored), then resize with PIL bilinear.
PIL's bilinear filter widens its support by the downscale factor, i.e. it is antialiased
(area-like) when shrinking 640x480 to 160x128 and plain bilinear when enlarging. Cropping
instead of letterboxing keeps the tile full of pixels and never distorts geometry; the cost is
the margins of cameras whose aspect differs from the tile's (both tiles are 5:4; a 4:3 640x480
camera keeps its centre 600x480, losing 20 columns each side).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["compose_mosaic", "mosaics_to_tensor", "resize_center_crop"]

DEFAULT_HEIGHT = 384
DEFAULT_WIDTH = 320


def _check_image(name: str, image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array (H, W, 3) uint8 RGB, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: expected shape (H, W, 3) RGB, got {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected dtype uint8, got {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name}: empty image {tuple(image.shape)}")
    return image


def resize_center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre-crop `image` (h, w, 3) uint8 to the aspect of (height, width), then bilinear-resize.

    Returns (height, width, 3) uint8. An image already at the target size is returned unchanged
    (as a copy), so precomputed mosaics and live ones agree bit for bit.
    """
    src_h, src_w = image.shape[:2]
    if (src_h, src_w) == (height, width):
        return image.copy()
    target_aspect = width / height
    if src_w / src_h > target_aspect:
        # source wider than the tile: trim left and right
        crop_w = max(1, min(src_w, round(src_h * target_aspect)))
        left = (src_w - crop_w) // 2
        image = image[:, left : left + crop_w]
    else:
        # source taller than the tile: trim top and bottom
        crop_h = max(1, min(src_h, round(src_w / target_aspect)))
        top = (src_h - crop_h) // 2
        image = image[top : top + crop_h]
    # crop first, then resize: the filter never reads pixels outside the crop
    pil = Image.fromarray(np.ascontiguousarray(image))
    out = pil.resize((width, height), resample=Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8)


def compose_mosaic(
    head: np.ndarray,
    left_wrist: np.ndarray,
    right_wrist: np.ndarray,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
) -> np.ndarray:
    """Build the (height, width, 3) uint8 RGB mosaic from three (h, w, 3) uint8 RGB camera images.

    Wrists go side by side on the top third (left wrist at columns 0:W/2), the head fills the
    bottom two thirds. Each camera may have any resolution (see the module docstring).
    """
    if height % 3 != 0 or width % 2 != 0 or height <= 0 or width <= 0:
        raise ValueError(
            f"mosaic size must have a height divisible by 3 and an even width, got {height}x{width}"
        )
    head = _check_image("head", head)
    left_wrist = _check_image("left_wrist", left_wrist)
    right_wrist = _check_image("right_wrist", right_wrist)

    top_h, half_w = height // 3, width // 2
    mosaic = np.empty((height, width, 3), dtype=np.uint8)
    mosaic[:top_h, :half_w] = resize_center_crop(left_wrist, top_h, half_w)
    mosaic[:top_h, half_w:] = resize_center_crop(right_wrist, top_h, width - half_w)
    mosaic[top_h:, :] = resize_center_crop(head, height - top_h, width)
    return mosaic


def mosaics_to_tensor(mosaics: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB -> torch.float32 (3, T, H, W) in [-1, 1], the VAE's input range."""
    if isinstance(mosaics, np.ndarray):
        if mosaics.dtype != np.uint8:
            raise ValueError(f"mosaics: expected dtype uint8, got {mosaics.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(mosaics))
    elif isinstance(mosaics, torch.Tensor):
        if mosaics.dtype != torch.uint8:
            raise ValueError(f"mosaics: expected dtype torch.uint8, got {mosaics.dtype}")
        tensor = mosaics
    else:
        raise ValueError(f"mosaics: expected a numpy array or torch tensor, got {type(mosaics).__name__}")
    if tensor.ndim != 4 or tensor.shape[-1] != 3:
        raise ValueError(f"mosaics: expected shape (T, H, W, 3), got {tuple(tensor.shape)}")
    # (T, H, W, 3) -> (3, T, H, W); 127.5 maps 0 -> -1 and 255 -> +1 exactly
    return tensor.permute(3, 0, 1, 2).to(torch.float32).div(127.5).sub(1.0).contiguous()
