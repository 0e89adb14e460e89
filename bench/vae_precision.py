"""VAE precision on the robot: how far bf16 Wan2.2 VAE latents are from the float32 ones training used.

    .venv/bin/python bench/vae_precision.py                  # ~1-2 min on 2 CPU cores
    .venv/bin/python bench/vae_precision.py --widths 8 --frames 5 --size 192 160   # quick

Training latents come from memorywam-precompute's float32 VAE. The robot's Policy used to load the
VAE in the model's dtype (bf16 on CUDA). This encodes the same episode (frame 0 alone, then 4
mosaics per latent frame, through runtime/vae.py's StreamingVAEEncoder: the robot's code path)
with one VAE in float32 and a bf16 copy of it, and reports the difference of the normalised
latents in units of the float32 latents' own per-channel standard deviation, per latent frame.

The VAE is diffusers' AutoencoderKLWan built from the repo's `wan22_vae_config` (the real Wan2.2
TI2V-5B structure: residual blocks, 2 per level, patch 2, z_dim 48) with random weights at a reduced
base width (the real one is 160; `--widths 160` runs it, slowly on CPU). Random weights are a proxy:
trained weights have other activation ranges, so read the numbers as an order of magnitude. The
input is a synthetic smooth moving scene (sinusoids, edges, a little noise), not camera images.
Also prints the full-size encoder's parameter count and weight bytes in each dtype (the memory cost
of keeping it in float32). No GPU timing: none was available where this was written.

Writes bench/results/vae_precision.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def scene(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 (T, H, W, 3): smooth gradients and moving edges, with mild sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    out = []
    for t in range(frames):
        r = 0.5 + 0.4 * np.sin(6 * x + 0.3 * t) * np.cos(4 * y)
        g = 0.5 + 0.4 * np.cos(5 * y - 0.2 * t)
        b = ((x + 0.02 * t) % 0.25 < 0.12).astype(float) * 0.8 + 0.1  # stripes: sharp edges
        img = np.stack((r, g, b), -1) + rng.normal(0, 0.02, (height, width, 3))
        out.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return np.stack(out)


def encode_episode(vae, mosaics: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) with T = 1 + 4k -> (z, 1 + k, h, w) float32, streamed as the robot does."""
    from memorywam_ros.runtime.vae import StreamingVAEEncoder

    enc = StreamingVAEEncoder(vae)
    latents = [enc.encode(mosaics[:1])]
    for start in range(1, len(mosaics), 4):
        latents.append(enc.encode(mosaics[start : start + 4]))
    return torch.cat(latents, dim=1)


def measure(width: int, frames: int, size: tuple[int, int], seed: int) -> dict:
    from diffusers import AutoencoderKLWan

    from memorywam_ros.runtime.vae import wan22_vae_config

    torch.manual_seed(seed)
    cfg = {**wan22_vae_config(tiny=False), "base_dim": width, "decoder_base_dim": width}
    vae32 = AutoencoderKLWan(**cfg).eval()
    vae16 = AutoencoderKLWan(**cfg).eval()
    vae16.load_state_dict(vae32.state_dict())
    vae16 = vae16.to(torch.bfloat16)
    mosaics = scene(frames, *size, seed=seed)
    t0 = time.perf_counter()
    z32 = encode_episode(vae32, mosaics)
    t32 = time.perf_counter() - t0
    t0 = time.perf_counter()
    z16 = encode_episode(vae16, mosaics)
    t16 = time.perf_counter() - t0
    std = z32.std(dim=(1, 2, 3), keepdim=True)  # per channel, over the episode
    err = (z16 - z32) / std
    per_frame = err.pow(2).mean(dim=(0, 2, 3)).sqrt().tolist()
    return {
        "base_dim": width,
        "encoder_params": sum(p.numel() for p in vae32.encoder.parameters()),
        "latent_frames": z32.shape[1],
        "rms_diff_in_std": err.pow(2).mean().sqrt().item(),
        "rms_diff_in_std_per_frame": per_frame,
        "max_abs_diff_in_std": err.abs().max().item(),
        "cpu_s_fp32": t32,
        "cpu_s_bf16": t16,
    }


def full_size_cost() -> dict:
    from diffusers import AutoencoderKLWan

    from memorywam_ros.runtime.vae import wan22_vae_config

    with torch.device("meta"):
        vae = AutoencoderKLWan(**wan22_vae_config(tiny=False))
    n = sum(p.numel() for p in vae.encoder.parameters()) + sum(p.numel() for p in vae.quant_conv.parameters())
    return {"encoder_params": n, "fp32_MiB": n * 4 / 2**20, "bf16_MiB": n * 2 / 2**20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32], help="VAE base_dim values (real: 160)")
    parser.add_argument("--frames", type=int, default=13, help="mosaics: 1 + 4k (13 = 4 latent frames)")
    parser.add_argument("--size", type=int, nargs=2, default=[384, 320], metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "vae_precision.json"))
    args = parser.parse_args()
    if (args.frames - 1) % 4:
        parser.error("--frames must be 1 + 4k")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    rows = [measure(w, args.frames, tuple(args.size), args.seed) for w in args.widths]
    cost = full_size_cost()
    print(f"bf16 vs fp32 Wan2.2 VAE latents, {args.frames} mosaics {args.size[0]}x{args.size[1]}, random weights")
    print(f"{'base_dim':>8} {'enc params':>11} {'rms diff/std':>12} {'max diff/std':>12}  per latent frame (rms/std)")
    for r in rows:
        frames = " ".join(f"{v:.3f}" for v in r["rms_diff_in_std_per_frame"])
        print(f"{r['base_dim']:>8} {r['encoder_params']:>11,} {r['rms_diff_in_std']:>12.4f} "
              f"{r['max_abs_diff_in_std']:>12.3f}  {frames}")
    print(f"full-size encoder (base_dim 160): {cost['encoder_params']:,} params, "
          f"{cost['fp32_MiB']:.0f} MiB fp32 vs {cost['bf16_MiB']:.0f} MiB bf16")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rel = str(out.resolve().relative_to(ROOT)) if out.resolve().is_relative_to(ROOT) else str(out)
    out.write_text(json.dumps({"args": {**vars(args), "out": rel}, "rows": rows, "full_size": cost,
                               "machine": platform.processor() or platform.machine(),
                               "torch": torch.__version__}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
