"""Complete checkpoint directories: everything the robot needs, in one folder.

    DIR/memorywam.json       manifest: format, camera order, image size, chunk, control rate,
                             observation schedule (lead ℓ and sub-steps), memory, sampler (the
                             training's sigma shifts and the default Euler step count)
    DIR/model/               MemoryWAM weights + config (safetensors + config.json)
    DIR/vae/                 diffusers AutoencoderKLWan (Wan2.2 layout)
    DIR/normalization.json   state/action statistics
    DIR/instructions/        precomputed umT5 instruction embeddings (the robot never loads T5)

`load_checkpoint(DIR)` checks every part and the fit between them, and fails with a message
naming the part. `memorywam-checkpoint init-random --preset tiny --out DIR` writes a complete
random-weight directory for tests, benchmarks and robot smoke tests. Its action statistics
centre the outputs on a home pose (`--robot FILE`: the robot file's `home`, else zeros clipped
into its limits; default zeros) with a small std (`--action-std`, 0.02): random outputs
(normalised |x| < ~4, measured on the tiny preset) become targets within ~0.08 of home, so with
the arm at home every chunk starts well inside `max_start_distance` and is executed — the arm
moves randomly by a few degrees around home. An arm elsewhere gets its chunks refused (start
distance), as it should. Never run it enabled on a robot near people.

A manifest written before the "sampler" entry existed loads with
SamplerSettings() (action shift 1, video shift 5, 10 steps: TrainConfig's defaults, which every
such checkpoint was trained with unless its run overrode shift_action) and a warning.

The VAE always loads in float32, whatever the model's dtype: the training latents come from a
float32 VAE (memorywam-precompute), and a bfloat16 encoder moves them (random-weight Wan2.2
structure: ~1 % of their standard deviation rms, up to ~8 % per element, growing along the
episode through the causal cache; bench/vae_precision.py). Cost: the encoder's weights take
571 MiB instead of 285 MiB, and its convolutions run in float32 (TF32 on CUDA) instead of bf16.
"""

from __future__ import annotations

import argparse
import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from diffusers import AutoencoderKLWan

from ..model import CheckpointError, MemoryWAM, MemoryWAMConfig
from ..model.flow_matching import SamplerSettings
from ..model.weights import read_json
from .chunk_executor import check_lead, observation_substeps
from .instructions import InstructionStore, random_instruction_embeddings
from .normalization import DEFAULT_STD_FLOOR, ArrayStats, Normalizer
from .vae import wan22_vae_config

MANIFEST = "memorywam.json"
FORMAT = "memorywam-checkpoint"
VERSION = 1
CAMERAS = ("head", "left_wrist", "right_wrist")
DEFAULT_INSTRUCTIONS = ("transfer the cube", "pick up the object")
T = TypeVar("T")


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
    config: MemoryWAMConfig, image_size: tuple[int, int], random: bool, encoder_id: str, lead: int,
    sampler: SamplerSettings,
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
        # the schedule the training latents were taken with (memorywam-precompute --observation-lead)
        "observation_lead": lead,
        "observation_substeps": list(observation_substeps(config.action.chunk_size, lead)),
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
    observation_lead: int = 0,
    sampler: SamplerSettings | None = None,
) -> Path:
    """Write a complete directory; `instructions` maps text -> (T, text_dim) embedding.

    `observation_lead` is the ℓ the training latents were precomputed with (precompute.json).

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
    manifest = _manifest(model.config, image_size, random, encoder_id,
                         check_lead(observation_lead, model.config.action.chunk_size), sampler or SamplerSettings())
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return directory


REQUIRED_MANIFEST_KEYS = ("image_size", "instruction_encoder", "parts")


def _load_part(directory: Path, name: str, path: Path, load: Callable[[], T]) -> T:
    """Run `load`; any failure becomes one CheckpointError naming the part and its path.

    Why: a truncated safetensors file or a broken JSON otherwise surfaces as a library error
    ("invalid header length") that names neither the file nor the part.
    """
    try:
        return load()
    except CheckpointError as err:
        if str(path) in str(err):
            raise
        raise CheckpointError(f"checkpoint {directory}: {name} part {path}: {err}") from err
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {directory}: {name} part {path} unreadable: {type(err).__name__}: {err}"
        ) from err


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
    manifest = read_json(manifest_path, "checkpoint manifest")
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CheckpointError(f"{manifest_path}: expected format {FORMAT!r} version {VERSION}")
    missing = [k for k in REQUIRED_MANIFEST_KEYS if k not in manifest]
    if missing or not isinstance(manifest["parts"], dict):
        raise CheckpointError(f"{manifest_path}: manifest lacks {missing or ['a parts mapping']}")
    parts = {name: directory / str(rel) for name, rel in manifest["parts"].items()}
    for name in ("model", "vae", "normalization", "instructions"):
        if name not in parts:
            raise CheckpointError(f"{manifest_path}: parts names no {name} part")
        if not parts[name].exists():
            raise CheckpointError(f"checkpoint {directory} is missing its {name} part ({parts[name]})")

    model = _load_part(directory, "model", parts["model"],
                       lambda: MemoryWAM.from_pretrained(parts["model"], device=device, dtype=dtype))

    def load_vae() -> AutoencoderKLWan:
        vae = AutoencoderKLWan.from_pretrained(str(parts["vae"]), torch_dtype=vae_dtype, low_cpu_mem_usage=False)
        return vae.to(device).eval()

    sampler = _sampler_settings(manifest, manifest_path)
    vae = _load_part(directory, "vae", parts["vae"], load_vae)
    normalizer = _load_part(directory, "normalization", parts["normalization"],
                            lambda: Normalizer.from_json(parts["normalization"]))
    store = _load_part(directory, "instructions", parts["instructions"],
                       lambda: InstructionStore(parts["instructions"]))
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
    if manifest.get("chunk_size") != config.action.chunk_size or manifest.get("action_dim") != config.action.action_dim:
        problems.append(
            f"manifest chunk {manifest.get('chunk_size')} x action {manifest.get('action_dim')} != model "
            f"{config.action.chunk_size} x {config.action.action_dim}"
        )
    else:
        try:
            schedule = list(observation_substeps(config.action.chunk_size, manifest_lead(manifest)))
            if manifest.get("observation_substeps", schedule) != schedule:
                problems.append(f"manifest observation_substeps {manifest['observation_substeps']} != the "
                                f"schedule of observation_lead {manifest_lead(manifest)}: {schedule}")
        except ValueError as err:
            problems.append(f"manifest {err}")
        prefix = config.action.committed_prefix
        if prefix and prefix != manifest_lead(manifest):
            problems.append(f"model takes {prefix} committed commands, which only exist with observation_lead "
                            f"{prefix}; the manifest's is {manifest_lead(manifest)}")
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


def manifest_lead(manifest: dict[str, Any]) -> int:
    """ℓ of a manifest; checkpoints written before the lead existed were trained with ℓ = 0."""
    return manifest.get("observation_lead", 0)


def manifest_conflicts(manifest: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """What `expected` (the robot's settings: control_rate_hz, observation_lead, cameras,
    action_dim, chunk_size; a value of None is not checked) contradicts in the manifest, one line
    each. A checkpoint only means anything on the grid it was trained on: another rate, lead or
    camera order would feed it observations at the wrong times or in the wrong places."""
    have = dict(manifest, observation_lead=manifest_lead(manifest))
    problems = []
    for key, want in expected.items():
        if want is None:
            continue
        got = have.get(key)
        same = (got is not None and abs(float(got) - float(want)) < 1e-6) if key == "control_rate_hz" else (
            got == (list(want) if isinstance(want, tuple) else want))
        if not same:
            problems.append(f"{key} is {want!r} here, the checkpoint's is {got!r}")
    return problems


def init_random(
    out: str | Path,
    preset: str = "tiny",
    policy: str = "hybrid",
    seed: int = 0,
    instructions: tuple[str, ...] = DEFAULT_INSTRUCTIONS,
    state_dim: int = 14,
    home: np.ndarray | None = None,
    action_std: float = 0.02,
) -> Path:
    """A complete random-weight checkpoint directory (action DiT interpolated from the video DiT).

    Actions are denormalised as home + action_std · output (module docstring: why)."""
    torch.manual_seed(seed)
    config = {"tiny": MemoryWAMConfig.tiny, "paper": MemoryWAMConfig.paper}[preset](policy)
    dim = config.action.action_dim
    center = np.zeros(dim) if home is None else np.asarray(home, dtype=np.float64)
    if center.shape != (dim,) or not np.all(np.isfinite(center)):
        raise ValueError(f"home must be {dim} finite values (one per action dimension), got shape {center.shape}")
    if not action_std > 0:
        raise ValueError(f"action_std must be positive, got {action_std}")
    model = MemoryWAM(config)
    model.initialize_action_from_video()
    vae = AutoencoderKLWan(**wan22_vae_config(tiny=preset == "tiny"))
    inf = np.full(dim, np.inf)
    action = ArrayStats(center, np.full(dim, float(action_std)), -inf, inf, 0)
    normalizer = Normalizer(Normalizer.identity(state_dim, dim).state, action,
                            std_floor=min(DEFAULT_STD_FLOOR, float(action_std)))
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
    init.add_argument("--robot", help="robot file (path or name in config/robots): outputs centre on its `home` "
                      "(else zeros clipped into its limits)")
    init.add_argument("--action-std", type=float, default=0.02,
                      help="spread of the random outputs around home, joint units (default 0.02)")
    info = sub.add_parser("info", help="check a checkpoint directory and print its manifest")
    info.add_argument("directory")
    args = parser.parse_args(argv)

    if args.command == "init-random":
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            if not args.overwrite:
                parser.error(f"{out} exists and is not empty (use --overwrite)")
            shutil.rmtree(out)
        home = None
        if args.robot:
            from ..ros.params import resolve_robot_config  # ROS-free: the parameter table and file lookup
            from .robot_config import RobotConfig

            try:
                robot = RobotConfig.from_yaml(resolve_robot_config(args.robot))
            except (OSError, ValueError) as err:
                parser.error(f"--robot: {err}")
            home = robot.home if robot.home is not None else np.clip(0.0, robot.position_min, robot.position_max)
        try:
            init_random(out, args.preset, args.policy, args.seed, tuple(args.instruction or DEFAULT_INSTRUCTIONS),
                        home=home, action_std=args.action_std)
        except ValueError as err:
            parser.error(str(err))
        where = "zeros" if home is None else f"the home pose of {args.robot}"
        print(f"wrote random {args.preset} checkpoint to {out} (outputs around {where}, std {args.action_std:g})")
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
