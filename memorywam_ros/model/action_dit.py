"""The action DiT: the action expert of the mixture of transformers.

Same depth and attention shape as the video DiT (heads x head_dim), narrower hidden size (1024 in
the paper). Its q/k/v project into the video DiT's attention width, so in every layer action
queries attend to the video keys/values of that layer (cached at inference). Proprioception
enters as one extra text-context token, projected from the joint vector to the text width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ActionDiTConfig, VideoDiTConfig
from .layers import ConditionEmbedder, WanBlock, output_head

# Trained from scratch: they have no counterpart of the same role in the video DiT.
_NOT_INTERPOLATED = ("action_encoder.", "proprio_encoder.", "proj_out.")


class ActionDiT(nn.Module):
    def __init__(self, config: ActionDiTConfig, video: VideoDiTConfig):
        super().__init__()
        self.config = config
        self.eps = video.eps
        dim = config.hidden_dim
        self.action_encoder = nn.Linear(config.action_dim, dim)
        self.proprio_encoder = nn.Linear(config.proprio_dim, video.text_dim)
        self.condition_embedder = ConditionEmbedder(dim, video.freq_dim, video.text_dim)
        self.blocks = nn.ModuleList(
            WanBlock(dim, video.inner_dim, config.ffn_dim, video.num_attention_heads, video.eps, video.cross_attn_norm)
            for _ in range(video.num_layers)
        )
        self.proj_out = nn.Linear(dim, config.action_dim)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def context(self, text: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """text (B, T, text_dim), proprio (B, P) -> cross-attention context (B, T + 1, hidden)."""
        weight = self.proprio_encoder.weight
        token = self.proprio_encoder(proprio.to(weight.dtype))[:, None]
        return self.condition_embedder.text_embedder(torch.cat((text.to(weight.dtype), token), dim=1))

    def head(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return output_head(x, temb, self.scale_shift_table, self.proj_out, self.eps)

    @torch.no_grad()
    def initialize_from_video(self, video: nn.Module) -> None:
        """Interpolate the video DiT's weights along the hidden dimension (paper §4.1).

        Every tensor is resized linearly (align_corners) along each dimension whose size differs.
        Where a Linear's input dimension shrinks by r, its weight is scaled by sqrt(r) so the output
        keeps the variance it had in the video DiT (fewer terms in each dot product).
        `time_proj` produces 6 stacked modulation vectors; each is resized on its own.
        """
        source = video.state_dict()
        for name, param in self.named_parameters():
            if name.startswith(_NOT_INTERPOLATED):
                continue
            src = source[name].float()
            if name.endswith("time_proj.weight"):
                src = src.unflatten(0, (6, -1))
                out = _resize_linear_weight(src, (6, param.shape[0] // 6), param.shape[1]).flatten(0, 1)
            elif name.endswith("time_proj.bias"):
                out = _resize(src.unflatten(0, (6, -1)), 1, param.shape[0] // 6).flatten()
            elif name.endswith(".weight") and src.ndim == 2:
                out = _resize_linear_weight(src, param.shape[:1], param.shape[1])
            else:
                out = src
                for dim, size in enumerate(param.shape):
                    out = _resize(out, dim, size)
            param.copy_(out.to(param.dtype))


def _resize(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Linear interpolation of `t` along `dim` to `size` points (endpoints kept)."""
    if t.shape[dim] == size:
        return t
    moved = t.movedim(dim, -1)
    flat = moved.reshape(-1, 1, moved.shape[-1])
    out = F.interpolate(flat, size=size, mode="linear", align_corners=True)
    return out.reshape(*moved.shape[:-1], size).movedim(-1, dim)


def _resize_linear_weight(w: torch.Tensor, out_shape: tuple[int, ...], in_dim: int) -> torch.Tensor:
    """w (..., out, in): resize the leading/out dims to out_shape and `in` to in_dim with sqrt scaling."""
    for dim, size in enumerate(out_shape):
        w = _resize(w, dim, size)
    scale = math.sqrt(w.shape[-1] / in_dim) if in_dim < w.shape[-1] else 1.0
    return _resize(w, w.ndim - 1, in_dim) * scale
