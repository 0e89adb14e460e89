"""Configuration of the MemoryWAM network: the video DiT, the action DiT and the memory policy.

One dataclass tree serves the paper's sizes and the tiny test sizes (one code path). The video
DiT part uses the key names of diffusers' `WanTransformer3DModel` config.json so a diffusers
checkpoint's config maps onto it unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

MEMORY_POLICIES = ("hybrid", "full", "window", "no_anchor", "no_gist", "no_window")
GIST_INITS = ("learned", "pooled")


@dataclass
class VideoDiTConfig:
    """Wan2.2 video DiT (diffusers `WanTransformer3DModel` config keys)."""

    patch_size: tuple[int, int, int] = (1, 2, 2)
    num_attention_heads: int = 24
    attention_head_dim: int = 128
    in_channels: int = 48
    out_channels: int = 48
    text_dim: int = 4096
    freq_dim: int = 256
    ffn_dim: int = 14336
    num_layers: int = 30
    cross_attn_norm: bool = True
    qk_norm: str = "rms_norm_across_heads"
    eps: float = 1e-6
    rope_theta: float = 10000.0

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def __post_init__(self) -> None:
        self.patch_size = tuple(self.patch_size)  # type: ignore[assignment]
        if self.qk_norm != "rms_norm_across_heads":
            raise ValueError(f"qk_norm={self.qk_norm!r} is not supported (Wan2.2 uses 'rms_norm_across_heads')")
        if self.attention_head_dim % 2:
            raise ValueError("attention_head_dim must be even for rotary embeddings")

    @classmethod
    def from_diffusers_config(cls, config: dict[str, Any]) -> VideoDiTConfig:
        """Build from a diffusers `WanTransformer3DModel` config.json; refuses what we do not implement."""
        for key in ("image_dim", "added_kv_proj_dim", "pos_embed_seq_len"):
            if config.get(key) is not None:
                raise ValueError(f"diffusers config has {key}={config[key]!r}: only the TI2V/T2V layout is supported")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})


@dataclass
class ActionDiTConfig:
    """Action expert: same depth and attention shape as the video DiT, narrower hidden size."""

    hidden_dim: int = 1024
    ffn_dim: int = 4096
    action_dim: int = 14
    proprio_dim: int = 14
    chunk_size: int = 16
    # committed prefix (real-time execution, README "Timing"): the last `committed_prefix` commands of
    # the running chunk, which the robot executes while the next chunk is computed, given as clean
    # tokens at flow time 0 before the chunk (loss masked on them). 0: off; else = the observation lead.
    committed_prefix: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.committed_prefix < self.chunk_size:
            raise ValueError(f"committed_prefix {self.committed_prefix} must be in 0..chunk_size-1 ({self.chunk_size})")


@dataclass
class MemoryConfig:
    """Which cached video tokens a query may see (DESIGN §4); the rules live in `memory.py`."""

    policy: str = "hybrid"
    n_init: int = 2
    n_recent: int = 4
    num_gists: int = 8

    def __post_init__(self) -> None:
        if self.policy not in MEMORY_POLICIES:
            raise ValueError(f"memory policy {self.policy!r} unknown; choose one of {MEMORY_POLICIES}")
        if self.n_init < 0 or self.n_recent < 1 or self.num_gists < 0:
            raise ValueError(f"invalid memory sizes: {self}")
        if self.policy in ("hybrid", "no_anchor", "no_window") and self.num_gists < 1:
            raise ValueError(f"policy {self.policy!r} needs num_gists >= 1")


@dataclass
class MemoryWAMConfig:
    video: VideoDiTConfig = field(default_factory=VideoDiTConfig)
    action: ActionDiTConfig = field(default_factory=ActionDiTConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    # latent grid of one video frame (384x320 mosaic / 16 for the Wan2.2 VAE)
    latent_height: int = 24
    latent_width: int = 20
    # padded instruction-embedding length (umT5 tokens)
    text_len: int = 128
    # a learned (h, w) embedding added to every video token after the patch embedding (MemoryWAM.embed_video).
    # Wan2.2 has RoPE only, so a token's *value* does not say where it is: an action query that finds an
    # object by content reads what it is, not where. Off for the Wan2.2 weights; a small model trained from
    # scratch on the simulator can turn it on (issue 16 lever, bench/results/sim_levers.md).
    absolute_pos_embed: bool = False
    # how a frame's M gist tokens start before block 0 (MemoryWAM.gist_inputs). "learned": the paper's M
    # learned embeddings, the same for every frame, so a gist holds only what attention brings in; with a
    # few layers that is an average over everything the gist sees, in which a cue on part of the view is
    # diluted out (issue 15: bench/results/passkey_patch*.md). "pooled": the learned embeddings plus the
    # frame's video tokens average-pooled onto `gist_grid` (M cells of the token grid, row-major), so each
    # gist starts as an undiluted summary of its region and attention refines it.
    gist_init: str = "learned"

    def __post_init__(self) -> None:
        _, ph, pw = self.video.patch_size
        if self.latent_height % ph or self.latent_width % pw:
            raise ValueError("latent grid must be divisible by the patch size")
        if self.gist_init not in GIST_INITS:
            raise ValueError(f"gist_init {self.gist_init!r} unknown; choose one of {GIST_INITS}")
        if self.gist_init == "pooled" and self.memory.num_gists:
            _ = self.gist_grid  # raises when M cells do not fit the token grid
        if self.action.hidden_dim > self.video.inner_dim:
            raise ValueError("the action expert must not be wider than the video DiT (it is interpolated from it)")

    @property
    def gist_grid(self) -> tuple[int, int]:
        """(rows, cols) of the cells the "pooled" gist init averages over: rows * cols = M, each at most
        the token grid's, the shape nearest the grid's aspect (8 gists on 12 x 10 tokens: 4 x 2)."""
        _, ph, pw = self.video.patch_size
        h, w, m = self.latent_height // ph, self.latent_width // pw, self.memory.num_gists
        shapes = [(r, m // r) for r in range(1, m + 1) if m % r == 0 and r <= h and m // r <= w]
        if not shapes:
            raise ValueError(f"{m} gists do not fit a grid of cells on the {h} x {w} token grid")
        return min(shapes, key=lambda s: (abs(math.log(s[0] / s[1]) - math.log(h / w)), s))

    @property
    def tokens_per_frame(self) -> int:
        """L: video tokens of one latent frame after patchify (120 at 384x320)."""
        _, ph, pw = self.video.patch_size
        return (self.latent_height // ph) * (self.latent_width // pw)

    @classmethod
    def paper(cls, policy: str = "hybrid") -> MemoryWAMConfig:
        """Wan2.2-TI2V-5B video DiT + 1B action DiT, N_init 2, N_recent 4, M 8 (paper §4.1)."""
        return cls(memory=MemoryConfig(policy=policy))

    @classmethod
    def tiny(cls, policy: str = "hybrid", **memory: int) -> MemoryWAMConfig:
        """A few-MB model with the same structure, for tests and CPU smoke runs."""
        mem = {"n_init": 2, "n_recent": 4, "num_gists": 4, **memory}
        return cls(
            video=VideoDiTConfig(
                num_attention_heads=2, attention_head_dim=24, text_dim=32, freq_dim=32, ffn_dim=96, num_layers=2
            ),
            action=ActionDiTConfig(hidden_dim=24, ffn_dim=48),
            memory=MemoryConfig(policy=policy, **mem),
            text_len=16,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryWAMConfig:
        data = dict(data)
        return cls(
            video=VideoDiTConfig(**data.pop("video")),
            action=ActionDiTConfig(**data.pop("action")),
            memory=MemoryConfig(**data.pop("memory")),
            **data,
        )
