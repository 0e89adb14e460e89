"""Complete checkpoint directories: everything the robot needs, in one folder.

    DIR/memorywam.json       manifest: format, camera order, image size, chunk, control rate, memory,
                             sampler (the training's sigma shifts and the default Euler step count)
    DIR/model/               MemoryWAM weights + config (safetensors + config.json)
    DIR/vae/                 diffusers AutoencoderKLWan (Wan2.2 layout)
    DIR/normalization.json   state/action statistics
    DIR/instructions/        precomputed umT5 instruction embeddings (the robot never loads T5)

`load_checkpoint(DIR)` checks every part and the fit between them, and fails with a message
naming the part. A manifest written before the "sampler" entry existed loads with
SamplerSettings() (action shift 1, video shift 5, 10 steps: TrainConfig's defaults, which every
such checkpoint was trained with unless its run overrode shift_action) and a warning.

The VAE always loads in float32, whatever the model's dtype: the training latents come from a
float32 VAE (memorywam-precompute), and a bfloat16 encoder moves them (random-weight Wan2.2
structure: ~1 % of their standard deviation rms, up to ~8 % per element, growing along the
episode through the causal cache; bench/vae_precision.py). Cost: the encoder's weights take
571 MiB instead of 285 MiB, and its convolutions run in float32 (TF32 on CUDA) instead of bf16.

`memorywam-checkpoint init-random --preset tiny --out DIR` writes a complete
random-weight directory for tests, benchmarks and robot smoke tests (it moves the arm
randomly within the node's limits: never run it enabled on a robot near people).
"""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan

from ..model import CheckpointError, MemoryWAM, MemoryWAMConfig
from ..model.flow_matching import SamplerSettings
from .chunk_executor import observation_substeps
from .instructions import InstructionStore, random_instruction_embeddings
from .normalization import Normalizer
from .vae import wan22_vae_config

MANIFEST = "memorywam.json"
FORMAT = "memorywam-checkpoint"
VERSION = 1
CAMERAS = ("head", "left_wrist", "right_wrist")
DEFAULT_INSTRUCTIONS = ("transfer the cube", "pick up the object")


@dataclass
class Checkpoint:
    directory: Path
    manifest: dict[str, Any]
    model: MemoryWAM
    vae: AutoencoderKLWan
    normalizer: Normalizer
    instructions: InstructionStore
    sampler: SamplerSettings


def _manifest(
    config: MemoryWAMConfig, image_size: tuple[int, int], random: bool, encoder_id: str, sampler: SamplerSettings
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "random_weights": random,
        "cameras": list(CAMERAS),
        "image_size": list(image_size),
        "chunk_size": config.action.chunk_size,
        "action_dim": config.action.action_dim,
        "control_rate_hz": 10.0,
        "observation_substeps": list(observation_substeps(config.action.chunk_size)),
        "memory": dict(config.memory.__dict__),
        # embeddings of any other text encoder mean nothing to this model
        "instruction_encoder": encoder_id,
        # inference integrates the flow the model was trained on: same shifts (flow_matching.py)
        "sampler": sampler.to_dict(),
        "parts": {
            "model": "model",
            "vae": "vae",
            "normalization": "normalization.json",
            "instructions": "instructions",
        },
    }


def write_checkpoint(
    directory: str | Path,
    model: MemoryWAM,
    vae: AutoencoderKLWan,
    normalizer: Normalizer,
    instructions: dict[str, torch.Tensor] | None = None,
    random: bool = False,
    image_size: tuple[int, int] = (384, 320),
    encoder_id: str | None = None,
    sampler: SamplerSettings | None = None,
) -> Path:
    """Write a complete directory; `instructions` maps text -> (T, text_dim) embedding.

    `encoder_id` names the text encoder the embeddings (and the training) came from
    (`instructions.encoder_identity`); later instructions must come from the same encoder.
    `sampler`: the training run's SamplerSettings (memorywam_train.train.sampler_settings);
    None: the defaults, which are TrainConfig's.
    """
    encoder_id = encoder_id or ("random" if random else "external")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory / "model")
    vae.save_pretrained(directory / "vae")
    normalizer.to_json(directory / "normalization.json")
    if instructions:
        texts = list(instructions)
        store = InstructionStore(directory / "instructions")
        store.put(texts, torch.stack([instructions[t] for t in texts]), encoder_id)
    manifest = _manifest(model.config, image_size, random, encoder_id, sampler or SamplerSettings())
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return directory


def load_checkpoint(
    directory: str | Path,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    vae_dtype: torch.dtype = torch.float32,
) -> Checkpoint:
    """dtype: the model's; vae_dtype: the VAE's, float32 unless you accept latents unlike the training ones."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{directory} is not a MemoryWAM checkpoint directory: {MANIFEST} missing")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CheckpointError(f"{manifest_path}: expected format {FORMAT!r} version {VERSION}")
    sampler = _sampler_settings(manifest, manifest_path)
    parts = {name: directory / rel for name, rel in manifest["parts"].items()}
    for name, path in parts.items():
        if not path.exists():
            raise CheckpointError(f"checkpoint {directory} is missing its {name} part ({path})")

    model = MemoryWAM.from_pretrained(parts["model"], device=device, dtype=dtype)
    try:
        vae = AutoencoderKLWan.from_pretrained(str(parts["vae"]), torch_dtype=vae_dtype, low_cpu_mem_usage=False)
        vae = vae.to(device).eval()
    except (OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {directory}: vae part unreadable: {err}") from err
    normalizer = Normalizer.from_json(parts["normalization"])
    store = InstructionStore(parts["instructions"])
    _check_fit(directory, manifest, model.config, vae, normalizer, store)
    return Checkpoint(directory, manifest, model, vae, normalizer, store, sampler)


def _sampler_settings(manifest: dict[str, Any], path: Path) -> SamplerSettings:
    """The manifest's sampler entry; absent (checkpoints written before it existed): the defaults, with a warning."""
    raw = manifest.get("sampler")
    if raw is None:
        default = SamplerSettings()
        warnings.warn(
            f"{path} has no 'sampler' entry (written before sampler settings were saved): using {default}, "
            "the training defaults; if that run set shift_action or shift_video, add them to the manifest",
            UserWarning,
            stacklevel=3,
        )
        return default
    try:
        return SamplerSettings.from_dict(raw)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid 'sampler' entry {raw}: {err}") from err


def _check_fit(
    directory: Path,
    manifest: dict[str, Any],
    config: MemoryWAMConfig,
    vae: AutoencoderKLWan,
    normalizer: Normalizer,
    store: InstructionStore,
) -> None:
    """The parts were made for each other: shapes agree, memory settings agree, instructions exist."""
    problems = []
    if vae.config.z_dim != config.video.in_channels:
        problems.append(f"vae z_dim {vae.config.z_dim} != model in_channels {config.video.in_channels}")
    height, width = manifest["image_size"]
    factor = vae.config.scale_factor_spatial
    if (height // factor, width // factor) != (config.latent_height, config.latent_width):
        problems.append(
            f"image {height}x{width} / vae {factor} != model latent grid {config.latent_height}x{config.latent_width}"
        )
    if normalizer.action_dim != config.action.action_dim or normalizer.state_dim != config.action.proprio_dim:
        problems.append(
            f"normalization dims (state {normalizer.state_dim}, action {normalizer.action_dim}) "
            f"!= model (proprio {config.action.proprio_dim}, action {config.action.action_dim})"
        )
    if manifest.get("memory") != dict(config.memory.__dict__):
        problems.append(f"manifest memory settings {manifest.get('memory')} != model {config.memory}")
    eid = manifest.get("instruction_encoder")
    if eid not in store.encoder_ids:
        problems.append(
            f"instructions part holds no embedding of the training encoder {eid} "
            "(run memorywam-encode-instructions with the training umT5)"
        )
    elif store.encoder_info(eid)["dim"] != config.video.text_dim:
        problems.append(
            f"instruction embeddings have dim {store.encoder_info(eid)['dim']}, "
            f"model text_dim is {config.video.text_dim}"
        )
    if problems:
        raise CheckpointError(f"checkpoint {directory} parts do not fit: " + "; ".join(problems))


def init_random(
    out: str | Path,
    preset: str = "tiny",
    policy: str = "hybrid",
    seed: int = 0,
    instructions: tuple[str, ...] = DEFAULT_INSTRUCTIONS,
    state_dim: int = 14,
) -> Path:
    """A complete random-weight checkpoint directory (action DiT interpolated from the video DiT)."""
    torch.manual_seed(seed)
    config = {"tiny": MemoryWAMConfig.tiny, "paper": MemoryWAMConfig.paper}[preset](policy)
    model = MemoryWAM(config)
    model.initialize_action_from_video()
    vae = AutoencoderKLWan(**wan22_vae_config(tiny=preset == "tiny"))
    # zero mean, unit std: normalised outputs ~N(0, 1) map to joint targets near zero
    normalizer = Normalizer.identity(state_dim, config.action.action_dim)
    embeddings = random_instruction_embeddings(list(instructions), config.video.text_dim, config.text_len, seed)
    return write_checkpoint(out, model, vae, normalizer, dict(zip(instructions, embeddings)), random=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memorywam-checkpoint", description="Create or inspect checkpoints.")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init-random", help="write a complete random-weight checkpoint directory")
    init.add_argument("--preset", choices=("tiny", "paper"), default="tiny")
    init.add_argument("--policy", default="hybrid", help="memory policy")
    init.add_argument("--out", required=True)
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--instruction", action="append", help="instruction(s) to embed (random embeddings)")
    init.add_argument("--overwrite", action="store_true")
    info = sub.add_parser("info", help="check a checkpoint directory and print its manifest")
    info.add_argument("directory")
    args = parser.parse_args(argv)

    if args.command == "init-random":
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            if not args.overwrite:
                parser.error(f"{out} exists and is not empty (use --overwrite)")
            shutil.rmtree(out)
        init_random(out, args.preset, args.policy, args.seed, tuple(args.instruction or DEFAULT_INSTRUCTIONS))
        print(f"wrote random {args.preset} checkpoint to {out}")
        return 0
    try:
        ckpt = load_checkpoint(args.directory)
    except CheckpointError as err:
        print(f"error: {err}")
        return 1
    print(json.dumps(ckpt.manifest, indent=2))
    print(f"instructions: {ckpt.instructions.texts()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
