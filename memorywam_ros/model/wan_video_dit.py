"""Wan2.2 video DiT with diffusers' parameter names.

`WanVideoDiT.from_diffusers(dir)` loads a diffusers `WanTransformer3DModel` directory unchanged and
its plain forward (full attention, no gists) returns what diffusers' `.sample` returns. MemoryWAM
uses the same blocks layer by layer through `memorywam.py` (joint attention with the action DiT,
memory mask or KV cache); this file is the video expert's own parts only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import VideoDiTConfig
from .layers import ConditionEmbedder, WanBlock, output_head
from .rope import rope_angles, video_positions
from .weights import load_into, load_safetensors_dir


class WanVideoDiT(nn.Module):
    def __init__(self, config: VideoDiTConfig):
        super().__init__()
        self.config = config
        dim = config.inner_dim
        self.patch_embedding = nn.Conv3d(
            config.in_channels, dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.condition_embedder = ConditionEmbedder(dim, config.freq_dim, config.text_dim)
        self.blocks = nn.ModuleList(
            WanBlock(dim, dim, config.ffn_dim, config.num_attention_heads, config.eps, config.cross_attn_norm)
            for _ in range(config.num_layers)
        )
        self.proj_out = nn.Linear(dim, config.out_channels * math.prod(config.patch_size))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    # --- tokens <-> latents -------------------------------------------------------------------
    def patchify(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, F, H, W) -> (B, F*h*w, D) tokens in (f, h, w) order."""
        return self.patch_embedding(latents.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)

    def unpatchify(self, x: torch.Tensor, frames: int, grid_h: int, grid_w: int) -> torch.Tensor:
        """(B, F*h*w, C*pt*ph*pw) -> (B, C, F*pt, h*ph, w*pw), diffusers' channel order."""
        pt, ph, pw = self.config.patch_size
        x = x.reshape(x.shape[0], frames, grid_h, grid_w, pt, ph, pw, -1)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def head(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return output_head(x, temb, self.scale_shift_table, self.proj_out, self.config.eps)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_angles(positions, self.config.attention_head_dim, self.config.rope_theta)

    # --- plain forward (diffusers-compatible) -------------------------------------------------
    def forward(
        self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        """hidden_states (B, C, F, H, W); timestep (B,) or per token (B, F*h*w); text (B, T, text_dim)."""
        _, _, frames, height, width = hidden_states.shape
        pt, ph, pw = self.config.patch_size
        f, h, w = frames // pt, height // ph, width // pw
        x = self.patchify(hidden_states)
        cos, sin = self.rope(video_positions(torch.arange(f, device=x.device), h, w))
        temb, time_mod = self.condition_embedder.time(timestep)
        if timestep.ndim == 1:  # one timestep per sample: broadcast over tokens
            temb, time_mod = temb[:, None], time_mod[:, None]
        context = self.condition_embedder.text_embedder(encoder_hidden_states.to(x.dtype))
        for block in self.blocks:
            mod = block.modulation(time_mod)
            q, k, v = block.self_attention_qkv(x, mod, cos, sin)
            x = block.finish(x, F.scaled_dot_product_attention(q, k, v), mod, block.cross_kv(context))
        return self.unpatchify(self.head(x, temb), f, h, w)

    # --- loading ------------------------------------------------------------------------------
    @classmethod
    def from_diffusers(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> WanVideoDiT:
        """Load a diffusers `WanTransformer3DModel` directory (config.json + safetensors, sharded or not).

        A pipeline directory with a `transformer/` sub-folder works too.
        """
        path = Path(path)
        if not (path / "config.json").is_file() and (path / "transformer" / "config.json").is_file():
            path = path / "transformer"
        config = VideoDiTConfig.from_diffusers_config(json.loads((path / "config.json").read_text()))
        with torch.device("meta"):
            model = cls(config)
        state = load_safetensors_dir(path, "diffusion_pytorch_model")
        load_into(model, state, f"diffusers checkpoint {path}")
        return model.to(device=device, dtype=dtype)
