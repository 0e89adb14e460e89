"""memorywam-train-vae (memorywam_train/vae_train.py): which pixels count as foreground, how the loss
weights them, the crop grid, and the whole run: trained weights, the latent statistics it writes
(the normalised latents precompute then stores have zero mean and unit variance per channel), and
an interrupted run resuming into the uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan
from safetensors.torch import load_file

import memorywam_train.vae_train as vt
from memorywam_ros.runtime.mosaic import compose_mosaic, mosaics_to_tensor
from memorywam_train.episodes import CAMERAS, write_episode
from memorywam_train.precompute import precompute

ROWS, SIZE = 21, (96, 64)  # mosaic: wrists 32 x 32 each on top, head 64 x 64 below
SQUARE = 8  # px of the head image (64 x 64, drawn at the mosaic's scale)


def _episode(path: Path, e: int) -> tuple[int, int]:
    """Grey head view with a white square at an episode-specific place; the wrist views brighten row by row
    (the same in every episode: a camera moving the same way each time). Returns the square's corner."""
    top, left = 8 + 12 * (e % 4), 4 + 16 * (e // 4)
    head = np.full((ROWS, 64, 64, 3), 90, np.uint8)
    head[:, top:top + SQUARE, left:left + SQUARE] = 250
    wrist = np.broadcast_to((40 + 9 * np.arange(ROWS, dtype=np.uint8))[:, None, None, None], (ROWS, 32, 32, 3)).copy()
    images = {"head": head, "left_wrist": wrist, "right_wrist": wrist.copy()}
    assert set(images) == set(CAMERAS)
    t = np.arange(ROWS)
    state = np.zeros((ROWS, 14), np.float32)
    write_episode(path, images, state, state.copy(), t * 100_000_000,
                  {"instruction": "find the square", "source": "test", "control_rate_hz": 10.0})
    return top, left


@pytest.fixture(scope="module")
def episodes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int]]]:
    root = tmp_path_factory.mktemp("vae_eps")
    corners = [_episode(root / f"ep{e}.hdf5", e) for e in range(5)]
    return root, corners


def test_foreground_is_what_tells_episodes_apart_at_the_same_row(episodes) -> None:
    root, corners = episodes
    mosaics = vt.Mosaics(sorted(root.glob("*.hdf5")), SIZE)
    bg = vt.background(mosaics)
    assert bg.shape == (ROWS, 3, *SIZE)
    for e, (top, left) in enumerate(corners):
        for row in (0, 13):
            x = mosaics_to_tensor(mosaics.mosaic(e, row)[None])[None]
            fg = vt.foreground(x, vt.row_background(bg, [row]))[0, 0]
            want = torch.zeros(SIZE, dtype=torch.bool)
            want[32 + top:32 + top + SQUARE, left:left + SQUARE] = True  # the head tile starts at mosaic row 32
            # the square, nothing else: not the wrist tiles, which change with the row but alike in every episode
            assert torch.equal(fg, want), (e, row)


def test_loss_weights_foreground_and_background_by_their_own_means() -> None:
    x = torch.zeros(1, 3, 1, 4, 4)
    fg = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    fg[..., 0, 0] = True  # 1 foreground pixel, 15 background
    recon = x.clone()
    recon[:, :, :, 0, 0] = 0.5  # error on the foreground pixel only: 0.25 per channel
    loss, bg_mse, fg_mse = vt.weighted_reconstruction_loss(recon, x, fg, fg_weight=10.0)
    assert (bg_mse, fg_mse) == (0.0, 0.25) and float(loss) == pytest.approx(2.5)
    recon = x + 0.5
    recon[:, :, :, 0, 0] = 0.0  # error on the background only
    loss, bg_mse, fg_mse = vt.weighted_reconstruction_loss(recon, x, fg, fg_weight=10.0)
    assert (bg_mse, fg_mse) == (0.25, 0.0) and float(loss) == pytest.approx(0.25)
    loss, _, fg_mse = vt.weighted_reconstruction_loss(recon, x, torch.zeros_like(fg), fg_weight=10.0)
    assert np.isnan(fg_mse) and float(loss) == pytest.approx(0.25 * 15 / 16)  # no foreground: plain MSE


def test_crop_window_is_shared_and_on_the_latent_grid() -> None:
    x = torch.arange(96 * 64, dtype=torch.float32).reshape(1, 1, 1, 96, 64).expand(1, 3, 2, 96, 64)
    fg = x[:, 0] > 3000
    rng = np.random.default_rng(0)
    for _ in range(20):
        cx, cf = vt.random_crop(x, fg, (32, 16), rng)
        assert cx.shape[-2:] == (32, 16) and torch.equal(cf, cx[:, 0] > 3000)
        top, left = divmod(int(cx[0, 0, 0, 0, 0]), 64)
        assert top % 16 == 0 and left % 16 == 0
    with pytest.raises(ValueError, match="multiples of 16"):
        vt.random_crop(x, fg, (24, 16), rng)


class _Killed(Exception):
    pass


def test_run_writes_statistics_that_normalise_the_latents_and_resumes(episodes, tiny_checkpoint, tmp_path,
                                                                      monkeypatch) -> None:
    root, _ = episodes
    torch.set_num_threads(1)
    kw = {"steps": 4, "fg_weight": 10.0, "lr": 1e-3, "crop": (32, 32), "checkpoint_every": 2, "progress": False}
    out = tmp_path / "straight"
    report = vt.train_vae(root, tiny_checkpoint, out, **kw)
    trained = AutoencoderKLWan.from_pretrained(str(out / "vae"))
    init = AutoencoderKLWan.from_pretrained(str(tiny_checkpoint / "vae"))
    assert not torch.equal(trained.encoder.conv_in.weight, init.encoder.conv_in.weight)
    assert list(trained.config.latents_std) == pytest.approx(report["latents_std"])
    assert not (out / vt.STATE).exists() and (out / "memorywam.json").is_file() and (out / "vae_train.png").is_file()

    # the checkpoint encodes through precompute; its statistics make the stored latents standard per channel
    result = precompute(root, out, tmp_path / "latents", random_text_dim=32, text_len=16, progress=False)
    assert len(result.written) == 5
    lat = torch.cat([load_file(str(p))["latents"] for p in sorted((tmp_path / "latents").glob("*.safetensors"))])
    per_channel = lat.permute(1, 0, 2, 3).reshape(lat.shape[1], -1)
    assert per_channel.mean(1).abs().max() < 1e-3
    assert (per_channel.std(1) - 1).abs().max() < 1e-3

    # killed during step 3 (after the checkpoint of step 2), run again: the weights of the straight run
    clip, calls = vt.Mosaics.clip, {"n": 0}

    def dies(self, rng, frames):
        calls["n"] += 1
        if calls["n"] == 4 + 3:  # 4 evaluation mosaics, then one clip per step
            raise _Killed
        return clip(self, rng, frames)

    monkeypatch.setattr(vt.Mosaics, "clip", dies)
    again = tmp_path / "resumed"
    with pytest.raises(_Killed):
        vt.train_vae(root, tiny_checkpoint, again, **kw)
    assert torch.load(again / vt.STATE, weights_only=False)["step"] == 2
    monkeypatch.setattr(vt.Mosaics, "clip", clip)
    vt.train_vae(root, tiny_checkpoint, again, **kw)
    resumed = AutoencoderKLWan.from_pretrained(str(again / "vae"))
    for (name, a), b in zip(trained.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(SystemExit, match="no VAE training state"):
        vt.train_vae(root, tiny_checkpoint, again, **kw)


def test_mosaic_is_composed_as_precompute_composes_it(episodes) -> None:
    root, _ = episodes
    from memorywam_train.episodes import EpisodeReader

    path = sorted(root.glob("*.hdf5"))[2]
    reader = EpisodeReader(path)
    want = compose_mosaic(*(reader.images(c, 5, 6)[0] for c in CAMERAS), *SIZE)
    assert np.array_equal(vt.Mosaics([path], SIZE).mosaic(0, 5), want)
