"""Masked joint attention for the training forward.

CPU: the dense boolean rule (B, 1, S, S), attended block by block over the keys each block of
GATHER_BLOCK queries can see (`gather_plan`), or with one SDPA call when nearly all are visible.
CUDA: flex attention with a block mask built from the same `MemoryRules.visible`; no S x S
tensor is ever materialised, and fully-masked 128x128 blocks are skipped by the kernel.
Inference never needs a mask: a cached query sees everything the cache holds.

Why the block mask is built by hand. `create_block_mask` (uncompiled) evaluates the mask_mod on
every (q, kv) pair: at 64 latent frames of the paper's layout (S = 16776) that is +2.7 GiB and
16 s per call on CPU. But the rule only looks at a token's (frame, kind, group), and a training
sequence is a few hundred runs of tokens sharing all three (f_i, g_i, a noisy frame, an action
chunk). `memory_block_mask` evaluates the rule once per pair of runs (~256 x 256 at 64 frames)
and derives each 128x128 block's state from a 2-D prefix sum over that run matrix: a block
covering runs [q0, q1] x [k0, k1] is empty if no run pair is visible, full if all are (every run
it touches contributes at least one token to it), partial otherwise. That equals
`create_block_mask`'s dense evaluation exactly (test/test_model_attention.py). Partial blocks
are then resolved per element by the mask_mod, which is the rule itself.

Why CPU attention gathers keys. SDPA's CPU kernel computes every (q, kv) pair and masks after:
at 30 latent frames of config/train_look_and_press.yaml (S ~ 8000) it was 65 % of a training
step, although a hybrid query sees ~1/6 of the sequence (anchors, its window, gists, its chunk).
Per block of queries the union of visible keys (over the batch) is gathered with index_select,
and SDPA runs on that (q, K) slice with the matching slice of the mask: the same scores, the same
softmax over the same visible keys (a masked key adds exactly 0), fewer pairs. The plan depends
only on the metadata, so it is cached like the block mask (episode mode: once per length).

Why sequence lengths are padded to buckets. `torch.compile(flex_attention, dynamic=False)`
compiles one kernel per shape; an episode-mode run has a new S for almost every episode, and
after `recompile_limit` (8) shapes dynamo gives up and runs the unfused reference path, which
materialises H x S x S fp32 scores per layer. Dynamic shapes would avoid that, but flex
attention's dynamic-shape support has changed from release to release (block-mask length checks
specialised the lengths until recently), and the robot-side and GPU torch versions are not
pinned. Padding q/k/v to a power-of-two bucket (>= 1024) keeps every shape static, so each
bucket compiles once on any version: 6 buckets cover up to 32768 tokens (124 paper frames).
The padded tokens cost almost nothing: they get metadata (kind ACTION, a group of their own per
128-token block) under which the rule hides them from every real query and lets each see only
its own block, so the kernel computes one extra diagonal block per 128 padded tokens, and their
outputs are sliced off.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from .memory import MemoryRules, TokenKind

try:  # flex attention (torch >= 2.5); only used on CUDA
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # pragma: no cover - old torch
    BlockMask = create_block_mask = flex_attention = None

BLOCK_SIZE = 128  # flex attention's sparse block (its default)
MIN_BUCKET = 1024  # shortest padded length: every sequence up to 1024 tokens shares one kernel
PAD_GROUP = -2  # padding groups are PAD_GROUP - block index: below every real group (-1, 0, 1, ...)
MASK_CACHE_SIZE = 32
GATHER_BLOCK = 256  # CPU: queries per gathered SDPA call
GATHER_MAX_FRACTION = 0.6  # CPU: above this share of visible (q, kv) pairs one dense SDPA call is cheaper
PLAN_CACHE_SIZE = 4  # CPU plans hold S x (visible keys) booleans: keep a few

RECOMPILE_LIMIT = 64  # shapes (bucket x batch size) compiled flex attention may see before it raises
_compiled_flex: dict[Any, Callable] = {}
_mask_cache: OrderedDict[tuple, BlockMask] = OrderedDict()
_plan_cache: OrderedDict[tuple, GatherPlan] = OrderedDict()


def bucket_length(length: int, minimum: int = MIN_BUCKET) -> int:
    """The padded sequence length for `length` tokens: the next power of two, at least `minimum`."""
    return max(minimum, 1 << max(length - 1, 0).bit_length())


def compiled_flex(backend: Any = "inductor") -> Callable:
    """flex attention compiled with static shapes, one compiled kernel per bucket (module docstring).

    A few more variants than buckets may be legitimate (a smaller last batch of an epoch is another
    shape), so the recompile limit is raised to RECOMPILE_LIMIT for this call only, and should it
    ever be reached, dynamo raises instead of silently running the unfused path.
    """
    if backend not in _compiled_flex:
        import torch._dynamo

        options = (("recompile_limit", RECOMPILE_LIMIT), ("fail_on_recompile_limit_hit", True))
        limits = {key: value for key, value in options if hasattr(torch._dynamo.config, key)}  # torch 2.5+ names
        compiled = torch.compile(flex_attention, dynamic=False, backend=backend)

        def call(*args: Any, **kwargs: Any) -> torch.Tensor:
            with torch._dynamo.config.patch(**limits):
                return compiled(*args, **kwargs)

        _compiled_flex[backend] = call
    return _compiled_flex[backend]


def pad_metadata(
    frame: torch.Tensor, kind: torch.Tensor, group: torch.Tensor, length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Extend (B, S) metadata to (B, length) with padding tokens the rule isolates (see the module docstring)."""
    pad = length - frame.shape[1]
    if pad <= 0:
        return frame, kind, group
    position = torch.arange(frame.shape[1], length, device=frame.device)
    pad_group = (PAD_GROUP - position // BLOCK_SIZE).expand(frame.shape[0], -1)
    return (
        F.pad(frame, (0, pad), value=-1),  # frame -1: sees no frame's clean or gist tokens
        F.pad(kind, (0, pad), value=int(TokenKind.ACTION)),
        torch.cat((group, pad_group.to(group.dtype)), dim=1),
    )


def run_blocks(rules: MemoryRules, frame: torch.Tensor, kind: torch.Tensor, group: torch.Tensor, block: int):
    """Block-level (partial, full) boolean masks (B, 1, nq, nkv) of the rule, without an S x S tensor.

    Matches `create_block_mask(..., BLOCK_SIZE=block)`: a block reaching past the sequence end
    is never full (create_block_mask pads its dense mask with False).
    """
    batch, length = frame.shape
    blocks = -(-length // block)
    partial, full = [], []
    for b in range(batch):
        meta = torch.stack((frame[b], kind[b], group[b]))  # (3, S)
        change = torch.ones(length, dtype=torch.bool, device=frame.device)
        change[1:] = (meta[:, 1:] != meta[:, :-1]).any(0)
        run = change.cumsum(0) - 1  # run id of every token
        f, k, g = meta[:, change]  # metadata of each run, (R,) each
        visible = rules.visible(f[:, None], k[:, None], g[:, None], f[None], k[None], g[None])
        prefix = F.pad(visible.int().cumsum(0).cumsum(1), (1, 0, 1, 0))  # (R + 1, R + 1)
        lo = run[::block]
        hi = run[torch.clamp(torch.arange(1, blocks + 1, device=frame.device) * block, max=length) - 1] + 1
        count = prefix[hi[:, None], hi[None]] - prefix[lo[:, None], hi[None]]
        count = count - prefix[hi[:, None], lo[None]] + prefix[lo[:, None], lo[None]]
        span = hi - lo
        is_full = count == span[:, None] * span[None]
        if length % block:
            is_full[-1, :] = False
            is_full[:, -1] = False
        full.append(is_full)
        partial.append((count > 0) & ~is_full)
    return torch.stack(partial)[:, None], torch.stack(full)[:, None]


def _ordered(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Block-level boolean (B, H, nq, nkv) -> (kv_num_blocks, kv_indices), create_block_mask's layout."""
    dense = mask.to(torch.int32)
    indices = torch.argsort(dense, dim=-1, descending=True, stable=True)
    return dense.sum(-1).to(torch.int32).contiguous(), indices.to(torch.int32).contiguous()


def memory_block_mask(
    rules: MemoryRules, frame: torch.Tensor, kind: torch.Tensor, group: torch.Tensor, block: int = BLOCK_SIZE
) -> BlockMask:
    """The flex-attention BlockMask of the memory rule for (B, S) token metadata (module docstring)."""

    def mask_mod(b, h, q_idx, kv_idx):
        return rules.visible(
            frame[b, q_idx], kind[b, q_idx], group[b, q_idx], frame[b, kv_idx], kind[b, kv_idx], group[b, kv_idx]
        )

    partial, full = run_blocks(rules, frame, kind, group, block)
    length = frame.shape[1]
    return BlockMask.from_kv_blocks(
        *_ordered(partial), *_ordered(full), BLOCK_SIZE=block, mask_mod=mask_mod, seq_lengths=(length, length)
    )


def _cached(cache: OrderedDict, size: int, build: Callable, rules: MemoryRules, frame: torch.Tensor,
            kind: torch.Tensor, group: torch.Tensor) -> Any:
    """build(rules, frame, kind, group), reused while the same metadata comes back (LRU of `size`).

    Keyed by content, not shape alone: windows of the same length with different frame ids (anchors
    prepended to a late window) have different masks; and by the rules' value, not their id().
    """
    meta = torch.stack((frame, kind, group)).cpu()
    key = (rules.key, str(frame.device), tuple(meta.shape), meta.numpy().tobytes())
    value = cache.get(key)
    if value is None:
        value = cache[key] = build(rules, frame, kind, group)
        if len(cache) > size:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return value


def cached_block_mask(rules: MemoryRules, frame: torch.Tensor, kind: torch.Tensor, group: torch.Tensor) -> BlockMask:
    """`memory_block_mask`, reused while the same metadata comes back (episode mode: once per length)."""
    return _cached(_mask_cache, MASK_CACHE_SIZE, memory_block_mask, rules, frame, kind, group)


class GatherPlan(NamedTuple):
    """CPU attention plan: per block of queries [start, stop), the keys any of them sees and the mask
    restricted to those keys; `dense` (the whole mask) instead when most pairs are visible anyway."""

    blocks: list[tuple[int, int, torch.Tensor, torch.Tensor]]  # (start, stop, keys (K,), mask (B, 1, q, K))
    dense: torch.Tensor | None  # (B, 1, S, S) or None
    fraction: float  # share of the S x S pairs the blocks compute


def gather_plan(rules: MemoryRules, frame: torch.Tensor, kind: torch.Tensor, group: torch.Tensor,
                block: int | None = None, max_fraction: float | None = None) -> GatherPlan:
    """The rule's dense mask split into query blocks over their visible keys (module docstring).
    block / max_fraction: default GATHER_BLOCK / GATHER_MAX_FRACTION (read at call time)."""
    block = block or GATHER_BLOCK
    max_fraction = GATHER_MAX_FRACTION if max_fraction is None else max_fraction
    mask = rules.dense_mask(frame, kind, group)  # (B, 1, S, S)
    length = mask.shape[-1]
    spans = [(start, min(start + block, length)) for start in range(0, length, block)]
    # keys visible to some query (any batch row) of each block
    keys = [mask[:, :, a:b].any(dim=2).any(dim=1).any(dim=0).nonzero().squeeze(1) for a, b in spans]
    pairs = sum((b - a) * k.numel() for (a, b), k in zip(spans, keys, strict=True))
    fraction = pairs / max(length * length, 1)
    if fraction > max_fraction:  # decided before slicing: the fallback builds no block masks
        return GatherPlan([], mask, fraction)
    blocks = [(a, b, k, mask[:, :, a:b].index_select(-1, k)) for (a, b), k in zip(spans, keys, strict=True)]
    return GatherPlan(blocks, None, fraction)


def cached_gather_plan(rules: MemoryRules, frame: torch.Tensor, kind: torch.Tensor, group: torch.Tensor) -> GatherPlan:
    """`gather_plan`, reused while the same metadata comes back."""
    return _cached(_plan_cache, PLAN_CACHE_SIZE, gather_plan, rules, frame, kind, group)


class MemoryMaskedAttention:
    """Attention over a training sequence described per token by (frame, kind, group), each (B, S).

    compiled: False runs flex attention uncompiled (a slow reference path, for CPU tests);
    backend: the torch.compile backend of the compiled path ("inductor" on GPUs; tests count
    compiles through a counting backend).
    """

    def __init__(
        self,
        rules: MemoryRules,
        frame: torch.Tensor,
        kind: torch.Tensor,
        group: torch.Tensor,
        use_flex: bool | None = None,
        compiled: bool = True,
        backend: Any = "inductor",
    ):
        if use_flex is None:
            use_flex = frame.is_cuda and flex_attention is not None
        self.use_flex = use_flex
        self.length = frame.shape[1]
        if use_flex:
            self.padded_length = bucket_length(self.length)
            padded = pad_metadata(frame, kind, group, self.padded_length)
            self.block_mask = cached_block_mask(rules, *padded)
            self._flex = compiled_flex(backend) if compiled else flex_attention
        else:
            self.plan = cached_gather_plan(rules, frame, kind, group)
        self._metadata = (rules, frame, kind, group)

    @property
    def dense_mask(self) -> torch.Tensor:
        """The rule as a boolean (B, 1, S, S) mask, True = attend (diagnostics: bench/passkey_attention.py)."""
        rules, frame, kind, group = self._metadata
        return rules.dense_mask(frame, kind, group)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v (B, H, S, D) -> (B, H, S, D)."""
        if not self.use_flex:
            if self.plan.dense is not None:
                return F.scaled_dot_product_attention(q, k, v, attn_mask=self.plan.dense)
            return torch.cat([F.scaled_dot_product_attention(q[:, :, start:stop], k.index_select(2, keys),
                                                             v.index_select(2, keys), attn_mask=mask)
                              for start, stop, keys, mask in self.plan.blocks], dim=2)
        pad = (0, 0, 0, self.padded_length - self.length)
        out = self._flex(F.pad(q, pad), F.pad(k, pad), F.pad(v, pad), block_mask=self.block_mask)
        return out[:, :, : self.length]
