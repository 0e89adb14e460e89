"""`Policy`: camera mosaics and joint states in, (16, 14) absolute joint targets out. No ROS.

Observation protocol (paper App. A.1, DESIGN §1; lead ℓ = 0 shown, see chunk_executor.frame_rows):
    policy.reset(instruction)                 # new episode: empty memory, fresh VAE stream
    policy.observe(first_mosaic[None], q)     # latent frame 0 is one image
    chunk = policy.act()                      # execute 16 steps, take mosaics after sub-steps 3, 7, 11, 15
    policy.observe(four_mosaics, q); chunk = policy.act(); ...
Each observe() encodes one latent frame (streaming VAE) and prefills it into the memory cache;
act() denoises a chunk against that cache with the joint state of the last observation.

Inference uses what training used: the sampler's shift and default step count come from the
checkpoint manifest (SamplerSettings, written by the training run), and the VAE runs in float32
whatever the model's dtype, as memorywam-precompute's VAE did for the training latents
(bf16 moves the latents by ~1 % of their std rms, up to ~8 %: bench/vae_precision.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ..model import MemoryKVCache, MemoryWAM
from ..model.flow_matching import SamplerSettings
from .checkpoint import Checkpoint, load_checkpoint
from .instructions import InstructionStore
from .normalization import Normalizer
from .vae import StreamingVAEEncoder


class Policy:
    def __init__(
        self,
        model: MemoryWAM,
        vae: StreamingVAEEncoder,
        normalizer: Normalizer,
        instructions: InstructionStore,
        image_size: tuple[int, int],
        encoder_id: str | None = None,
        num_steps: int | None = None,
        seed: int = 0,
        sampler: SamplerSettings | None = None,
    ):
        """sampler: the checkpoint's settings (default: SamplerSettings()); num_steps: override its num_steps."""
        self.model = model.eval()
        self.vae = vae
        self.normalizer = normalizer
        self.store = instructions
        self.encoder_id = encoder_id
        self.image_size = tuple(image_size)
        self.sampler = sampler or SamplerSettings()
        self.num_steps = self.sampler.num_steps if num_steps is None else int(num_steps)
        self.seed = seed
        self.chunk_size = model.config.action.chunk_size
        self.action_dim = model.config.action.action_dim
        self.device = model.video.patch_embedding.weight.device
        self.dtype = model.video.patch_embedding.weight.dtype
        self.last_latency: dict[str, float] = {"vae": 0.0, "prefill": 0.0, "denoise": 0.0}
        self._cache = None
        self._text = None
        self._proprio: torch.Tensor | None = None
        self._generator: torch.Generator | None = None
        self.instruction: str | None = None
        self.manifest: dict | None = None  # the checkpoint's memorywam.json (from_pretrained)
        self.directory: Path | None = None

    @classmethod
    def from_pretrained(
        cls,
        directory: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        num_steps: int | None = None,
        seed: int = 0,
    ) -> Policy:
        """Load a complete checkpoint directory. dtype (the model's): bf16 on CUDA, float32 on CPU by default;
        the VAE is float32 always. num_steps: None = the checkpoint's (its training run's sample_steps)."""
        device = torch.device(device)
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        ckpt: Checkpoint = load_checkpoint(directory, device=device, dtype=dtype)
        vae = StreamingVAEEncoder(ckpt.vae)
        policy = cls(
            ckpt.model,
            vae,
            ckpt.normalizer,
            ckpt.instructions,
            tuple(ckpt.manifest["image_size"]),
            encoder_id=ckpt.manifest["instruction_encoder"],
            num_steps=num_steps,
            seed=seed,
            sampler=ckpt.sampler,
        )
        policy.manifest = ckpt.manifest  # what the node checks its parameters against
        policy.directory = ckpt.directory
        return policy

    # --- episode ---------------------------------------------------------------------------------
    @property
    def instructions(self) -> list[str]:
        return self.store.texts(self.encoder_id)

    @property
    def frames_observed(self) -> int:
        return 0 if self._cache is None else self._cache.num_frames

    @property
    def cache_bytes(self) -> int:
        return 0 if self._cache is None else self._cache.held_bytes

    @property
    def cache(self) -> MemoryKVCache | None:
        """The episode's memory (None before `reset`), for probes that read what it holds; the
        policy alone writes it."""
        return self._cache

    def reset(self, instruction: str) -> None:
        """Start an episode: look the instruction up (KeyError if unknown), clear memory and VAE stream."""
        embedding = self.store.get(instruction, self.encoder_id)  # raises before any state changes
        self._text = self.model.text_context(embedding[None].to(self.device))
        self._cache = self.model.new_cache(batch=1)
        self.vae.reset()
        self._proprio = None
        self._generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.instruction = instruction

    # --- observe / act ---------------------------------------------------------------------------
    @torch.no_grad()
    def observe(
        self,
        mosaics: np.ndarray | None = None,
        joint_state: np.ndarray | None = None,
        latent: torch.Tensor | None = None,
    ) -> None:
        """Add one latent frame: uint8 mosaics (1 first, then 4, H, W, 3) or a precomputed latent (C, h, w)."""
        if self._cache is None:
            raise RuntimeError("Policy.observe() before reset(instruction)")
        if joint_state is None:
            raise ValueError("observe() needs the joint state measured with the observation")
        state = np.asarray(joint_state, dtype=np.float64).reshape(-1)
        if state.shape != (self.normalizer.state_dim,) or not np.isfinite(state).all():
            raise ValueError(f"joint_state must be {self.normalizer.state_dim} finite values, got {state}")
        start = time.perf_counter()
        if latent is None:
            if mosaics is None:
                raise ValueError("observe() needs mosaics or a latent")
            latent = self.vae.encode(mosaics)[:, 0]  # (C, h, w)
        self._sync()
        encoded = time.perf_counter()
        self.model.prefill(self._cache, latent[None].to(self.device, self.dtype), self._cache.num_frames, self._text)
        self._sync()
        self._proprio = torch.as_tensor(self.normalizer.normalize_state(state), dtype=torch.float32)[None]
        self.last_latency["vae"] = encoded - start
        self.last_latency["prefill"] = time.perf_counter() - encoded

    @property
    def committed_prefix(self) -> int:
        """P: how many committed commands `act` needs (0: none; else the checkpoint's observation lead)."""
        return int(self.model.config.action.committed_prefix)

    @torch.no_grad()
    def act(self, committed: np.ndarray | None = None) -> np.ndarray:
        """Denoise the next chunk -> float64 (chunk_size, action_dim) absolute joint targets.

        committed (P, action_dim) absolute joint targets: the last P commands of the chunk the robot
        is executing (required iff `committed_prefix` P > 0; the hold pose at an episode start)."""
        if self._proprio is None:
            raise RuntimeError("Policy.act() before observe(): the chunk needs an observation")
        prefix = None
        if self.committed_prefix:
            c = None if committed is None else np.asarray(committed, dtype=np.float64)
            if c is None or c.shape != (self.committed_prefix, self.action_dim) or not np.isfinite(c).all():
                raise ValueError(f"act() needs the last {self.committed_prefix} committed commands as finite "
                                 f"({self.committed_prefix}, {self.action_dim}) joint targets, got "
                                 f"{None if c is None else c.shape}")
            prefix = torch.as_tensor(self.normalizer.normalize_action(c), dtype=torch.float32)[None].to(self.device)
        elif committed is not None:
            raise ValueError("this checkpoint has no committed prefix: act() takes no committed commands")
        start = time.perf_counter()
        chunk = self.model.sample_actions(
            self._cache,
            self._text,
            self._proprio.to(self.device),
            self.num_steps,
            generator=self._generator,
            shift=self.sampler.action_shift,
            committed=prefix,
        )
        self._sync()
        self.last_latency["denoise"] = time.perf_counter() - start
        return np.asarray(self.normalizer.denormalize_action(chunk[0].double().cpu().numpy()), dtype=np.float64)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
