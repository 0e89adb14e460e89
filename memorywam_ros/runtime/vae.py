"""Streaming Wan2.2 VAE encoder: one normalised latent frame per call, causal cache kept across calls.

diffusers' `AutoencoderKLWan._encode` encodes a clip as frame 0 alone, then chunks of 4 frames,
threading a per-conv feature cache (`feat_cache`, the last CACHE_T=2 frames each causal conv saw)
through the chunks, and clears that cache at the start and at the end. The robot receives its
frames chunk by chunk, so this module drives `vae.encoder(x, feat_cache, feat_idx)` itself with a
cache it owns and keeps between calls (pitfall 6). The chunking is identical to `_encode`, so an
episode streamed here equals the same frames encoded one-shot by diffusers (tested), which is what
offline latent precompute uses.

The latent is the posterior mode `mu` (first z_dim of the 2*z_dim `quant_conv` moments), never a
sample, normalised as `(mu - latents_mean) / latents_std` with the 48 per-channel statistics of
the VAE config (pitfall 7; `std` here is the standard deviation itself, not its inverse).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKLWan
from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, patchify

from .mosaic import mosaics_to_tensor

__all__ = [
    "WAN22_LATENTS_MEAN",
    "WAN22_LATENTS_STD",
    "StreamingVAEEncoder",
    "wan22_vae_config",
]

# Wan2.2 VAE (TI2V-5B, `vae/config.json`) per-channel latent statistics, 48 values each.
# Not stored in the weights; they live in code/config in every implementation.
WAN22_LATENTS_MEAN: tuple[float, ...] = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
WAN22_LATENTS_STD: tuple[float, ...] = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip

FRAMES_FIRST = 1  # images in latent frame 0
FRAMES_PER_LATENT = 4  # images in every later latent frame (temporal compression)


def wan22_vae_config(tiny: bool = False) -> dict[str, Any]:
    """Keyword arguments for `AutoencoderKLWan(**cfg)`.

    `tiny=False`: the real Wan2.2 VAE (TI2V-5B `vae/config.json`, ~127 M encoder+decoder params).
    `tiny=True`: the same structure (residual blocks, patch 2, 16x spatial / 4x temporal
    compression, z_dim 48 so the DiT's in_channels stay 48, the real latent statistics) with
    base_dim 8 and one residual block per level, for tests and tiny random checkpoints: 0.8 M
    params; on 2 CPU threads a 384x320 frame 0 encodes in ~0.05 s and a 4-mosaic chunk in
    ~0.23 s (CPU conv3d is im2col-bound). Its numbers are meaningless, its shapes and code path
    are the real ones.
    """
    base_dim, decoder_base_dim = (8, 8) if tiny else (160, 256)
    return {
        "base_dim": base_dim,
        "decoder_base_dim": decoder_base_dim,
        "z_dim": 48,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 1 if tiny else 2,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
        "dropout": 0.0,
        "latents_mean": list(WAN22_LATENTS_MEAN),
        "latents_std": list(WAN22_LATENTS_STD),
        "is_residual": True,
        "in_channels": 12,
        "out_channels": 12,
        "patch_size": 2,
        "scale_factor_temporal": 4,
        "scale_factor_spatial": 16,
    }


class StreamingVAEEncoder:
    """Encode one latent frame per call, keeping the causal conv cache between calls.

    Protocol per episode: `reset()`, then `encode(1 mosaic)` -> latent frame 0, then
    `encode(4 mosaics)` -> latent frame 1, 2, ... Each call returns float32
    (z_dim, 1, H/16, W/16) on the encoder's device. Batch size is 1 (one robot).

    Inputs: uint8 mosaics (T, H, W, 3) RGB (numpy or torch), or a float tensor (3, T, H, W) already
    in [-1, 1] (what `mosaics_to_tensor` returns).

    `device` / `dtype` move `vae` itself (nn.Module.to is in place). The latent normalisation
    always runs in float32; bfloat16 suits the convs on a GPU.
    """

    def __init__(
        self,
        vae: AutoencoderKLWan,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if device is not None or dtype is not None:
            vae = vae.to(device=device, dtype=dtype)
        self.vae = vae.eval().requires_grad_(False)
        param = next(self.vae.parameters())
        self.device = param.device
        self.dtype = param.dtype
        cfg = self.vae.config
        self.z_dim = int(cfg.z_dim)
        self.patch_size = int(cfg.patch_size or 1)
        self.spatial_factor = int(cfg.scale_factor_spatial or 8)
        if len(cfg.latents_mean) != self.z_dim or len(cfg.latents_std) != self.z_dim:
            raise ValueError(
                f"VAE config has {len(cfg.latents_mean)} latents_mean / {len(cfg.latents_std)} latents_std "
                f"values for z_dim {self.z_dim}"
            )
        # (z, 1, 1, 1) so they broadcast over (z, T, h, w); kept in float32 whatever the VAE dtype
        self._mean = torch.tensor(cfg.latents_mean, dtype=torch.float32, device=self.device).view(-1, 1, 1, 1)
        self._std = torch.tensor(cfg.latents_std, dtype=torch.float32, device=self.device).view(-1, 1, 1, 1)
        self._num_convs = sum(isinstance(m, WanCausalConv3d) for m in self.vae.encoder.modules())
        self._feat_cache: list[Any] = []
        self._latent_frames = 0
        self.reset()

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> StreamingVAEEncoder:
        """Load `AutoencoderKLWan.from_pretrained(path)` (a diffusers `vae/` folder) and wrap it."""
        vae = AutoencoderKLWan.from_pretrained(str(path), torch_dtype=dtype)
        return cls(vae, device=device, dtype=dtype)

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Start a new episode: forget every cached frame."""
        self._feat_cache = [None] * self._num_convs
        self._latent_frames = 0

    @property
    def latent_frames(self) -> int:
        """Latent frames encoded since the last `reset()`."""
        return self._latent_frames

    @property
    def expected_frames(self) -> int:
        """How many mosaics the next `encode` call takes: 1 first in an episode, 4 afterwards."""
        return FRAMES_FIRST if self._latent_frames == 0 else FRAMES_PER_LATENT

    # ------------------------------------------------------------------ encode
    def _to_input(self, mosaics: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Any accepted input -> (1, 3, T, H, W) in the VAE's device and dtype."""
        if isinstance(mosaics, torch.Tensor) and mosaics.is_floating_point():
            if mosaics.ndim != 4 or mosaics.shape[0] != 3:
                raise ValueError(
                    f"float input must be (3, T, H, W) in [-1, 1], got shape {tuple(mosaics.shape)}"
                )
            video = mosaics
        else:
            video = mosaics_to_tensor(mosaics)  # (3, T, H, W) float32
        h, w = video.shape[-2:]
        if h % self.spatial_factor or w % self.spatial_factor:
            raise ValueError(
                f"mosaic size {h}x{w} must be divisible by the VAE's spatial factor {self.spatial_factor}"
            )
        return video.unsqueeze(0).to(device=self.device, dtype=self.dtype)

    def _normalise(self, moments: torch.Tensor) -> torch.Tensor:
        """(1, 2z, T, h, w) quant_conv moments -> (z, T, h, w) float32 normalised mode."""
        mu = moments[0, : self.z_dim].float()
        return (mu - self._mean) / self._std

    @torch.no_grad()  # not inference_mode: the latents may feed a graph later (training)
    def encode(self, mosaics: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Encode the next latent frame of the episode -> float32 (z_dim, 1, H/16, W/16)."""
        x = self._to_input(mosaics)  # (1, 3, T, H, W)
        t = x.shape[2]
        if t != self.expected_frames:
            which = "the first call after reset()" if self._latent_frames == 0 else (
                f"latent frame {self._latent_frames} (every call after the first)"
            )
            raise ValueError(
                f"StreamingVAEEncoder.encode: {which} takes {self.expected_frames} mosaic(s), got {t}. "
                "Call reset() at the start of each episode."
            )
        x = patchify(x, patch_size=self.patch_size)  # (1, 3*p*p, T, H/p, W/p)
        # feat_idx restarts at 0 every chunk: it indexes convs, feat_cache holds their history
        out = self.vae.encoder(x, feat_cache=self._feat_cache, feat_idx=[0])  # (1, 2z, 1, h, w)
        moments = self.vae.quant_conv(out)  # 1x1x1 conv: no temporal state
        self._latent_frames += 1
        return self._normalise(moments)

    @torch.no_grad()  # not inference_mode: the latents may feed a graph later (training)
    def encode_clip(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """One-shot encode of a whole clip of 1 + 4k mosaics -> float32 (z_dim, 1 + k, H/16, W/16).

        Runs diffusers' own `AutoencoderKLWan.encode` (the offline path) and normalises its mode
        exactly like `encode`. Leaves this encoder's streaming state untouched. Spatial tiling is
        switched off for the call because tiles would not match the streamed (untiled) latents.
        """
        x = self._to_input(frames)  # (1, 3, T, H, W)
        t = x.shape[2]
        if t < 1 or (t - 1) % FRAMES_PER_LATENT:
            raise ValueError(f"encode_clip: a clip must hold 1 + 4k mosaics, got {t}")
        use_tiling = self.vae.use_tiling
        self.vae.use_tiling = False
        try:
            moments = self.vae.encode(x).latent_dist.parameters  # (1, 2z, 1 + k, h, w)
        finally:
            self.vae.use_tiling = use_tiling
        return self._normalise(moments)
