"""Small shared helpers for the model tests (random tiny models and inputs)."""

from __future__ import annotations

import dataclasses

import torch

from memorywam_ros.model import MemoryWAM, MemoryWAMConfig


def tiny_config(policy: str = "hybrid", grid: tuple[int, int] = (8, 6), **memory: int) -> MemoryWAMConfig:
    """Tiny model on a small latent grid (grid/2 patches per frame) so long sequences stay cheap."""
    config = MemoryWAMConfig.tiny(policy, **memory)
    return dataclasses.replace(config, latent_height=grid[0], latent_width=grid[1])


def random_model(config: MemoryWAMConfig, seed: int = 0) -> MemoryWAM:
    """Every parameter random (zero-initialised ones too) so mistakes show up in outputs."""
    torch.manual_seed(seed)
    model = MemoryWAM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return model


def random_inputs(config: MemoryWAMConfig, batch: int, frames: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c, h, w = config.video.in_channels, config.latent_height, config.latent_width
    k, a = config.action.chunk_size, config.action.action_dim
    return {
        "latents": torch.randn(batch, frames, c, h, w, generator=g),
        "text": torch.randn(batch, 5, config.video.text_dim, generator=g),
        "proprio": torch.randn(batch, frames, config.action.proprio_dim, generator=g),
        "noisy_actions": torch.randn(batch, frames, k, a, generator=g),
        "action_timestep": torch.rand(batch, frames, generator=g) * 1000,
        "noisy_video": torch.randn(batch, frames - 1, c, h, w, generator=g),
        "video_timestep": torch.rand(batch, frames - 1, generator=g) * 1000,
    }
