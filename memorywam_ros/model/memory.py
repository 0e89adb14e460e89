"""The memory rules: which token may see which. The one place that decides it.

Everything else derives from `MemoryRules`:
  * the training attention mask (`MemoryRules.visible`, evaluated densely on CPU or as a
    flex-attention block mask on CUDA, see attention.py), and
  * the inference KV cache (`MemoryKVCache.begin_frame` evicts exactly what the rules hide).
The invariant tested in test/test_model_memory_parity.py: a masked whole-sequence forward and the
incremental cached path give the same predictions.

Per latent frame i (absolute frame id) a sequence holds clean video tokens f_i (L), gist tokens
g_i (M) and, in training, the noisy action chunk a_i and the noisy video predicted with it. The
*visible history* of frame i:
  * full tokens of anchor frames (id < n_init) and of the recent window (the `window` most recent
    frames, frame i included),
  * gist tokens of every frame up to i.
f_i and g_i see the visible history of frame i (so each other, both ways). a_i and its noisy video
see exactly the cache after frame i was prefilled, plus their own block. Nothing sees an action
token except its own chunk, so no query sees an earlier chunk and video never sees actions.

Policies (paper's hybrid and its ablations; `full` is the LingBot-VA-style, `window` the
FastWAM-style baseline):
                anchors   window      gists
  hybrid        n_init    n_recent    yes
  full          -         all         no
  window        -         n_recent    no
  no_anchor     -         n_recent    yes
  no_gist       n_init    n_recent    no
  no_window     n_init    1 (frame i) yes
"""

from __future__ import annotations

from enum import IntEnum

import torch

from .config import MemoryConfig


class TokenKind(IntEnum):
    CLEAN = 0  # clean (conditioning) video tokens of a frame: cacheable
    GIST = 1  # gist tokens of a frame: cacheable
    ACTION = 2  # noisy action chunk being denoised
    NOISY = 3  # noisy next-frame video being denoised (training only)


class MemoryRules:
    def __init__(self, config: MemoryConfig):
        self.config = config
        policy = config.policy
        self.uses_gists = policy in ("hybrid", "no_anchor", "no_window")
        self.num_gists = config.num_gists if self.uses_gists else 0
        self.n_anchor = config.n_init if policy in ("hybrid", "no_gist", "no_window") else 0
        # None: unbounded (every earlier frame stays in full)
        self.window: int | None = None if policy == "full" else (1 if policy == "no_window" else config.n_recent)

    @property
    def key(self) -> tuple:
        """What decides the mask, as a hashable value: mask caches key on this, never on id(self)
        (ids are reused once a rules object is garbage-collected, which served a stale mask)."""
        return (self.uses_gists, self.num_gists, self.n_anchor, self.window)

    # --- frame-level rules (ints or tensors of absolute frame ids) ---------------------------
    def sees_full(self, query_frame, key_frame):
        """May queries of frame `query_frame` see the full video tokens of frame `key_frame`?"""
        earlier = key_frame <= query_frame
        if self.window is None:
            return earlier
        return earlier & ((key_frame < self.n_anchor) | (query_frame - key_frame < self.window))

    def sees_gist(self, query_frame, key_frame):
        """May queries of frame `query_frame` see the gist tokens of frame `key_frame`?"""
        return (key_frame <= query_frame) & self.uses_gists

    def held_full_frames(self, n_frames: int) -> int:
        """Frames held in full after frames 0..n-1 were prefilled (closed formula)."""
        if self.window is None:
            return n_frames
        return min(n_frames, self.window) + min(max(n_frames - self.window, 0), self.n_anchor)

    def held_tokens(self, n_frames: int, tokens_per_frame: int) -> int:
        """Cached tokens per layer after n frames, e.g. hybrid: (N_init + N_recent)·L + N·M once N >= 6."""
        return self.held_full_frames(n_frames) * tokens_per_frame + n_frames * self.num_gists

    # --- token-level rule (training mask) ------------------------------------------------------
    def visible(
        self,
        q_frame: torch.Tensor,
        q_kind: torch.Tensor,
        q_group: torch.Tensor,
        k_frame: torch.Tensor,
        k_kind: torch.Tensor,
        k_group: torch.Tensor,
    ) -> torch.Tensor:
        """Elementwise: may query token q attend to key token k? (broadcasting tensors)

        frame: the absolute id of the frame whose cache the token belongs to (a_i and its noisy
        video belong to frame i); kind: TokenKind; group: a block id, equal within one action chunk
        or one noisy frame.
        """
        # plain ints: tracing for flex attention does not handle enum members in comparisons
        clean, gist, action = int(TokenKind.CLEAN), int(TokenKind.GIST), int(TokenKind.ACTION)
        from_cache = torch.where(
            k_kind == clean,
            self.sees_full(q_frame, k_frame),
            (k_kind == gist) & self.sees_gist(q_frame, k_frame),
        )
        # cacheable queries (f_i, g_i) never see denoised tokens; denoised tokens see their own block
        own_block = (k_kind >= action) & (q_group == k_group)
        return from_cache | own_block

    def dense_mask(self, frame: torch.Tensor, kind: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """Per-token metadata (B, S) -> boolean mask (B, 1, S, S), True = attend. For CPU / tiny sizes."""
        q = (t[:, :, None] for t in (frame, kind, group))
        k = (t[:, None, :] for t in (frame, kind, group))
        return self.visible(*q, *k)[:, None]


class MemoryKVCache:
    """Per-layer keys/values of the cached video tokens, evicted as the rules require.

    One buffer per layer, (B, H, capacity, head_dim). Full-frame tokens occupy slots of L tokens;
    a frame evicted from the window frees its slot and the next frame reuses it, so the held
    tokens always form the contiguous prefix [0, used) and attention reads a view, never a copy.
    Gists (and, for `full`, whole frames) are appended; the buffer doubles when it runs out.
    The `scratch` tokens right after the prefix hold the keys/values of the tokens being
    denoised, so a denoising step also attends over a view.
    """

    def __init__(
        self,
        rules: MemoryRules,
        num_layers: int,
        batch: int,
        heads: int,
        head_dim: int,
        tokens_per_frame: int,
        scratch_tokens: int,
        device: torch.device | str,
        dtype: torch.dtype,
    ):
        self.rules = rules
        self.num_layers, self.batch, self.heads, self.head_dim = num_layers, batch, heads, head_dim
        self.tokens_per_frame = tokens_per_frame
        self.scratch_tokens = scratch_tokens
        self.device, self.dtype = torch.device(device), dtype
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.capacity = 0
        self.used = 0
        self.full_slots: dict[int, int] = {}  # frame id -> first token of its slot
        self.frames: list[int] = []  # every frame prefilled so far
        self._free_slots: list[int] = []

    # --- bookkeeping ---------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def last_frame(self) -> int | None:
        return self.frames[-1] if self.frames else None

    @property
    def held_tokens(self) -> int:
        """Tokens held per layer (excluding scratch)."""
        return self.used

    def bytes_per_token(self) -> int:
        return self.num_layers * 2 * self.heads * self.head_dim * torch.finfo(self.dtype).bits // 8

    @property
    def held_bytes(self) -> int:
        return self.used * self.bytes_per_token()

    @property
    def allocated_bytes(self) -> int:
        return self.capacity * self.bytes_per_token()

    def _reserve(self, tokens: int) -> int:
        """Append `tokens` at the end of the held prefix; returns their first index."""
        needed = self.used + tokens + self.scratch_tokens
        if needed > self.capacity:
            new_capacity = max(needed, 2 * self.capacity, 8 * self.tokens_per_frame)
            shape = (self.batch, self.heads, new_capacity, self.head_dim)
            for store in (self.keys, self.values):
                for layer in range(self.num_layers):
                    grown = torch.empty(shape, device=self.device, dtype=self.dtype)
                    if self.capacity:
                        grown[:, :, : self.used] = store[layer][:, :, : self.used]
                        store[layer] = grown
                    else:
                        store.append(grown)
            self.capacity = new_capacity
        start = self.used
        self.used += tokens
        return start

    def begin_frame(self, frame_id: int) -> tuple[int, int | None]:
        """Evict what frame `frame_id` may no longer see; place its tokens. Returns (video start, gist start)."""
        if self.frames and frame_id <= self.frames[-1]:
            raise ValueError(f"frame ids must increase: got {frame_id} after {self.frames[-1]}")
        for old in list(self.full_slots):
            if not self.rules.sees_full(frame_id, old):
                self._free_slots.append(self.full_slots.pop(old))
        video_start = self._free_slots.pop() if self._free_slots else self._reserve(self.tokens_per_frame)
        if self._free_slots:  # the rules evict at most one frame per new frame; a hole would be a bug
            raise RuntimeError("memory cache left a hole; eviction evicted more frames than it added")
        gist_start = self._reserve(self.rules.num_gists) if self.rules.num_gists else None
        self.full_slots[frame_id] = video_start
        self.frames.append(frame_id)
        return video_start, gist_start

    def write(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v (B, H, n, head_dim) into positions [start, start + n) of `layer`."""
        n = k.shape[2]
        self.keys[layer][:, :, start : start + n] = k
        self.values[layer][:, :, start : start + n] = v

    def view(self, layer: int, scratch: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Held keys/values of `layer` plus the first `scratch` scratch tokens: (B, H, used + scratch, D)."""
        end = self.used + scratch
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]
