"""Camera mosaic: placement, aspect handling, input validation, tensor conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memorywam_ros.runtime.mosaic import compose_mosaic, mosaics_to_tensor, resize_center_crop

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def solid(h: int, w: int, colour: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (h, w, 3)).copy()


@pytest.mark.parametrize("cam_hw", [(480, 640), (720, 1280), (128, 160), (256, 320), (100, 90)])
def test_each_camera_lands_in_its_tile(cam_hw: tuple[int, int]) -> None:
    h, w = cam_hw
    m = compose_mosaic(solid(h, w, BLUE), solid(h, w, RED), solid(h, w, GREEN))
    assert m.shape == (384, 320, 3) and m.dtype == np.uint8
    assert (m[:128, :160] == RED).all()  # left wrist: top-left
    assert (m[:128, 160:] == GREEN).all()  # right wrist: top-right
    assert (m[128:, :] == BLUE).all()  # head: bottom two thirds


def test_custom_size() -> None:
    m = compose_mosaic(solid(48, 64, BLUE), solid(48, 64, RED), solid(48, 64, GREEN), height=96, width=80)
    assert m.shape == (96, 80, 3)
    assert (m[:32, :40] == RED).all() and (m[:32, 40:] == GREEN).all() and (m[32:] == BLUE).all()


def test_exact_size_is_copied_unchanged() -> None:
    rng = np.random.default_rng(0)
    head = rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)
    lw = rng.integers(0, 256, (128, 160, 3), dtype=np.uint8)
    rw = rng.integers(0, 256, (128, 160, 3), dtype=np.uint8)
    m = compose_mosaic(head, lw, rw)
    np.testing.assert_array_equal(m[128:], head)
    np.testing.assert_array_equal(m[:128, :160], lw)
    np.testing.assert_array_equal(m[:128, 160:], rw)


def test_gradient_keeps_orientation() -> None:
    # horizontal ramp: the left of the source must stay left in the tile (no flips, no transposes)
    ramp = np.tile(np.linspace(0, 255, 640).astype(np.uint8)[None, :, None], (480, 1, 3))
    m = compose_mosaic(ramp, ramp, ramp)
    for tile in (m[:128, :160], m[:128, 160:], m[128:]):
        row = tile[tile.shape[0] // 2, :, 0].astype(int)
        assert (np.diff(row) >= 0).all() and row[-1] - row[0] > 150


def test_center_crop_trims_wider_source_sides() -> None:
    # 4:3 source with 40-px black bands left and right: a 1:1 target keeps only the centre
    img = solid(480, 640, (200, 200, 200))
    img[:, :80] = 0
    img[:, -80:] = 0
    out = resize_center_crop(img, 64, 64)
    assert out.shape == (64, 64, 3)
    assert (out == 200).all()  # crop is 480x480 from column 80: the bands are gone


def test_center_crop_trims_taller_source_top_bottom() -> None:
    img = solid(400, 100, (50, 60, 70))
    img[:150] = 255
    img[-150:] = 255
    out = resize_center_crop(img, 20, 40)  # 2:1 tile: the centre 50 rows survive
    assert (out == (50, 60, 70)).all()


def test_aspect_crop_is_centered() -> None:
    # a marker at the centre of a wide image must land at the centre of the tile
    img = solid(100, 300, (0, 0, 0))
    img[45:55, 145:155] = 255
    out = resize_center_crop(img, 50, 50)
    ys, xs = np.nonzero(out[..., 0] > 100)
    assert abs(ys.mean() - 24.5) < 1.0 and abs(xs.mean() - 24.5) < 1.0


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((10, 10, 3), dtype=np.float32), "uint8"),
        (np.zeros((10, 10), dtype=np.uint8), r"\(H, W, 3\)"),
        (np.zeros((10, 10, 4), dtype=np.uint8), r"\(H, W, 3\)"),
        (np.zeros((0, 10, 3), dtype=np.uint8), "empty"),
        ([[0, 0, 0]], "numpy array"),
    ],
)
def test_bad_camera_inputs(bad: object, match: str) -> None:
    good = solid(10, 10, RED)
    with pytest.raises(ValueError, match=match):
        compose_mosaic(good, bad, good)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="left_wrist"):
        compose_mosaic(good, bad, good)  # type: ignore[arg-type]


def test_bad_mosaic_size() -> None:
    img = solid(10, 10, RED)
    with pytest.raises(ValueError, match="divisible by 3"):
        compose_mosaic(img, img, img, height=100, width=320)


def test_mosaics_to_tensor_range_and_layout() -> None:
    mos = np.zeros((4, 32, 48, 3), dtype=np.uint8)
    mos[:, :, :, 0] = 255
    mos[2, 5, 7] = (0, 128, 255)
    t = mosaics_to_tensor(mos)
    assert t.shape == (3, 4, 32, 48) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    assert t[0, 0, 0, 0] == 1.0 and t[1, 0, 0, 0] == -1.0
    assert torch.allclose(t[:, 2, 5, 7], torch.tensor([-1.0, 128 / 127.5 - 1, 1.0]), atol=1e-6)
    assert torch.equal(mosaics_to_tensor(torch.from_numpy(mos)), t)


def test_mosaics_to_tensor_errors() -> None:
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        mosaics_to_tensor(np.zeros((32, 48, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        mosaics_to_tensor(np.zeros((1, 32, 48, 3), dtype=np.float32))
