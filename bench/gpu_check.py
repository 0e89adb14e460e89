"""The first-GPU check: paper-size inference, a compiled-flex FSDP training step, the compile count.

    python bench/gpu_check.py           # CUDA: paper size, bf16; < 8 min on one H100/H200-class GPU
    python bench/gpu_check.py --tiny    # any machine (CPU: the CI test runs this): tiny sizes, ~1 min on 2 cores
    torchrun --nproc_per_node 1 bench/gpu_check.py   # the same, FSDP over the torchrun world

Prints a table and writes bench/results/gpu_check_{paper,tiny}.json. What it measures:
  * inference: one chunk end to end (streaming VAE encode of 4 mosaics + prefill + 10 action
    steps) at episode length N in {16, 400, 1600}, hybrid memory, random weights cast as the robot
    casts them, with the cache filled as bench/memory_latency.py fills it; peak memory.
  * training: forward + backward + AdamW step of MemoryWAM at the paper's widths with a few layers
    (4), FSDP2 sharded, bf16 parameters, activation checkpointing, flex attention compiled, at
    window lengths N in {40, 48, 56} (S 10440..14664 tokens: one padded bucket, 16384) and 64 (S
    16776: bucket 32768); step time (second step of each length) and peak memory.
  * compiles: dynamo graphs compiled during the training steps. Expected 2 (one per bucket); before
    issue 12 it was one per length, and the unfused fallback after 8.
On CPU (--tiny) the same steps run at tiny sizes; the training step uses the dense mask (CPU flex
attention has no backward) and the compile count comes from compiled flex attention in forward
(aot_eager backend, see test/test_model_attention.py) over the same lengths.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_latency import sync, time_chunks

from memorywam_ros.model import MemoryRules, MemoryWAM, MemoryWAMConfig
from memorywam_ros.model import attention as attention_module
from memorywam_ros.model.weights import cast_for_inference

RESULTS = Path(__file__).resolve().parent / "results"
CHUNK_LENGTHS = (16, 400, 1600)
TRAIN_LAYERS = 4


def configs(tiny: bool) -> tuple[MemoryWAMConfig, MemoryWAMConfig, tuple[int, ...]]:
    """(inference config, training config, training window lengths)."""
    if tiny:
        config = dataclasses.replace(MemoryWAMConfig.tiny(num_gists=8), latent_height=24, latent_width=20)
        return config, config, (3, 4, 5)  # S 672, 936, 1200: buckets 1024, 1024, 2048
    paper = MemoryWAMConfig.paper()
    train = dataclasses.replace(paper, video=dataclasses.replace(paper.video, num_layers=TRAIN_LAYERS))
    return paper, train, (40, 48, 56, 64)


def peak_memory_gib(device: torch.device) -> float:
    """Peak CUDA memory since the last reset, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@torch.no_grad()
def inference(config: MemoryWAMConfig, device: torch.device, tiny: bool) -> list[dict]:
    from diffusers import AutoencoderKLWan

    from memorywam_ros.runtime.vae import StreamingVAEEncoder, wan22_vae_config

    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    torch.manual_seed(0)
    vae = StreamingVAEEncoder(AutoencoderKLWan(**wan22_vae_config(tiny=tiny)), device=str(device), dtype=dtype)
    with torch.device(device):
        model = cast_for_inference(MemoryWAM(config), dtype).eval()
    rows = []
    for n in CHUNK_LENGTHS:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        row = {"frames": n, **time_chunks(model, n, 1 if tiny else 3, str(device), vae)}
        row["peak_gib"] = peak_memory_gib(device)
        rows.append(row)
        print(
            f"  chunk N={n:<5d} {row['chunk_s'] * 1e3:8.1f} ms (vae {row['vae_s'] * 1e3:6.1f}, prefill"
            f" {row['prefill_s'] * 1e3:6.1f}, denoise {row['denoise_s'] * 1e3:7.1f})  cache {row['cache_tokens']} tok"
            f" {row['cache_bytes'] / 2**20:.1f} MiB  peak {row['peak_gib']:.2f} GiB",
            flush=True,
        )
    del model, vae
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def training_inputs(config: MemoryWAMConfig, frames: int, late: bool, device: torch.device) -> dict:
    """A random window of `frames` latent frames; late: anchors 0, 1 prepended to frames 100.. (window mode)."""
    g = torch.Generator().manual_seed(frames)
    c, h, w = config.video.in_channels, config.latent_height, config.latent_width
    k, a = config.action.chunk_size, config.action.action_dim
    ids = torch.tensor([[0, 1, *range(100, 100 + frames - 2)]]) if late else torch.arange(frames)[None]
    x = {
        "latents": torch.randn(1, frames, c, h, w, generator=g),
        "text": torch.randn(1, config.text_len, config.video.text_dim, generator=g),
        "proprio": torch.randn(1, frames, config.action.proprio_dim, generator=g),
        "noisy_actions": torch.randn(1, frames, k, a, generator=g),
        "action_timestep": torch.rand(1, frames, generator=g) * 1000,
        "frame_ids": ids,
        "cond_timestep": torch.zeros(1, frames),
        "noisy_video": torch.randn(1, frames - 1, c, h, w, generator=g),
        "video_timestep": torch.rand(1, frames - 1, generator=g) * 1000,
    }
    return {key: value.to(device) for key, value in x.items()}


def training(config: MemoryWAMConfig, lengths: tuple[int, ...], device: torch.device) -> dict:
    """FSDP2 training steps at several window lengths; step time, peak memory, dynamo compiles."""
    from torch._dynamo.utils import counters

    from memorywam_train import fsdp

    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    full_state = fsdp.initial_state_dict(config, 0, None, None) if dist.get_rank() == 0 else None
    model = fsdp.build_sharded_model(config, device, dtype, cuda, full_state, broadcast=True)
    del full_state
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    graphs_before = counters["stats"]["unique_graphs"]
    rows = []
    for n in lengths:
        times = []
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        for late in (False, True, True)[: 2 if not cuda else 3]:  # the first may compile; the last is timed
            x = training_inputs(config, n, late, device)
            sync(str(device))
            t0 = time.perf_counter()
            out = model(**x)
            loss = out.action_velocity.float().pow(2).mean() + out.video_velocity.float().pow(2).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            sync(str(device))
            times.append(time.perf_counter() - t0)
        L, M, K = config.tokens_per_frame, config.memory.num_gists, config.action.chunk_size
        tokens = n * (L + M) + (n - 1) * L + n * K  # the sequence layout, MemoryWAM.sequence_metadata
        padded = attention_module.bucket_length(tokens) if cuda else tokens
        row = {"frames": n, "tokens": tokens, "padded_tokens": padded, "first_step_s": times[0]}
        row.update(step_s=times[-1], peak_gib=peak_memory_gib(device), loss=float(loss.detach()))
        rows.append(row)
        print(
            f"  train N={n:<3d} S={tokens:<6d} (padded {padded:<6d}) first {times[0]:7.2f} s  step {times[-1]:7.3f} s"
            f"  peak {row['peak_gib']:.2f} GiB  loss {row['loss']:.4f}",
            flush=True,
        )
    compiles = counters["stats"]["unique_graphs"] - graphs_before
    del model, optimizer
    if cuda:
        torch.cuda.empty_cache()
    return {"layers": config.video.num_layers, "flex": cuda, "rows": rows, "compiles": compiles}


def cpu_compile_count(config: MemoryWAMConfig, lengths: tuple[int, ...]) -> dict:
    """On CPU: compiles of flex attention (forward, aot_eager backend) over the training lengths."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    rules = MemoryRules(config.memory)
    buckets, K = set(), config.action.chunk_size
    with torch.no_grad():
        for n in lengths:
            for late in (False, True):
                ids = training_inputs(config, n, late, torch.device("cpu"))["frame_ids"]
                meta = MemoryWAM.sequence_metadata(ids, config.tokens_per_frame, rules.num_gists, K, True)
                buckets.add(attention_module.bucket_length(meta[0].shape[1]))
                q = torch.randn(1, 1, meta[0].shape[1], 8)
                attention_module.MemoryMaskedAttention(rules, *meta, use_flex=True, backend=counter)(q, q, q)
    return {"compiles": counter.frame_count, "buckets": len(buckets), "backend": "aot_eager (forward only)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (automatic without CUDA)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    tiny = args.tiny or not torch.cuda.is_available()
    from memorywam_train import fsdp

    rank, world, device = fsdp.setup_distributed()
    infer_config, train_config, lengths = configs(tiny)
    result = {
        "mode": "tiny" if tiny else "paper",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "world_size": world,
        "inference_config": dataclasses.asdict(infer_config),
        "train_config": dataclasses.asdict(train_config),
    }
    start = time.perf_counter()
    if rank == 0:
        print(f"gpu_check ({result['mode']}) on {result['device']}, torch {torch.__version__}", flush=True)
        print("inference, hybrid memory, one chunk end to end:", flush=True)
        result["inference"] = inference(infer_config, device, tiny)
    dist.barrier()
    if rank == 0:
        print(f"training, {train_config.video.num_layers} layers, FSDP over {world} rank(s):", flush=True)
    result["training"] = training(train_config, lengths, device)
    if device.type == "cpu":
        result["training"]["cpu_flex_compiles"] = cpu_compile_count(train_config, lengths)
    result["wall_s"] = time.perf_counter() - start
    if rank == 0:
        t = result["training"]
        print(f"compiles during training: {t['compiles']}" + (" (dense attention on CPU)" if not t["flex"] else ""))
        if "cpu_flex_compiles" in t:
            print(f"compiled flex attention on CPU over those lengths: {t['cpu_flex_compiles']}")
        print(f"wall {result['wall_s']:.1f} s")
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"gpu_check_{result['mode']}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
