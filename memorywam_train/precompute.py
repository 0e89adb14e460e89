"""`memorywam-precompute`: episodes (HDF5) -> VAE latents + action chunks + instruction embeddings.

    memorywam-precompute EPISODES_DIR --vae CKPT_DIR|VAE_DIR --out LATENTS_DIR
                         [--text-encoder UMT5_DIR | --random-text-dim D] [--text-len 128]
                         [--observation-lead L] [--device cuda] [--vae-dtype float32]
                         [--latent-dtype float32] [--overwrite]

Alignment convention (the robot's observation protocol, DESIGN §1 / paper App. A.1)
----------------------------------------------------------------------------------
Episode rows t = 0..T-1 are 10 Hz control steps; row t holds the images and joint state observed
at t and the command issued at t (`action[t]`, as-of, see convert.py). On the robot:

* latent frame 0 = the mosaic of row 0 alone (first observation of the episode);
* after observing latent frame j, the robot executes chunk j: the 16 commands of rows
  16j .. 16j+15 (sub-steps k = 0..15, command k issued at row 16j+k);
* it takes a mosaic after sub-steps 3, 7, 11, 15 of chunk j, i.e. at rows
  16j+4, 16j+8, 16j+12, 16j+16, and encodes those 4 as latent frame j+1.

Hence, with OBS(j) = 16j the row of the last mosaic of latent frame j:

    mosaics of latent frame 0      = row 0
    mosaics of latent frame j >= 1 = rows 16(j-1)+4, 16(j-1)+8, 16(j-1)+12, 16j
    proprio of latent frame j      = state[16j]                 (measured with its last mosaic)
    action chunk of latent frame j = action[16j .. 16j+15]      (what the robot executes next)

Observation lead ℓ (`--observation-lead L`, control steps, 0 <= ℓ < 16; ℓ = 0 is the table
above): the robot takes the mosaics of latent frame j+1 ℓ steps earlier, after sub-steps 3-ℓ,
7-ℓ, 11-ℓ, 15-ℓ of chunk j, so that inference has ℓ·100 ms while the last ℓ commands of chunk j
still run, and chunk j+1 starts on the tick after chunk j's last command (no hold). The table
becomes, with OBS(j) = max(0, 16j-ℓ):

    mosaics of latent frame 0      = row 0
    mosaics of latent frame j >= 1 = rows max(0, 16(j-1)+4-ℓ), max(0, 16(j-1)+8-ℓ),
                                          max(0, 16(j-1)+12-ℓ), 16j-ℓ
    proprio of latent frame j      = state[OBS(j)]
    action chunk of latent frame j = action[16j .. 16j+15]      (unchanged: no pause, no skip)

e.g. ℓ = 3: frame 1 = rows 1, 5, 9, 13, frame 2 = rows 17, 21, 25, 29, proprio rows 0, 13, 29.
Rows before the episode's first row repeat it: for ℓ >= 4 latent frame 1 starts with row 0 (once
for 4 <= ℓ < 8, twice for 8 <= ℓ < 12, three times for ℓ >= 12; ℓ = 5: rows 0, 3, 7, 11), which on
the robot is the episode's first observation again: it stood still until chunk 0 arrived.
The rows are `memorywam_ros.runtime.chunk_executor.frame_rows(j, K, ℓ)`, the same function the
node's ChunkExecutor samples with (test/test_runtime_realtime.py drives it tick by tick against
this table); the checkpoint manifest records ℓ (`observation_lead`) and the node refuses a
checkpoint whose ℓ its parameter contradicts.

The numbers are for the robot's chunk of 16; `--chunk-size K` (a multiple of 4, the model's
`action.chunk_size`) scales them: OBS(j) = max(0, Kj-ℓ), mosaics after sub-steps K/4-1-ℓ, 2K/4-1-ℓ,
3K/4-1-ℓ, K-1-ℓ (0 <= ℓ < K).

All of this assumes row t is exactly t control periods after row 0: `check_grid` refuses an
episode whose stamps_ns leave the uniform grid stamps_ns[0] + t/control_rate_hz by more than
GRID_TOLERANCE (10 %) of a period (10 ms at 10 Hz), naming the file and the first such row. The
converter and the RoboTwin importer write exact grids (1 ns rounding) and split episodes at gaps,
so the tolerance only admits other writers' timestamp jitter; a dropped or repeated row is
off by a whole period and is refused (it would shift every later mosaic and chunk).

An episode of T rows yields N = 1 + (T-1) // 16 latent frames (a frame needs all 4 of its
mosaics and the first command of its chunk; a trailing partial group is dropped). The last
chunk(s) may run past row T-1: those steps repeat the last action (a hold, harmless to
normalisation) and are False in `action_mask`, so the trainer ignores them.

Every latent frame is encoded with `StreamingVAEEncoder`, one `encode` call per latent frame
(1 mosaic, then 4), with the same causal cache the robot keeps: the training latents are the
robot's latents bit for bit for the same images (test/test_train_dataset.py).

Output layout
-------------
    LATENTS_DIR/<episode>.safetensors   tensors:
        latents       (N, 48, H/16, W/16) float32 (or bfloat16: --latent-dtype)
        mosaic_rows   (N, 4) int64  episode rows of each latent frame's mosaics (-1 = none: frame 0)
        obs_rows      (N,)   int64  OBS(j) = max(0, 16j-ℓ)
        actions       (N, 16, A) float32  raw (unnormalised) joint commands
        action_mask   (N, 16) bool        False where the chunk runs past the episode's end
        proprio       (N, S) float32      raw joint state at OBS(j)
      metadata: instruction, episode source, rows, vae id, format version
    LATENTS_DIR/instructions/           InstructionStore: umT5 embeddings, or random stand-ins
    LATENTS_DIR/vae/                    the VAE used (AutoencoderKLWan.save_pretrained) so the
                                        trainer's export ships exactly the encoder of the latents
    LATENTS_DIR/precompute.json         image size, vae id, instruction encoder id, text length/dim,
                                        chunk size, observation lead (exported into the manifest)

Random text embeddings (`--random-text-dim D`) are NOT a text encoder: each instruction gets
seeded unit-normal vectors (`random_instruction_embeddings`), enough to tell instructions apart in
tests and simulation; a real robot model needs umT5 (`--text-encoder`).

Resumable: an episode whose output exists is skipped (unless --overwrite); files are written under
a temporary name and renamed, so an interrupted run never leaves a half-written episode.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memorywam_ros.runtime.chunk_executor import frame_rows, observation_substeps
from memorywam_ros.runtime.chunk_executor import obs_row as _obs_row

GRID_TOLERANCE = 0.1  # of a control period: how far a row's stamp may sit from the uniform grid
CHUNK = 16  # default actions per chunk = rows between two latent frames (the model's chunk_size)
FORMAT = "memorywam-latents"
VERSION = 1
META_NAME = "precompute.json"
RANDOM_ENCODER_ID = "random"  # what init_random / write_checkpoint(random=True) call stand-in embeddings


# ---------------------------------------------------------------------------------- alignment
def check_grid(stamps_ns: np.ndarray, rate_hz: float, where: str | Path) -> None:
    """Raise ValueError unless every row t is within GRID_TOLERANCE of a period of
    stamps_ns[0] + t/rate_hz (anchored on row 0, so a slow drift is caught too)."""
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    if not rate_hz > 0:
        raise ValueError(f"{where}: control_rate_hz {rate_hz} is not positive")
    period = 1e9 / rate_hz
    expected = np.round(np.arange(stamps.size) * period)
    off = (stamps - stamps[:1]).astype(np.float64) - expected
    bad = np.flatnonzero(np.abs(off) > GRID_TOLERANCE * period)
    if bad.size:
        t = int(bad[0])
        raise ValueError(
            f"{where}: row {t} is stamped {(stamps[t] - stamps[0]) / 1e6:.1f} ms after row 0, expected "
            f"{expected[t] / 1e6:.1f} ms (± {GRID_TOLERANCE * period / 1e6:.0f} ms): the rows are not a uniform "
            f"{rate_hz:g} Hz grid (a dropped, repeated or shifted row); every later latent frame and action chunk "
            "would be misaligned. memorywam-convert splits episodes at gaps instead"
        )


def num_latent_frames(num_rows: int, chunk: int = CHUNK) -> int:
    """Latent frames an episode of `num_rows` rows yields (each needs all its mosaics)."""
    return 0 if num_rows < 1 else 1 + (num_rows - 1) // chunk


def obs_row(j: int, chunk: int = CHUNK, lead: int = 0) -> int:
    """Row of the last mosaic of latent frame j (where its proprio is measured): max(0, Kj - ℓ)."""
    return _obs_row(j, chunk, lead)


def mosaic_rows(j: int, chunk: int = CHUNK, lead: int = 0) -> list[int]:
    """Episode rows whose mosaics form latent frame j: [0] for j = 0, else the 4 rows observed
    after sub-steps 3-ℓ, 7-ℓ, 11-ℓ, 15-ℓ of chunk j-1 (chunk j-1 starts at row 16(j-1); rows
    before row 0 repeat row 0). The node's ChunkExecutor samples with the same `frame_rows`."""
    return frame_rows(j, chunk, lead)


def action_chunks(action: np.ndarray, n: int, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(T, A) rows -> chunks (n, 16, A) (rows 16j..16j+15, padded with the last row) and mask (n, 16)."""
    rows = np.arange(n)[:, None] * chunk + np.arange(chunk)[None, :]  # (n, 16)
    mask = rows < action.shape[0]
    return action[np.minimum(rows, action.shape[0] - 1)].astype(np.float32), mask


# ---------------------------------------------------------------------------------- encoding
def encode_episode(
    reader: Any, encoder: Any, image_size: tuple[int, int], chunk: int = CHUNK, lead: int = 0
) -> dict[str, np.ndarray]:
    """One episode -> the tensors of its latents file (see the module docstring)."""
    import torch

    from memorywam_ros.runtime.mosaic import compose_mosaic

    from .episodes import CAMERAS

    n = num_latent_frames(len(reader), chunk)
    if n == 0:
        raise ValueError(f"{reader.path}: empty episode")
    check_grid(reader.stamps_ns, reader.control_rate_hz, reader.path)
    encoder.reset()
    latents, rows_table = [], np.full((n, 4), -1, dtype=np.int64)
    for j in range(n):
        rows = mosaic_rows(j, chunk, lead)
        rows_table[j, : len(rows)] = rows
        # one HDF5 chunk per image: reading only these rows touches 1/4 of the episode's frames
        images = {cam: [reader.images(cam, r, r + 1)[0] for r in rows] for cam in CAMERAS}
        mosaics = np.stack([compose_mosaic(*(images[c][i] for c in CAMERAS), *image_size) for i in range(len(rows))])
        latents.append(encoder.encode(mosaics)[:, 0].cpu())  # (C, h, w) float32
    actions, mask = action_chunks(reader.action, n, chunk)
    obs = np.array([obs_row(j, chunk, lead) for j in range(n)], dtype=np.int64)
    return {
        "latents": torch.stack(latents).numpy(),
        "mosaic_rows": rows_table,
        "obs_rows": obs,
        "actions": actions,
        "action_mask": mask,
        "proprio": reader.state[obs].astype(np.float32),
    }


def save_latents(path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, str], latent_dtype: str) -> None:
    """Atomic write: a reader (or a resumed run) never sees a half-written file."""
    import torch
    from safetensors.torch import save_file

    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    tensors["latents"] = tensors["latents"].to(getattr(torch, latent_dtype))
    tmp = path.with_name(f".{path.name}.partial")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def vae_identity(vae: Any) -> str:
    """sha256 over the VAE config and a fingerprint of its weights (first/last tensors)."""
    import torch

    h = hashlib.sha256(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    params = list(vae.parameters())
    for p in (params[0], params[-1]):
        h.update(p.detach().reshape(-1)[:4096].to(torch.bfloat16).float().cpu().numpy().tobytes())
    return h.hexdigest()


def resolve_vae(path: Path) -> tuple[Path, tuple[int, int]]:
    """A checkpoint directory (uses its vae/ and image size), a Wan pipeline folder or a vae folder."""
    manifest = path / "memorywam.json"
    if manifest.is_file():
        return path / "vae", tuple(json.loads(manifest.read_text())["image_size"])  # type: ignore[return-value]
    if (path / "vae" / "config.json").is_file():
        return path / "vae", (384, 320)
    if (path / "config.json").is_file():
        return path, (384, 320)
    raise FileNotFoundError(f"{path}: neither a MemoryWAM checkpoint, a Wan pipeline nor a VAE folder")


# ---------------------------------------------------------------------------------- instructions
def store_instructions(
    out: Path, texts: list[str], text_encoder: str | None, random_dim: int | None, text_len: int, device: str
) -> str:
    """Write embeddings of every text into out/instructions/; returns the encoder id."""
    from memorywam_ros.runtime.instructions import InstructionStore, random_instruction_embeddings

    store = InstructionStore(out / "instructions")
    if text_encoder is None:
        known = set(store.texts(RANDOM_ENCODER_ID)) if RANDOM_ENCODER_ID in store.encoder_ids else set()
        missing = [t for t in texts if t not in known]
        if missing:
            store.put(missing, random_instruction_embeddings(missing, random_dim, text_len), RANDOM_ENCODER_ID,
                      {"name": "random stand-in embeddings (not a text encoder)", "max_length": text_len})
        return RANDOM_ENCODER_ID

    import torch
    import transformers
    from transformers import AutoTokenizer, UMT5EncoderModel

    from memorywam_ros.runtime.instructions import _resolve_dirs, encoder_identity

    enc_dir, tok_dir = _resolve_dirs(text_encoder, None)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    # transformers renamed `torch_dtype` to `dtype` in 4.56
    major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
    dtype_kw = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    encoder = UMT5EncoderModel.from_pretrained(enc_dir, **{dtype_kw: dtype}).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    store.encode_missing(texts, encoder, tokenizer, text_len, name=Path(enc_dir).name)
    return encoder_identity(encoder, tokenizer, text_len)


# ---------------------------------------------------------------------------------- driver
@dataclass
class PrecomputeResult:
    written: list[Path]
    skipped: list[Path]
    failed: list[tuple[Path, str]]


def precompute(
    episodes_dir: str | Path,
    vae: str | Path,
    out: str | Path,
    text_encoder: str | None = None,
    random_text_dim: int | None = None,
    text_len: int = 128,
    device: str = "cpu",
    vae_dtype: str = "float32",
    latent_dtype: str = "float32",
    overwrite: bool = False,
    progress: bool = True,
    chunk: int = CHUNK,
    image_size: tuple[int, int] | None = None,
    observation_lead: int = 0,
) -> PrecomputeResult:
    import torch
    from diffusers import AutoencoderKLWan
    from tqdm import tqdm

    from memorywam_ros.runtime.vae import StreamingVAEEncoder

    from .episodes import EpisodeError, EpisodeReader

    if (text_encoder is None) == (random_text_dim is None):
        raise ValueError("give exactly one of text_encoder (umT5 folder) or random_text_dim")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = sorted(Path(episodes_dir).glob("*.hdf5")) + sorted(Path(episodes_dir).glob("*.h5"))
    if not paths:
        raise FileNotFoundError(f"{episodes_dir}: no *.hdf5 episodes")

    observation_substeps(chunk, observation_lead)  # validates the chunk size and the lead
    vae_dir, vae_image_size = resolve_vae(Path(vae))
    image_size = tuple(image_size or vae_image_size)
    model = AutoencoderKLWan.from_pretrained(str(vae_dir), low_cpu_mem_usage=False)
    vae_id = vae_identity(model)
    meta_path = out / META_NAME
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    layout = (meta.get("chunk_size"), meta.get("image_size"), meta.get("observation_lead", 0))
    if meta and layout != (chunk, list(image_size), observation_lead) and not overwrite:
        raise ValueError(f"{out} holds latents of chunk {layout[0]} / images {layout[1]} / observation lead "
                         f"{layout[2]}; use --overwrite")
    if meta and meta.get("vae_id") != vae_id and not overwrite:
        raise ValueError(f"{out} holds latents of another VAE ({meta.get('vae_id', '?')[:16]}…); use --overwrite")
    if not (out / "vae" / "config.json").is_file() or meta.get("vae_id") != vae_id:
        model.save_pretrained(str(out / "vae"))
    dtype = None if vae_dtype == "float32" else getattr(torch, vae_dtype)  # float32: the VAE as loaded
    encoder = StreamingVAEEncoder(model, device=device, dtype=dtype)

    result = PrecomputeResult([], [], [])
    texts: dict[str, None] = {}
    bar = tqdm(paths, desc="precompute", unit="ep", disable=not progress, dynamic_ncols=True)
    for path in bar:
        target = out / f"{path.stem}.safetensors"
        try:
            with EpisodeReader(path) as reader:
                texts[reader.instruction.strip()] = None
                if target.is_file() and not overwrite:
                    result.skipped.append(target)
                    continue
                arrays = encode_episode(reader, encoder, image_size, chunk, observation_lead)
                metadata = {
                    "format": FORMAT,
                    "version": str(VERSION),
                    "instruction": reader.instruction.strip(),
                    "source": str(path),
                    "rows": str(len(reader)),
                    "vae_id": vae_id,
                }
            save_latents(target, arrays, metadata, latent_dtype)
            result.written.append(target)
        except (EpisodeError, OSError, ValueError) as err:
            result.failed.append((path, str(err)))
    encoder_id = store_instructions(out, list(texts), text_encoder, random_text_dim, text_len, device)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "image_size": list(image_size),
        "vae_id": vae_id,
        "instruction_encoder": encoder_id,
        "text_len": text_len,
        "chunk_size": chunk,
        "observation_lead": observation_lead,
        "observation_substeps": list(observation_substeps(chunk, observation_lead)),
    }
    tmp = meta_path.with_name(META_NAME + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, meta_path)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="memorywam-precompute", description=__doc__.split("\n\n")[0])
    p.add_argument("episodes", type=Path, help="folder of episode .hdf5 files")
    p.add_argument("--vae", required=True, type=Path, help="MemoryWAM checkpoint, Wan pipeline or VAE folder")
    p.add_argument("--out", required=True, type=Path, help="latents folder")
    text = p.add_mutually_exclusive_group(required=True)
    text.add_argument("--text-encoder", default=None, help="umT5 folder (or a Wan pipeline folder)")
    text.add_argument("--random-text-dim", type=int, default=None,
                      help="random stand-in instruction embeddings of this width (tests / simulation only)")
    p.add_argument("--text-len", type=int, default=128, help="instruction tokens (model config text_len)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--vae-dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--latent-dtype", choices=("float32", "bfloat16"), default="float32")
    p.add_argument("--chunk-size", type=int, default=CHUNK, help="actions per latent frame (the model's chunk_size)")
    p.add_argument("--observation-lead", type=int, default=0, metavar="L",
                   help="take each latent frame's mosaics L control steps early so inference has L*100 ms "
                        "before its chunk is due (0 = the paper's protocol; see the alignment table)")
    p.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="mosaic size (default: the checkpoint's, else 384 320)")
    p.add_argument("--overwrite", action="store_true", help="re-encode episodes already done")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = precompute(
        args.episodes, args.vae, args.out, args.text_encoder, args.random_text_dim, args.text_len, device,
        args.vae_dtype, args.latent_dtype, args.overwrite, not args.quiet, args.chunk_size,
        tuple(args.image_size) if args.image_size else None, args.observation_lead,
    )
    for path, err in result.failed:
        print(f"FAILED {path}: {err}", file=sys.stderr)
    print(f"{len(result.written)} written, {len(result.skipped)} already done, {len(result.failed)} failed "
          f"-> {args.out}", file=sys.stderr)
    return 1 if result.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
