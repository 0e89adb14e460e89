"""Building blocks shared by the video DiT and the action DiT (Wan2.2 layout, diffusers names).

A `WanBlock` is split into the pieces the mixture-of-transformers needs: `modulation`,
`self_attention_qkv` (projections, RMS norm, RoPE) and `finish` (output projection, text
cross-attention, feed-forward). The attention itself happens outside the block, so the video and
action experts of one layer can attend jointly over one sequence (or a KV cache).
Norms and adaLN modulation run in float32 whatever the weight dtype, as in diffusers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .rope import apply_rope


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding, [cos | sin] order (diffusers `Timesteps(flip_sin_to_cos=True, shift=0)`)."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    args = timesteps.float()[..., None] * exponent.exp()
    return torch.cat((args.cos(), args.sin()), dim=-1)


def layer_norm_fp32(
    x: torch.Tensor, eps: float, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None
) -> torch.Tensor:
    w = None if weight is None else weight.float()
    b = None if bias is None else bias.float()
    return F.layer_norm(x.float(), (x.shape[-1],), w, b, eps)


class RMSNormFP32(nn.RMSNorm):
    """RMS norm over the whole attention width (all heads), computed in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), self.normalized_shape, self.weight.float(), self.eps).type_as(x)


class TwoLayerMLP(nn.Module):
    """linear_1 -> activation -> linear_2 (diffusers TimestepEmbedding / PixArtAlphaTextProjection)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, activation: str):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, hidden_dim)
        self.linear_2 = nn.Linear(hidden_dim, out_dim)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear_1(x)
        x = F.silu(x) if self.activation == "silu" else F.gelu(x, approximate="tanh")
        return self.linear_2(x)


class ConditionEmbedder(nn.Module):
    """Timestep -> (temb, 6-way modulation); text context -> model width."""

    def __init__(self, dim: int, freq_dim: int, text_dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.time_embedder = TwoLayerMLP(freq_dim, dim, dim, "silu")
        self.time_proj = nn.Linear(dim, 6 * dim)
        self.text_embedder = TwoLayerMLP(text_dim, dim, dim, "gelu_tanh")

    def time(self, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """timesteps (...,) in [0, 1000] -> temb (..., D), modulation (..., 6, D)."""
        freq = timestep_embedding(timesteps, self.freq_dim).to(self.time_embedder.linear_1.weight.dtype)
        temb = self.time_embedder(freq)
        modulation = self.time_proj(F.silu(temb)).unflatten(-1, (6, -1))
        return temb, modulation


class Attention(nn.Module):
    """Projections of one Wan attention (to_q/to_k/to_v/to_out.0, norm_q/norm_k); the kernel is external."""

    def __init__(self, dim: int, attn_dim: int, eps: float):
        super().__init__()
        self.to_q = nn.Linear(dim, attn_dim)
        self.to_k = nn.Linear(dim, attn_dim)
        self.to_v = nn.Linear(dim, attn_dim)
        self.to_out = nn.ModuleList([nn.Linear(attn_dim, dim)])
        self.norm_q = RMSNormFP32(attn_dim, eps=eps)
        self.norm_k = RMSNormFP32(attn_dim, eps=eps)

    def kv(self, context: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        """context (B, T, dim) -> k, v (B, H, T, head_dim)."""
        k = self.norm_k(self.to_k(context)).unflatten(-1, (heads, -1)).transpose(1, 2)
        v = self.to_v(context).unflatten(-1, (heads, -1)).transpose(1, 2)
        return k, v

    def q(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        return self.norm_q(self.to_q(x)).unflatten(-1, (heads, -1)).transpose(1, 2)


class GeluProjection(nn.Module):
    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, ffn_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    """`ffn.net.0.proj` / `ffn.net.2` as in diffusers' FeedForward (net.1 is a no-op dropout)."""

    def __init__(self, dim: int, ffn_dim: int):
        super().__init__()
        self.net = nn.ModuleList([GeluProjection(dim, ffn_dim), nn.Identity(), nn.Linear(ffn_dim, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class WanBlock(nn.Module):
    """One Wan transformer block of width `dim` whose attention runs at width `attn_dim`.

    Video DiT: dim == attn_dim == 3072. Action DiT: dim 1024, attn_dim 3072, so its queries, keys
    and values live in the same space as the video DiT's of the same layer.
    """

    def __init__(self, dim: int, attn_dim: int, ffn_dim: int, heads: int, eps: float, cross_attn_norm: bool = True):
        super().__init__()
        self.heads = heads
        self.eps = eps
        self.attn1 = Attention(dim, attn_dim, eps)
        self.attn2 = Attention(dim, attn_dim, eps)
        # norm1/norm3 carry no parameters (LayerNorm without affine), norm2 is the cross-attention norm
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=True) if cross_attn_norm else None
        self.ffn = FeedForward(dim, ffn_dim)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def modulation(self, time_mod: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """time_mod (B, S, 6, D) or (B, 1, 6, D) -> six float32 (B, S, D) tensors."""
        mod = self.scale_shift_table.float().unsqueeze(0) + time_mod.float()
        return tuple(m.squeeze(2) for m in mod.chunk(6, dim=2))

    def self_attention_qkv(
        self, x: torch.Tensor, mod: tuple[torch.Tensor, ...], cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, S, D) -> q, k, v (B, H, S, head_dim), RoPE applied to q and k."""
        shift, scale = mod[0], mod[1]
        h = (layer_norm_fp32(x, self.eps) * (1 + scale) + shift).type_as(x)
        q = apply_rope(self.attn1.q(h, self.heads), cos, sin)
        k, v = self.attn1.kv(h, self.heads)
        return q, apply_rope(k, cos, sin), v

    def cross_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text context (B, T, D) -> cross-attention k, v; cached per episode/chunk at inference."""
        return self.attn2.kv(context, self.heads)

    def finish(
        self,
        x: torch.Tensor,
        attn: torch.Tensor,
        mod: tuple[torch.Tensor, ...],
        cross_kv: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """Residual after self-attention output attn (B, H, S, head_dim), then cross-attention and FFN."""
        gate, c_shift, c_scale, c_gate = mod[2], mod[3], mod[4], mod[5]
        attn = self.attn1.to_out[0](attn.transpose(1, 2).flatten(2))
        x = (x.float() + attn * gate).type_as(x)

        h = x if self.norm2 is None else layer_norm_fp32(x, self.eps, self.norm2.weight, self.norm2.bias).type_as(x)
        q = self.attn2.q(h, self.heads)
        cross = F.scaled_dot_product_attention(q, *cross_kv)
        x = x + self.attn2.to_out[0](cross.transpose(1, 2).flatten(2))

        h = (layer_norm_fp32(x, self.eps) * (1 + c_scale) + c_shift).type_as(x)
        return (x.float() + self.ffn(h).float() * c_gate).type_as(x)


def output_head(
    x: torch.Tensor, temb: torch.Tensor, scale_shift_table: torch.Tensor, proj_out: nn.Linear, eps: float
) -> torch.Tensor:
    """Wan's final layer: norm_out, 2-way modulation, proj_out. x (B, S, D), temb (B, S, D) or (B, 1, D)."""
    shift, scale = (scale_shift_table.float().unsqueeze(0) + temb.float().unsqueeze(2)).unbind(2)
    return proj_out((layer_norm_fp32(x, eps) * (1 + scale) + shift).type_as(x))
