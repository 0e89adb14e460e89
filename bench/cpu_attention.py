"""CPU training step: gathered attention (attention.gather_plan) against one dense SDPA call.

    .venv/bin/python bench/cpu_attention.py            # ~3 min on one core; prints a table
    .venv/bin/python bench/cpu_attention.py --frames 16 --reps 2

One optimisation step of memorywam-train (train_step: flow-matching loss, backward, AdamW) on the
Look-and-Press model (config/train_look_and_press.yaml, observation lead 12: 120 video + 8 gist
tokens per frame, chunks of 12 committed + 16 noisy actions) at batch 1, random latents, one torch
thread. Variants, run alternately in one process so they share the machine's load:
  dense     the rule's (S, S) mask in one SDPA call (what the CPU path did before)
  gathered  per block of GATHER_BLOCK queries, SDPA over the keys the block sees (what it does now)
Reported: median seconds per step, the ratio dense / gathered, and the share of (q, kv) pairs the
gathered plan computes. Ratios only: absolute CPU times depend on the machine and its load.
Writes bench/results/cpu_attention.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memorywam_ros.model import MemoryWAM, MemoryWAMConfig, attention  # noqa: E402
from memorywam_train.train import TrainConfig, build_optimizer, model_config, train_step  # noqa: E402

CONFIG = ROOT / "config" / "train_look_and_press.yaml"
LEAD = 12  # committed prefix = observation lead of scripts/train_sim.sh


def synthetic_batch(config: MemoryWAMConfig, frames: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A training batch of one episode in LatentDataset's layout, random values."""
    v, a = config.video, config.action
    n, k, p = frames, a.chunk_size, a.committed_prefix
    ids = torch.arange(n)[None]
    return {"latents": torch.randn(1, n, v.in_channels, config.latent_height, config.latent_width, generator=gen),
            "frame_ids": ids, "actions": torch.randn(1, n, k, a.action_dim, generator=gen),
            "action_mask": torch.ones(1, n, k, dtype=torch.bool), "frame_valid": torch.ones(1, n, dtype=torch.bool),
            "proprio": torch.randn(1, n, a.proprio_dim, generator=gen),
            "video_mask": torch.ones(1, n - 1, dtype=torch.bool),
            "text": torch.randn(1, config.text_len, v.text_dim, generator=gen),
            "committed": torch.randn(1, n, p, a.action_dim, generator=gen)}


def step_seconds(policy: str, frames: int, reps: int) -> dict:
    cfg = TrainConfig.load(str(CONFIG), [f"memory_policy={policy}", f"model.action.committed_prefix={LEAD}"])
    config = model_config(cfg)
    gen = torch.Generator().manual_seed(0)
    model = MemoryWAM(config)
    optimizer = build_optimizer(model, cfg)
    batch = synthetic_batch(config, frames, gen)
    default = attention.GATHER_MAX_FRACTION
    times: dict[str, list[float]] = {"dense": [], "gathered": []}
    for rep in range(reps + 1):  # the first round warms up (and builds each plan once): not timed
        for variant in ("dense", "gathered"):
            attention.GATHER_MAX_FRACTION = 0.0 if variant == "dense" else default
            attention._plan_cache.clear()
            t0 = time.perf_counter()
            train_step(model, optimizer, batch, cfg, gen, torch.device("cpu"), rep)
            if rep:
                times[variant].append(time.perf_counter() - t0)
    attention.GATHER_MAX_FRACTION = default
    frame, kind, group = MemoryWAM.sequence_metadata(batch["frame_ids"], config.tokens_per_frame,
                                                     config.memory.num_gists, LEAD + config.action.chunk_size, True)
    plan = attention.gather_plan(model.rules, frame, kind, group, max_fraction=1.0)
    dense, gathered = statistics.median(times["dense"]), statistics.median(times["gathered"])
    return {"policy": policy, "frames": frames, "tokens": int(frame.shape[1]), "dense_s": dense,
            "gathered_s": gathered, "ratio": dense / gathered, "pairs_fraction": plan.fraction}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, nargs="+", default=[16, 30])
    p.add_argument("--policies", nargs="+", default=["hybrid", "window", "full"])
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = [step_seconds(policy, n, a.reps) for n in a.frames for policy in a.policies]
    lines = ["| policy | frames | tokens S | dense s/step | gathered s/step | dense / gathered | pairs computed |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['policy']} | {r['frames']} | {r['tokens']} | {r['dense_s']:.2f} | {r['gathered_s']:.2f} | "
              f"{r['ratio']:.1f} x | {r['pairs_fraction']:.0%} |" for r in rows]
    print("\n".join(lines))
    out = {"command": "python bench/cpu_attention.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "config": str(CONFIG.relative_to(ROOT)), "committed_prefix": LEAD, "reps": a.reps,
           "torch": torch.__version__, "machine": platform.processor() or platform.machine(), "rows": rows}
    path = ROOT / "bench" / "results" / "cpu_attention.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
