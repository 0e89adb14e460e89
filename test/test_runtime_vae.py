"""Streaming Wan2.2 VAE encoder: streaming == one-shot diffusers encode, episode isolation, shapes.

Tolerance: float32 on CPU, streamed latents equal diffusers' one-shot `AutoencoderKLWan.encode`
(normalised mode) to atol 1e-5; measured max |diff| = 0.0 (same kernels, same chunking).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan

from memorywam_ros.runtime.mosaic import mosaics_to_tensor
from memorywam_ros.runtime.vae import (
    WAN22_LATENTS_MEAN,
    WAN22_LATENTS_STD,
    StreamingVAEEncoder,
    wan22_vae_config,
)

ATOL = 1e-5
H, W = 96, 80  # small mosaics keep the tests fast; 384x320 is checked once for shapes


@pytest.fixture(scope="module")
def vae() -> AutoencoderKLWan:
    torch.manual_seed(0)
    return AutoencoderKLWan(**wan22_vae_config(tiny=True)).eval()


def clip(n: int, seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def stream(enc: StreamingVAEEncoder, frames: np.ndarray) -> torch.Tensor:
    """(1 + 4k, H, W, 3) -> (z, 1 + k, h, w) through the streaming protocol."""
    enc.reset()
    out = [enc.encode(frames[:1])]
    for i in range(1, frames.shape[0], 4):
        out.append(enc.encode(frames[i : i + 4]))
    return torch.cat(out, dim=1)


def test_config_values() -> None:
    real, tiny = wan22_vae_config(tiny=False), wan22_vae_config(tiny=True)
    assert real["base_dim"] == 160 and real["decoder_base_dim"] == 256 and real["z_dim"] == 48
    assert real["patch_size"] == 2 and real["in_channels"] == 12 and real["is_residual"] is True
    assert len(WAN22_LATENTS_MEAN) == len(WAN22_LATENTS_STD) == 48
    assert WAN22_LATENTS_MEAN[0] == -0.2289 and WAN22_LATENTS_MEAN[-1] == -0.0667
    assert WAN22_LATENTS_STD[0] == 0.4765 and WAN22_LATENTS_STD[-1] == 0.7744
    assert {k for k in real if real[k] != tiny[k]} == {"base_dim", "decoder_base_dim", "num_res_blocks"}
    with torch.device("meta"):
        full = AutoencoderKLWan(**real)
    # the released Wan2.2 VAE: 704.7 M params (2.82 GB in float32), encoder 149.6 M
    assert sum(p.numel() for p in full.parameters()) == 704_688_668
    assert sum(p.numel() for p in full.encoder.parameters()) == 149_627_776


def test_streaming_equals_one_shot(vae: AutoencoderKLWan) -> None:
    enc = StreamingVAEEncoder(vae)
    frames = clip(13, seed=1)  # 1 + 4*3 -> 4 latent frames
    streamed = stream(enc, frames)
    one_shot = enc.encode_clip(frames)
    assert streamed.shape == one_shot.shape == (48, 4, H // 16, W // 16)
    torch.testing.assert_close(streamed, one_shot, atol=ATOL, rtol=0)
    # and against diffusers directly: normalised posterior mode, not a sample
    ref = vae.encode(mosaics_to_tensor(frames)[None]).latent_dist.mode()[0]
    mean = torch.tensor(WAN22_LATENTS_MEAN).view(-1, 1, 1, 1)
    std = torch.tensor(WAN22_LATENTS_STD).view(-1, 1, 1, 1)
    torch.testing.assert_close(streamed, (ref - mean) / std, atol=ATOL, rtol=0)


def test_history_is_used(vae: AutoencoderKLWan) -> None:
    # same 4 mosaics after two different first frames: the causal cache must change latent frame 1
    enc = StreamingVAEEncoder(vae)
    a, b = clip(5, seed=2), clip(5, seed=2)
    b[0] = 255 - b[0]
    za, zb = stream(enc, a), stream(enc, b)
    assert (za[:, 1] - zb[:, 1]).abs().max() > 1e-4


def test_reset_isolates_episodes(vae: AutoencoderKLWan) -> None:
    enc = StreamingVAEEncoder(vae)
    ep1, ep2 = clip(9, seed=3), clip(9, seed=4)
    stream(enc, ep1)
    assert enc.latent_frames == 3
    after = stream(enc, ep2)  # stream() calls reset() first
    fresh = stream(StreamingVAEEncoder(vae), ep2)
    torch.testing.assert_close(after, fresh, atol=0, rtol=0)


def test_encode_clip_leaves_streaming_state(vae: AutoencoderKLWan) -> None:
    enc = StreamingVAEEncoder(vae)
    frames = clip(9, seed=5)
    z0 = enc.encode(frames[:1])
    enc.encode_clip(clip(5, seed=6))  # unrelated one-shot in the middle of an episode
    z12 = [enc.encode(frames[1:5]), enc.encode(frames[5:9])]
    torch.testing.assert_close(torch.cat([z0, *z12], 1), enc.encode_clip(frames), atol=ATOL, rtol=0)


def test_wrong_frame_count_raises(vae: AutoencoderKLWan) -> None:
    enc = StreamingVAEEncoder(vae)
    assert enc.expected_frames == 1
    with pytest.raises(ValueError, match=r"first call after reset.*takes 1 mosaic"):
        enc.encode(clip(4, seed=0))
    enc.encode(clip(1, seed=0))
    assert enc.expected_frames == 4
    with pytest.raises(ValueError, match="takes 4 mosaic"):
        enc.encode(clip(1, seed=0))
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        enc.encode_clip(clip(4, seed=0))


def test_bad_inputs_raise(vae: AutoencoderKLWan) -> None:
    enc = StreamingVAEEncoder(vae)
    with pytest.raises(ValueError, match="divisible by the VAE's spatial factor 16"):
        enc.encode(clip(1, seed=0, h=100, w=80))
    with pytest.raises(ValueError, match=r"\(3, T, H, W\)"):
        enc.encode(torch.zeros(1, H, W, 3))
    with pytest.raises(ValueError, match="uint8"):
        enc.encode(np.zeros((1, H, W, 3), dtype=np.float64))


def test_float_input_and_full_size_shapes(vae: AutoencoderKLWan) -> None:
    enc = StreamingVAEEncoder(vae)
    frames = clip(5, seed=7, h=384, w=320)
    z0 = enc.encode(mosaics_to_tensor(frames[:1]))  # float (3, 1, H, W) in [-1, 1]
    z1 = enc.encode(frames[1:5])
    assert z0.shape == z1.shape == (48, 1, 24, 20)
    assert z0.dtype == torch.float32 and torch.isfinite(z1).all()


def test_dtype_and_from_pretrained(vae: AutoencoderKLWan, tmp_path) -> None:
    vae.save_pretrained(tmp_path / "vae")
    enc = StreamingVAEEncoder.from_pretrained(tmp_path / "vae", device="cpu", dtype=torch.bfloat16)
    assert enc.dtype == torch.bfloat16 and enc.z_dim == 48
    frames = clip(5, seed=8)
    z_bf16 = stream(enc, frames)
    z_f32 = stream(StreamingVAEEncoder(vae), frames)
    assert z_bf16.dtype == torch.float32  # normalisation always in float32
    # bf16 compute drifts; only check it is the same latent, loosely (relative to its scale)
    assert (z_bf16 - z_f32).abs().mean() < 0.1 * z_f32.abs().mean()
