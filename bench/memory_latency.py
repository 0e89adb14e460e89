"""Per-chunk latency and KV-cache size versus episode length, for the memory policies.

    .venv/bin/python bench/memory_latency.py --quick     # < 60 s on 2 CPU cores
    .venv/bin/python bench/memory_latency.py             # full: N up to 1600, < 10 min on 2 CPU cores

Prints a table and writes bench/results/memory_latency_{quick,full}.json and .png.

What is timed: one chunk at episode length N = prefill of latent frame N (video expert, 1 frame)
plus 10 Euler steps of the action expert, against a cache in the exact state the memory rules
leave after N frames. Filling the cache for N = 1600 by running the network 1600 times would
dominate the benchmark without changing what is measured (latency depends on how many tokens the
cache holds, not on their values), so the cache is filled through its own `begin_frame`/`write`
path (the same eviction) with random keys/values; the timed chunk then runs the real network.
The streaming VAE is compared with re-encoding the whole observation buffer every chunk.
On CUDA, the paper-size model (bf16, random weights) is timed end to end: VAE encode of 4 mosaics
+ prefill + 10 denoising steps, with peak GPU memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from memorywam_ros.model import MemoryConfig, MemoryWAM, MemoryWAMConfig, VideoDiTConfig
from memorywam_ros.model.config import ActionDiTConfig
from memorywam_ros.runtime.vae import StreamingVAEEncoder, wan22_vae_config

RESULTS = Path(__file__).resolve().parent / "results"
POLICIES = ("hybrid", "full", "window")


def cpu_config(policy: str) -> MemoryWAMConfig:
    """A small model with the paper's token layout: 384x320 mosaic -> 120 tokens/frame, M 8, N_init 2, N_recent 4."""
    return MemoryWAMConfig(
        video=VideoDiTConfig(
            num_attention_heads=2, attention_head_dim=64, text_dim=64, freq_dim=64, ffn_dim=512, num_layers=4
        ),
        action=ActionDiTConfig(hidden_dim=64, ffn_dim=256),
        memory=MemoryConfig(policy=policy, n_init=2, n_recent=4, num_gists=8),
        text_len=16,
    )


def fill_cache(model: MemoryWAM, cache, frames: int) -> None:
    """Bring the cache to the state after `frames` frames, via its own eviction path, random K/V."""
    L, M = model.config.tokens_per_frame, model.rules.num_gists
    shape = (cache.batch, cache.heads, L + M, cache.head_dim)
    kv = torch.randn(shape, device=cache.device, dtype=cache.dtype)
    for frame in range(frames):
        video_start, gist_start = cache.begin_frame(frame)
        for layer in range(cache.num_layers):
            cache.write(layer, video_start, kv[:, :, :L], kv[:, :, :L])
            if M:
                cache.write(layer, gist_start, kv[:, :, L:], kv[:, :, L:])


@torch.no_grad()
def time_chunks(model: MemoryWAM, frames: int, repeats: int, device: str, vae: StreamingVAEEncoder | None = None):
    """Median prefill / denoise / total seconds of a chunk at episode length `frames`."""
    cfg = model.config
    dtype = model.video.patch_embedding.weight.dtype
    cache = model.new_cache(batch=1)
    text = model.text_context(torch.randn(1, cfg.text_len, cfg.video.text_dim, device=device))
    fill_cache(model, cache, frames - 1)  # the timed prefill adds frame N-1: N frames in memory
    latent = torch.randn(1, cfg.video.in_channels, cfg.latent_height, cfg.latent_width, device=device, dtype=dtype)
    proprio = torch.zeros(1, cfg.action.proprio_dim, device=device)
    mosaics = np.random.default_rng(0).integers(0, 256, (4, 384, 320, 3), dtype=np.uint8)
    if vae is not None:
        vae.reset()
        vae.encode(mosaics[:1])
    rows = []
    for r in range(repeats + 1):  # first run warms up kernels/allocator
        sync(device)
        t0 = time.perf_counter()
        if vae is not None:
            latent = vae.encode(mosaics)[:, 0][None].to(dtype)
        sync(device)
        t1 = time.perf_counter()
        model.prefill(cache, latent, frames - 1 + r, text)
        if r == 0:
            held = (cache.held_tokens, cache.held_bytes)
        sync(device)
        t2 = time.perf_counter()
        model.sample_actions(cache, text, proprio, num_steps=10, generator=torch.Generator(device).manual_seed(r))
        sync(device)
        t3 = time.perf_counter()
        if r:
            rows.append((t1 - t0, t2 - t1, t3 - t2))
    vae_s, prefill_s, denoise_s = (statistics.median(c) for c in zip(*rows))
    return {
        "vae_s": vae_s,
        "prefill_s": prefill_s,
        "denoise_s": denoise_s,
        "chunk_s": vae_s + prefill_s + denoise_s,
        "cache_tokens": held[0],
        "cache_bytes": held[1],
        "formula_tokens": model.rules.held_tokens(frames, cfg.tokens_per_frame),
    }


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def vae_per_chunk(lengths: list[int], repeats: int) -> list[dict]:
    """Streaming encode of 4 new mosaics vs re-encoding the whole 1 + 4N buffer, per chunk."""
    torch.manual_seed(0)
    from diffusers import AutoencoderKLWan

    encoder = StreamingVAEEncoder(AutoencoderKLWan(**wan22_vae_config(tiny=True)))
    rng = np.random.default_rng(0)
    out = []
    for n in lengths:
        frames = rng.integers(0, 256, (1 + 4 * n, 384, 320, 3), dtype=np.uint8)
        streaming, reencode = [], []
        for _ in range(repeats):
            encoder.reset()
            encoder.encode(frames[:1])
            for k in range(n - 1):  # bring the stream to chunk n
                encoder.encode(frames[1 + 4 * k : 5 + 4 * k])
            t0 = time.perf_counter()
            encoder.encode(frames[1 + 4 * (n - 1) :])
            streaming.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            encoder.encode_clip(frames)
            reencode.append(time.perf_counter() - t0)
        out.append(
            {"chunks": n, "streaming_s": statistics.median(streaming), "reencode_s": statistics.median(reencode)}
        )
        print(f"  vae  N={n:<5d} streaming {out[-1]['streaming_s']:.3f} s  re-encode {out[-1]['reencode_s']:.3f} s")
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("chunk_s", "per-chunk latency (s)"), ("cache_bytes", "KV cache (MB)")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (key, label) in zip(axes, panels):
        for policy, rows in result["cpu"].items():
            ns = [r["frames"] for r in rows]
            ys = [r[key] / (1e6 if key == "cache_bytes" else 1) for r in rows]
            ax.plot(ns, ys, marker="o", label=policy)
        ax.set_xscale("log")
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_xlabel("episode length N (latent frames)")
        ax.set_ylabel(label)
        ax.legend()
        ax.grid(alpha=0.3)
    vae = result["vae"]
    axes[2].plot([r["chunks"] for r in vae], [r["streaming_s"] for r in vae], marker="o", label="streaming")
    axes[2].plot([r["chunks"] for r in vae], [r["reencode_s"] for r in vae], marker="o", label="re-encode buffer")
    axes[2].set_xlabel("chunks so far (N)")
    axes[2].set_ylabel("VAE seconds per chunk")
    axes[2].legend()
    axes[2].grid(alpha=0.3)
    fig.suptitle(f"MemoryWAM memory policies, CPU small model ({result['mode']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N up to 400 and fewer repeats (< 60 s)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    lengths = [16, 100, 400] if args.quick else [16, 100, 400, 1600]
    repeats = args.repeats or (3 if args.quick else 5)
    torch.manual_seed(0)
    result = {
        "mode": mode,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "denoise_steps": 10,
        "config": dataclasses.asdict(cpu_config("hybrid")),
        "cpu": {},
    }
    print(f"CPU small model, {torch.get_num_threads()} threads, median of {repeats}; config:")
    print(f"  {json.dumps(result['config'])}")
    for policy in POLICIES:
        model = MemoryWAM(cpu_config(policy)).eval()
        result["cpu"][policy] = []
        for n in lengths:
            row = {"frames": n, **time_chunks(model, n, repeats, "cpu")}
            result["cpu"][policy].append(row)
            print(
                f"  {policy:<7s} N={n:<5d} chunk {row['chunk_s'] * 1e3:8.1f} ms (prefill {row['prefill_s'] * 1e3:6.1f},"
                f" denoise {row['denoise_s'] * 1e3:7.1f})  cache {row['cache_tokens']:7d} tok"
                f" {row['cache_bytes'] / 1e6:8.2f} MB"
            )
    result["vae"] = vae_per_chunk([1, 2, 4] if args.quick else [1, 4, 16], repeats=1 if args.quick else 2)

    hy, fu = {r["frames"]: r for r in result["cpu"]["hybrid"]}, {r["frames"]: r for r in result["cpu"]["full"]}
    n_max = lengths[-1]
    vae = result["vae"]
    result["ratios"] = {
        f"hybrid_latency_N{n_max}_over_N16": hy[n_max]["chunk_s"] / hy[16]["chunk_s"],
        f"full_over_hybrid_latency_N{n_max}": fu[n_max]["chunk_s"] / hy[n_max]["chunk_s"],
        f"hybrid_over_full_cache_N{n_max}": hy[n_max]["cache_bytes"] / fu[n_max]["cache_bytes"],
        "hybrid_cache_equals_formula": all(r["cache_tokens"] == r["formula_tokens"] for r in result["cpu"]["hybrid"]),
        "vae_streaming_last_over_first": vae[-1]["streaming_s"] / vae[0]["streaming_s"],
        "vae_reencode_last_over_first": vae[-1]["reencode_s"] / vae[0]["reencode_s"],
    }
    if torch.cuda.is_available():
        result["cuda"] = cuda_paper_size(lengths, repeats)
    else:
        result["cuda"] = "skipped: no CUDA device on this machine"
    print("ratios:")
    for key, value in result["ratios"].items():
        print(f"  {key:<40s} {value if isinstance(value, bool) else f'{value:.3f}'}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"memory_latency_{mode}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / f"memory_latency_{mode}.png")
    print(f"wrote {args.out / f'memory_latency_{mode}.json'} and .png")


def cuda_paper_size(lengths: list[int], repeats: int) -> dict:
    """Paper-size model in bf16 (random weights), end to end, latency and peak memory vs N."""
    from diffusers import AutoencoderKLWan

    out: dict = {"device": torch.cuda.get_device_name(), "dtype": "bfloat16", "rows": {}}
    vae = StreamingVAEEncoder(AutoencoderKLWan(**wan22_vae_config()), device="cuda", dtype=torch.bfloat16)
    for policy in POLICIES:
        with torch.device("cuda"):
            model = MemoryWAM(MemoryWAMConfig.paper(policy)).to(torch.bfloat16).eval()
        out["rows"][policy] = []
        for n in lengths:
            torch.cuda.reset_peak_memory_stats()
            try:
                row = {
                    "frames": n,
                    **time_chunks(model, n, repeats, "cuda", vae),
                    "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                }
            except torch.OutOfMemoryError:
                row = {"frames": n, "oom": True}
                torch.cuda.empty_cache()
            out["rows"][policy].append(row)
            print(f"  cuda {policy:<7s} N={n:<5d} {row}")
        del model
        torch.cuda.empty_cache()
    return out


if __name__ == "__main__":
    main()
