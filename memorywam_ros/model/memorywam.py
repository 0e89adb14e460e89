"""MemoryWAM: video DiT + action DiT as a mixture of transformers with hybrid persistent memory.

Two paths over the same weights:
  * `forward` (training): one sequence per episode window holding, per latent frame i, the clean
    (noise-augmented) video tokens f_i, gist tokens g_i, the noisy action chunk a_i and the noisy
    video of frame i+1; one masked joint attention per layer (mask from memory.MemoryRules).
  * `prefill` + `action_velocity` (inference): each new latent frame runs through the video
    expert once, its keys/values go into a MemoryKVCache that evicts per the same rules; the
    action expert then denoises a chunk attending to that cache (video generation off).
Their outputs agree to float tolerance (test/test_model_memory_parity.py).

Shapes: B batch, N latent frames, L video tokens per frame (h*w), M gists, K actions per chunk,
P committed actions (`config.action.committed_prefix`, 0 = none), A action dims, D_v / D_a expert
widths, H heads, hd head dim. Timesteps are sigma * 1000.

Committed prefix (real-time execution with observation lead P, README "Timing"): while chunk j+1
is computed the robot still executes the last P commands of chunk j. With P > 0 each action block
is [c_0 .. c_{P-1} a_0 .. a_{K-1}]: the committed commands as clean tokens (timestep 0, RoPE
k = -P..-1 right before the chunk), then the noisy chunk; the memory rules treat the block as one
action chunk, and only a_* are predicted (the loss never sees c_*).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.utils.checkpoint import checkpoint

from .action_dit import ActionDiT
from .attention import MemoryMaskedAttention
from .config import MemoryWAMConfig
from .flow_matching import euler_sample
from .memory import MemoryKVCache, MemoryRules, TokenKind
from .rope import action_positions, gist_positions, sincos_2d, video_positions
from .wan_video_dit import WanVideoDiT
from .weights import CheckpointError, cast_for_inference, load_into, load_safetensors_dir, read_json

CONFIG_FORMAT = "memorywam"
CONFIG_VERSION = 1


@dataclass
class TrainingOutput:
    action_velocity: torch.Tensor  # (B, N, K, A)
    video_velocity: torch.Tensor | None  # (B, N - 1, C, H, W), for frames 1..N-1


@dataclass
class TextContext:
    """Per-episode cross-attention keys/values of the instruction for each video block."""

    text: torch.Tensor  # (B, T, text_dim)
    video_kv: list[tuple[torch.Tensor, torch.Tensor]]


class MemoryWAM(nn.Module):
    def __init__(self, config: MemoryWAMConfig):
        super().__init__()
        self.config = config
        self.rules = MemoryRules(config.memory)
        self.video = WanVideoDiT(config.video)
        self.action = ActionDiT(config.action, config.video)
        if self.rules.num_gists:
            self.gist_tokens = nn.Parameter(torch.randn(self.rules.num_gists, config.video.inner_dim) * 0.02)
        else:
            self.register_parameter("gist_tokens", None)
        _, ph, pw = config.video.patch_size
        self.grid = (config.latent_height // ph, config.latent_width // pw)
        if config.absolute_pos_embed:  # (L, D_v), see MemoryWAMConfig.absolute_pos_embed
            self.pos_embed = nn.Parameter(sincos_2d(*self.grid, config.video.inner_dim) * 0.1)
        else:
            self.register_parameter("pos_embed", None)
        self.gradient_checkpointing = False

    def embed_video(self, latents: torch.Tensor) -> torch.Tensor:
        """Latent frames (B', C, H, W) -> video tokens (B', L, D_v): the patch embedding (+ the absolute
        position embedding when the config has one). Every path that turns a frame into tokens goes here."""
        x = self.video.patchify(latents[:, :, None])
        return x if self.pos_embed is None else x + self.pos_embed.to(x.dtype)

    def gist_inputs(self, video: torch.Tensor) -> torch.Tensor:
        """Video tokens (B', L, D_v) of B' frames -> the inputs of their gist tokens (B', M, D_v):
        the learned embeddings, plus (gist_init "pooled") the tokens averaged over the M cells of
        config.gist_grid, row-major (gist m <- cell (m // cols, m % cols)). Both paths (training
        forward and prefill) build gists here."""
        g = self.gist_tokens.to(video.dtype).expand(video.shape[0], -1, -1)
        if self.config.gist_init == "pooled":
            grid = video.transpose(1, 2).unflatten(2, self.grid)  # (B', D_v, h, w): tokens are (h, w) row-major
            g = g + F.adaptive_avg_pool2d(grid, self.config.gist_grid).flatten(2).transpose(1, 2)
        return g

    # ------------------------------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------------------------------
    def forward(
        self,
        latents: torch.Tensor,
        text: torch.Tensor,
        proprio: torch.Tensor,
        noisy_actions: torch.Tensor,
        action_timestep: torch.Tensor,
        frame_ids: torch.Tensor | None = None,
        cond_timestep: torch.Tensor | None = None,
        noisy_video: torch.Tensor | None = None,
        video_timestep: torch.Tensor | None = None,
        committed: torch.Tensor | None = None,
    ) -> TrainingOutput:
        """Velocities for every action chunk (and every next frame) of a window of N latent frames.

        latents (B, N, C, H, W) conditioning latents (already noise-augmented by the caller);
        text (B, T, text_dim); proprio (B, N, P) joint state at each frame;
        noisy_actions (B, N, K, A) with action_timestep (B, N); frame_ids (B, N) absolute
        frame indices in the episode (default 0..N-1); cond_timestep (B, N) augmentation level of
        the conditioning latents (default 0, as at inference); noisy_video (B, N-1, C, H, W) noisy
        latents of frames 1..N-1 with video_timestep (B, N-1); committed (B, N, P, A) the clean
        committed commands before each chunk (required iff P > 0).
        """
        b, n = latents.shape[:2]
        device = latents.device
        L, M, K = self.config.tokens_per_frame, self.rules.num_gists, self.config.action.chunk_size
        P = self._check_committed(committed, (b, n))
        if frame_ids is None:
            frame_ids = torch.arange(n, device=device).expand(b, n)
        if cond_timestep is None:
            cond_timestep = torch.zeros(b, n, device=device)

        # video-expert tokens: [f_0 g_0 f_1 g_1 ...] then [noisy video of frames 1..N-1]
        clean = self.embed_video(latents.flatten(0, 1)).unflatten(0, (b, n))  # (B, N, L, D_v)
        per_frame = [clean]
        if M:
            per_frame.append(self.gist_inputs(clean.flatten(0, 1)).unflatten(0, (b, n)))
        x_video = [torch.cat(per_frame, dim=2).flatten(1, 2)]
        pos = [self._frame_positions(frame_ids)]
        t_video = [cond_timestep.repeat_interleave(L + M, dim=1)]
        if noisy_video is not None:
            noisy = self.embed_video(noisy_video.flatten(0, 1)).unflatten(0, (b, n - 1))
            x_video.append(noisy.flatten(1, 2))
            pos.append(video_positions(frame_ids[:, 1:], *self.grid))  # placed at the frame they predict
            t_video.append(video_timestep.repeat_interleave(L, dim=1))
        x_video = torch.cat(x_video, dim=1)
        rope_video = self.video.rope(torch.cat(pos, dim=1)[:, None])  # (B, 1, S_v, hd/2)
        temb_video, mod_video = self.video.condition_embedder.time(torch.cat(t_video, dim=1))
        text_video = self.video.condition_embedder.text_embedder(text.to(x_video.dtype))

        # action-expert tokens: [c_0 a_0 c_1 a_1 ...] (c: the P committed commands, clean at timestep 0)
        blocks = noisy_actions if not P else torch.cat((committed.to(noisy_actions.dtype), noisy_actions), dim=2)
        x_action = self.action.action_encoder(blocks.to(self.action.action_encoder.weight.dtype)).flatten(1, 2)
        rope_action = self.video.rope(action_positions(frame_ids, P + K, first=-P)[:, None])
        t_action = action_timestep[..., None].expand(b, n, K)
        if P:
            t_action = torch.cat((torch.zeros(b, n, P, device=device, dtype=t_action.dtype), t_action), dim=2)
        temb_action, mod_action = self.action.condition_embedder.time(t_action.flatten(1, 2))
        context_action = self.action.context(text.repeat_interleave(n, dim=0), proprio.flatten(0, 1))  # (B*N, T+1, D_a)

        frame, kind, group = self.sequence_metadata(frame_ids, L, M, P + K, noisy_video is not None)
        attention = MemoryMaskedAttention(self.rules, frame, kind, group)
        for layer in range(self.config.video.num_layers):
            args = (
                layer,
                x_video,
                x_action,
                mod_video,
                mod_action,
                rope_video,
                rope_action,
                text_video,
                context_action,
                attention,
            )
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x_video, x_action = checkpoint(self._joint_layer, *args, use_reentrant=False)
            else:
                x_video, x_action = self._joint_layer(*args)

        # .clone(): the outputs are reshaped views; FSDP2 hooks its pre-backward onto the root's outputs and
        # warns about views (an in-place op on one would drop that hook). Copies of the small outputs are cheap.
        action_velocity = self.action.head(x_action, temb_action).unflatten(1, (n, P + K))[:, :, P:].clone()
        video_velocity = None
        if noisy_video is not None:
            start = n * (L + M)
            out = self.video.head(x_video[:, start:], temb_video[:, start:])  # (B, (N-1)*L, C*p)
            out = self.video.unpatchify(out.unflatten(1, (n - 1, L)).flatten(0, 1), 1, *self.grid)
            video_velocity = out.squeeze(2).unflatten(0, (b, n - 1)).clone()
        return TrainingOutput(action_velocity, video_velocity)

    def _joint_layer(
        self,
        layer: int,
        x_video: torch.Tensor,
        x_action: torch.Tensor,
        mod_video: torch.Tensor,
        mod_action: torch.Tensor,
        rope_video,
        rope_action,
        text_video: torch.Tensor,
        context_action: torch.Tensor,
        attention: MemoryMaskedAttention,
    ):
        """One mixture-of-transformers layer: own projections, one joint masked attention, own FFNs."""
        video_block, action_block = self.video.blocks[layer], self.action.blocks[layer]
        mv, ma = video_block.modulation(mod_video), action_block.modulation(mod_action)
        qv, kv, vv = video_block.self_attention_qkv(x_video, mv, *rope_video)
        qa, ka, va = action_block.self_attention_qkv(x_action, ma, *rope_action)
        out = attention(torch.cat((qv, qa), 2), torch.cat((kv, ka), 2), torch.cat((vv, va), 2))
        out_video, out_action = out.split((x_video.shape[1], x_action.shape[1]), dim=2)
        x_video = video_block.finish(x_video, out_video, mv, video_block.cross_kv(text_video))

        # each chunk cross-attends to its own frame's proprio token: fold frames into the batch
        b, n = x_action.shape[0], context_action.shape[0] // x_action.shape[0]
        fold = lambda t: t.unflatten(1, (n, -1)).flatten(0, 1)  # (B, N*K, ...) -> (B*N, K, ...)  # noqa: E731
        out_action = out_action.unflatten(2, (n, -1)).transpose(1, 2).flatten(0, 1)  # (B*N, H, K, hd)
        x_action = action_block.finish(
            fold(x_action), out_action, tuple(fold(m) for m in ma), action_block.cross_kv(context_action)
        )
        # not a view (.clone()): under FSDP2 this is a unit's output (see the note in forward); one (B, N*K, D_a)
        # copy per layer, 2 MiB in bf16 at 64 frames
        return x_video, x_action.unflatten(0, (b, n)).flatten(1, 2).clone()

    def _check_committed(self, committed: torch.Tensor | None, lead: tuple[int, ...]) -> int:
        """P, after checking that `committed` is (*lead, P, A) exactly when the model has a prefix."""
        P, A = self.config.action.committed_prefix, self.config.action.action_dim
        if not P:
            if committed is not None:
                raise ValueError("this model has no committed prefix (committed_prefix 0): pass committed=None")
            return 0
        if committed is None or tuple(committed.shape) != (*lead, P, A):
            got = None if committed is None else tuple(committed.shape)
            raise ValueError(f"committed must be {(*lead, P, A)} (the last {P} commands of the running chunk), "
                             f"got {got}")
        return P

    def _frame_positions(self, frame_ids: torch.Tensor) -> torch.Tensor:
        """(B, N) -> (B, N*(L+M), 3): each frame's video tokens then its gists."""
        video = video_positions(frame_ids, *self.grid).unflatten(1, (frame_ids.shape[1], -1))
        parts = [video]
        if self.rules.num_gists:
            parts.append(gist_positions(frame_ids, self.rules.num_gists).unflatten(1, (frame_ids.shape[1], -1)))
        return torch.cat(parts, dim=2).flatten(1, 2)

    @staticmethod
    def sequence_metadata(frame_ids: torch.Tensor, L: int, M: int, K: int, noisy_video: bool):
        """(frame, kind, group) per token of the training sequence, each (B, S), for the memory mask.

        Layout: [f_0 g_0 f_1 g_1 ...] (L + M per frame), then the noisy video of frames 1..N-1 (L
        each, belonging to the frame they are predicted from), then the action chunks a_0 a_1 ...
        (K each; K includes a committed prefix). S = N(L + M) + (N - 1)L + NK with video, N(L + M + K)
        without. A static method so
        benchmarks can build the paper's layout without building the paper's model.
        """
        b, n = frame_ids.shape
        chunk = torch.arange(n, device=frame_ids.device).expand(b, n)  # one block id per frame
        kind = torch.tensor([TokenKind.CLEAN] * L + [TokenKind.GIST] * M, device=frame_ids.device)
        frame = [frame_ids.repeat_interleave(L + M, dim=1)]
        kinds = [kind.repeat(n).expand(b, -1)]
        group = [torch.full_like(frame[0], -1)]
        if noisy_video:  # frame i+1's noisy video belongs to frame i's cache; blocks n..2n-2
            frame.append(frame_ids[:, :-1].repeat_interleave(L, dim=1))
            kinds.append(torch.full_like(frame[-1], TokenKind.NOISY))
            group.append((chunk[:, :-1] + n).repeat_interleave(L, dim=1))
        frame.append(frame_ids.repeat_interleave(K, dim=1))
        kinds.append(torch.full_like(frame[-1], TokenKind.ACTION))
        group.append(chunk.repeat_interleave(K, dim=1))
        return tuple(torch.cat(t, dim=1) for t in (frame, kinds, group))

    # ------------------------------------------------------------------------------------------
    # inference
    # ------------------------------------------------------------------------------------------
    def new_cache(
        self, batch: int = 1, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> MemoryKVCache:
        weight = self.video.patch_embedding.weight
        video = self.config.video
        return MemoryKVCache(
            self.rules,
            video.num_layers,
            batch,
            video.num_attention_heads,
            video.attention_head_dim,
            self.config.tokens_per_frame,
            scratch_tokens=max(self.config.action.chunk_size + self.config.action.committed_prefix,
                               self.config.tokens_per_frame),
            device=device or weight.device,
            dtype=dtype or weight.dtype,
        )

    def text_context(self, text: torch.Tensor) -> TextContext:
        """Instruction embedding (B, T, text_dim) -> per-block cross-attention keys/values (once per episode)."""
        ctx = self.video.condition_embedder.text_embedder(text.to(self.video.patch_embedding.weight.dtype))
        return TextContext(text, [block.cross_kv(ctx) for block in self.video.blocks])

    def action_context(self, text: TextContext, proprio: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Proprio (B, P) at the current frame -> per-block cross-attention keys/values (once per chunk)."""
        ctx = self.action.context(text.text, proprio)
        return [block.cross_kv(ctx) for block in self.action.blocks]

    def prefill(self, cache: MemoryKVCache, latent: torch.Tensor, frame_id: int, text: TextContext) -> None:
        """Run latent frame `frame_id` (B, C, H, W) through the video expert; its keys/values enter the cache."""
        b = latent.shape[0]
        L, M = self.config.tokens_per_frame, self.rules.num_gists
        x = self.embed_video(latent)  # (B, L, D_v)
        ids = torch.tensor([[frame_id]], device=x.device)
        if M:
            x = torch.cat((x, self.gist_inputs(x)), dim=1)
        cos, sin = self.video.rope(self._frame_positions(ids)[0])
        _, time_mod = self.video.condition_embedder.time(torch.zeros(b, 1, device=x.device))  # clean: t = 0
        video_start, gist_start = cache.begin_frame(frame_id)
        for layer, block in enumerate(self.video.blocks):
            mod = block.modulation(time_mod)
            q, k, v = block.self_attention_qkv(x, mod, cos, sin)
            cache.write(layer, video_start, k[:, :, :L], v[:, :, :L])
            if M:
                cache.write(layer, gist_start, k[:, :, L:], v[:, :, L:])
            attn = F.scaled_dot_product_attention(q, *cache.view(layer))
            x = block.finish(x, attn, mod, text.video_kv[layer])

    def action_velocity(
        self,
        cache: MemoryKVCache,
        noisy_actions: torch.Tensor,
        timestep: torch.Tensor,
        action_kv: list[tuple[torch.Tensor, torch.Tensor]],
        committed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Velocity of the noisy chunk (B, K, A) at timestep (B,), attending to the cache of its last frame;
        committed (B, P, A): the clean committed commands before it (iff the model has a prefix)."""
        b, K = noisy_actions.shape[:2]
        P = self._check_committed(committed, (b,))
        blocks = noisy_actions if not P else torch.cat((committed.to(noisy_actions.dtype), noisy_actions), dim=1)
        x = self.action.action_encoder(blocks.to(self.action.action_encoder.weight.dtype))
        ids = torch.tensor([cache.last_frame], device=x.device)
        cos, sin = self.video.rope(action_positions(ids, P + K, first=-P))
        t = timestep[:, None].expand(b, K)
        if P:
            t = torch.cat((torch.zeros(b, P, device=t.device, dtype=t.dtype), t), dim=1)
        temb, time_mod = self.action.condition_embedder.time(t if P else timestep[:, None])
        out = self.action.head(self._scratch_pass(self.action.blocks, cache, x, time_mod, cos, sin, action_kv), temb)
        return out[:, P:]

    def video_velocity(
        self,
        cache: MemoryKVCache,
        noisy_latent: torch.Tensor,
        timestep: torch.Tensor,
        next_frame_id: int,
        text: TextContext,
    ) -> torch.Tensor:
        """Velocity of the next frame's noisy latent (B, C, H, W): video prediction from the cache."""
        x = self.embed_video(noisy_latent)
        cos, sin = self.video.rope(video_positions(torch.tensor([next_frame_id], device=x.device), *self.grid))
        temb, time_mod = self.video.condition_embedder.time(timestep[:, None])
        x = self._scratch_pass(self.video.blocks, cache, x, time_mod, cos, sin, text.video_kv)
        return self.video.unpatchify(self.video.head(x, temb), 1, *self.grid).squeeze(2)

    @staticmethod
    def _scratch_pass(
        blocks: nn.ModuleList,
        cache: MemoryKVCache,
        x: torch.Tensor,
        time_mod: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cross_kv,
    ) -> torch.Tensor:
        """Denoised tokens see the cache plus themselves; they are written to scratch, never kept."""
        n = x.shape[1]
        for layer, block in enumerate(blocks):
            mod = block.modulation(time_mod)
            q, k, v = block.self_attention_qkv(x, mod, cos, sin)
            cache.write(layer, cache.used, k, v)
            x = block.finish(x, F.scaled_dot_product_attention(q, *cache.view(layer, scratch=n)), mod, cross_kv[layer])
        return x

    @torch.no_grad()
    def sample_actions(
        self,
        cache: MemoryKVCache,
        text: TextContext,
        proprio: torch.Tensor,
        num_steps: int = 10,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        shift: float = 1.0,
        committed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Denoise an action chunk (B, K, A) (normalised units) for the frame last prefilled.

        shift: the sigma shift the action branch was trained with (the checkpoint's
        SamplerSettings.action_shift; Policy passes it). committed (B, P, A), normalised: the last P
        commands of the running chunk (required iff the model has a committed prefix).
        """
        self._check_committed(committed, (cache.batch,))
        action_kv = self.action_context(text, proprio)
        if noise is None:
            shape = (cache.batch, self.config.action.chunk_size, self.config.action.action_dim)
            noise = torch.randn(shape, generator=generator, device=cache.device, dtype=torch.float32)

        def velocity(x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            return self.action_velocity(cache, x, timestep.expand(x.shape[0]), action_kv, committed).float()

        return euler_sample(velocity, noise, num_steps, shift=shift)

    # ------------------------------------------------------------------------------------------
    # checkpoints
    # ------------------------------------------------------------------------------------------
    def initialize_action_from_video(self) -> None:
        """Action DiT <- interpolated video DiT (call after loading pretrained video weights)."""
        self.action.initialize_from_video(self.video)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"format": CONFIG_FORMAT, "version": CONFIG_VERSION, **self.config.to_dict()}
        (directory / "config.json").write_text(json.dumps(config, indent=2))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> MemoryWAM:
        directory = Path(directory)
        config_path = directory / "config.json"
        if not config_path.is_file():
            raise CheckpointError(f"{directory}: config.json missing (not a MemoryWAM model directory)")
        raw = read_json(config_path, "model config")
        if raw.pop("format", None) != CONFIG_FORMAT or raw.pop("version", None) != CONFIG_VERSION:
            raise CheckpointError(f"{config_path}: not a MemoryWAM config of version {CONFIG_VERSION}")
        try:
            config = MemoryWAMConfig.from_dict(raw)
        except (TypeError, KeyError, ValueError) as err:
            raise CheckpointError(f"{config_path}: invalid config: {err}") from err
        with torch.device("meta"):
            model = cls(config)
        load_into(model, load_safetensors_dir(directory, "model"), f"{directory / 'model.safetensors'}")
        model = model.to(device)
        if dtype != torch.float32:
            cast_for_inference(model, dtype)
        return model.eval()
