"""Masked joint attention for the training forward.

CPU (tests, tiny sizes): a dense boolean mask (B, 1, S, S) with SDPA.
CUDA: flex attention with a block mask built from the same `MemoryRules.visible`, so no dense
S x S mask per head is ever materialised and fully-masked 128x128 blocks are skipped.
Inference never needs a mask: a cached query sees everything the cache holds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .memory import MemoryRules

try:  # flex attention (torch >= 2.5); only used on CUDA
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # pragma: no cover - old torch
    create_block_mask = flex_attention = None

_compiled_flex = None


def _flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask, compiled: bool = True) -> torch.Tensor:
    """flex attention, compiled on first use (uncompiled flex attention is a slow reference path)."""
    global _compiled_flex
    if not compiled:
        return flex_attention(q, k, v, block_mask=block_mask)
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex(q, k, v, block_mask=block_mask)


class MemoryMaskedAttention:
    """Attention over a training sequence described per token by (frame, kind, group), each (B, S)."""

    def __init__(
        self,
        rules: MemoryRules,
        frame: torch.Tensor,
        kind: torch.Tensor,
        group: torch.Tensor,
        use_flex: bool | None = None,
        compiled: bool = True,
    ):
        if use_flex is None:
            use_flex = frame.is_cuda and flex_attention is not None
        self.use_flex = use_flex
        self.compiled = compiled
        if use_flex:

            def mask_mod(b, h, q_idx, kv_idx):
                return rules.visible(
                    frame[b, q_idx],
                    kind[b, q_idx],
                    group[b, q_idx],
                    frame[b, kv_idx],
                    kind[b, kv_idx],
                    group[b, kv_idx],
                )

            batch, length = frame.shape
            self.block_mask = create_block_mask(mask_mod, batch, None, length, length, device=frame.device)
        else:
            self.dense_mask = rules.dense_mask(frame, kind, group)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v (B, H, S, D) -> (B, H, S, D)."""
        if self.use_flex:
            return _flex(q, k, v, self.block_mask, self.compiled)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.dense_mask)
