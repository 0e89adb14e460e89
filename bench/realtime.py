"""Real-time execution with the observation lead ℓ: chunk latency, holds, deadline misses, boundary steps.

    .venv/bin/python bench/realtime.py latency                      # the shipped checkpoint, ~1 min
    .venv/bin/python bench/realtime.py closed-loop --episodes 20    # memorywam-demo's loop, ℓ of the checkpoint
    .venv/bin/python bench/realtime.py closed-loop --episodes 20 --model checkpoints/sim_transfer_cube_l5

`latency` runs the policy (what the node's inference thread does: mosaics -> observe -> act) on the
checkpoint for `--chunks` latent frames with `--torch-threads` threads, and prints p50/p99 and the
smallest lead that fits the p99 (ceil(p99 / 100 ms)): that is the ℓ to precompute/train with.

`closed-loop` runs memorywam-demo (simulator and policy node as separate processes over real ROS 2
topics) and reports per ℓ: hold ticks per chunk p50/p99 (from the chunk start times: the node
publishes ~/action_chunk when a chunk starts, so start-to-start minus 1.6 s is the hold),
deadline misses (chunks with >= 1 hold tick), the boundary step |first target of chunk j+1 - last
target of chunk j| (max over joints) p50/p99 against the in-chunk step p50/p99, and success.
Hold ticks and late starts above are seen by a subscriber (DDS delivery and its own scheduling
included); the node's own counts come from /diagnostics: `node_deadline_chunks`, `deadline_misses`
(chunks held >= 1 tick), `node_hold_ticks_total`, and `node_control_ticks_skipped` (command periods
its control thread could not run in: a chunk then takes longer than 1.6 s without any hold).
Only consecutive executed chunks count (a refused chunk is executed as a hold chunk and not
published). `--relabel-lead L` copies the checkpoint with its manifest's lead set to L: the
timing (holds, misses) is then what ℓ = L gives on this machine, but the model was trained for
another schedule, so its boundary steps and success say nothing about a model trained with L.

Writes bench/results/realtime_<mode>[_l<L>].json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
STEP_S = 0.1
CHUNK_S = 1.6


def _rel(path: str | Path) -> str:
    """A path as results files name it: relative to the repository when inside it."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def _pct(x: list[float] | np.ndarray) -> dict:
    x = np.asarray(x, dtype=float)
    if not len(x):
        return {"n": 0}
    return {"n": len(x), "p50": float(np.percentile(x, 50)), "p99": float(np.percentile(x, 99)),
            "max": float(x.max())}


def latency(args: argparse.Namespace) -> dict:
    import torch

    from memorywam_ros.runtime.mosaic import compose_mosaic
    from memorywam_ros.runtime.policy import Policy

    torch.set_num_threads(args.torch_threads)
    policy = Policy.from_pretrained(args.model, device="cpu", num_steps=args.num_steps)
    h, w = policy.image_size
    rng = np.random.default_rng(0)
    cams = [rng.integers(0, 255, shape, dtype=np.uint8) for shape in ((256, 320, 3), (128, 160, 3), (128, 160, 3))]
    policy.reset(policy.instructions[0])
    times, parts = [], []
    for j in range(args.chunks + 1):
        t0 = time.perf_counter()
        mosaics = np.stack([compose_mosaic(*cams, h, w)] * (1 if j == 0 else 4))
        policy.observe(mosaics, np.zeros(policy.normalizer.state_dim))
        policy.act()
        if j:  # the first frame (one mosaic, cold caches) is not a steady-state chunk
            times.append(time.perf_counter() - t0)
            parts.append(dict(policy.last_latency))
    stats = _pct(np.array(times) * 1e3)
    fit = math.ceil(stats["p99"] / (STEP_S * 1e3) - 1e-9)
    result = {
        "mode": "latency", "model": _rel(args.model), "torch_threads": args.torch_threads,
        "num_steps": args.num_steps, "chunk_latency_ms": stats,
        "parts_p50_ms": {k: float(np.median([p[k] for p in parts]) * 1e3) for k in parts[0]},
        "lead_that_fits_p99": fit,
        "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0], "platform": platform.platform(),
    }
    print(f"chunk latency ({args.torch_threads} torch thread(s), {args.num_steps} steps, {len(times)} chunks): "
          f"p50 {stats['p50']:.0f} ms, p99 {stats['p99']:.0f} ms, max {stats['max']:.0f} ms "
          f"-> smallest lead that fits p99: {fit} ({fit * 100} ms); load average {result['load_avg_1m']:.1f}")
    return result


def _delta(e, key: str) -> int:
    d = e.diagnostics
    try:
        return int(d["end"][key]) - int(d["start"][key])
    except (KeyError, ValueError):
        return -1  # unknown


def boundary_and_holds(episodes: list) -> dict:
    """Hold ticks per chunk start and boundary vs in-chunk steps of consecutive executed chunks.

    Consecutive published chunks are adjacent unless a refused chunk / failed inference was
    executed as a (not published) hold chunk between them: in an episode without any (the node's
    /diagnostics counters before and after it), every pair is; otherwise only pairs started less
    than 1.6 s apart. Hold ticks = (start-to-start - 1.6 s) / 0.1 s."""
    holds, boundary, inside, misses = [], [], [], 0
    node = {"deadline_chunks": 0, "hold_ticks_total": 0, "control_ticks_skipped": 0}
    for e in episodes:
        clean = _delta(e, "chunks_rejected") == 0 and _delta(e, "inference_errors") == 0
        misses += max(0, _delta(e, "deadline_misses"))
        for k in node:
            node[k] += max(0, _delta(e, k))
        prev = None
        for c in e.chunks:
            inside.extend(c["steps"])
            gap = c["gap_s"]
            if gap is not None and (clean or gap < CHUNK_S - STEP_S / 2):
                holds.append(max(0, round(gap / STEP_S)))
                if prev is not None:
                    boundary.append(float(np.abs(np.subtract(c["first"], prev["last"])).max()))
            prev = c
    return {
        "hold_ticks_per_chunk": _pct(holds),
        "late_chunk_starts": int(sum(h > 0 for h in holds)),
        "deadline_misses": misses,  # the node's own count (/diagnostics deadline_misses)
        "chunks_with_deadline": len(holds),
        # the node's own counts (/diagnostics, summed over episodes): chunks that had a deadline, the
        # ticks they were held, and command periods its control thread could not run in at all
        "node_deadline_chunks": node["deadline_chunks"],
        "node_hold_ticks_total": node["hold_ticks_total"],
        "node_miss_rate": misses / node["deadline_chunks"] if node["deadline_chunks"] else None,
        "node_control_ticks_skipped": node["control_ticks_skipped"],
        "deadline_miss_rate": float(np.mean([h > 0 for h in holds])) if holds else None,
        "boundary_step_rad": _pct(boundary),
        "in_chunk_step_rad": _pct(inside),
    }


def closed_loop(args: argparse.Namespace) -> dict:
    from memorywam_ros.ros import demo

    model = Path(args.model)
    tmp = None
    if args.relabel_lead is not None:
        from memorywam_ros.runtime.chunk_executor import observation_substeps

        tmp = Path(tempfile.mkdtemp(prefix="realtime_"))
        shutil.copytree(model, tmp / model.name)
        model = tmp / model.name
        manifest = json.loads((model / "memorywam.json").read_text())
        manifest["observation_lead"] = args.relabel_lead
        manifest["observation_substeps"] = list(observation_substeps(manifest["chunk_size"], args.relabel_lead))
        (model / "memorywam.json").write_text(json.dumps(manifest, indent=2))
    episodes: list = []
    real_run = demo.summarize

    def keep(eps, a):  # demo.run ends with summarize(episodes, args): keep the raw episodes
        episodes.extend(eps)
        return real_run(eps, a)

    demo.summarize = keep
    try:
        demo_args = ["--task", args.task, "--model", str(model), "--episodes", str(args.episodes), "--episode-timeout",
                     str(args.episode_timeout), "--seed", str(args.seed), "--num-steps", str(args.num_steps),
                     "--torch-threads", str(args.torch_threads), "--startup-timeout", "300", "--log-dir", args.log_dir]
        if args.head_fovy is not None:
            demo_args += ["--head-fovy", str(args.head_fovy)]
        ns = demo.build_parser().parse_args(demo_args)  # memorywam-demo's own defaults for everything else
        summary = demo.run(ns)
    finally:
        demo.summarize = real_run
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    lead = json.loads((Path(args.model) / "memorywam.json").read_text()).get("observation_lead", 0)
    result = {"mode": "closed-loop", "task": args.task, "model": _rel(args.model), "observation_lead": args.relabel_lead
              if args.relabel_lead is not None else lead, "relabelled": args.relabel_lead is not None,
              "episodes": len(episodes), "successes": summary["successes"],
              "chunk_latency_ms": summary["chunk_latency"], **boundary_and_holds(episodes),
              "violations": len(summary["violations"]), "cpu_count": os.cpu_count()}
    h, b, i = result["hold_ticks_per_chunk"], result["boundary_step_rad"], result["in_chunk_step_rad"]
    nan = float("nan")
    label = f"{result['observation_lead']}{' (relabelled)' if result['relabelled'] else ''}"
    print("| ℓ | episodes | success | node: misses / chunks, hold ticks | node: ticks skipped | subscriber: hold "
          "ticks p50/p99, late starts | boundary step p50/p99 | in-chunk step p50/p99 |\n"
          "|---|---|---|---|---|---|---|---|")
    print(f"| {label} | {len(episodes)} | {result['successes']} | {result['deadline_misses']}/"
          f"{result['node_deadline_chunks']}, {result['node_hold_ticks_total']} | "
          f"{result['node_control_ticks_skipped']} | {h.get('p50', nan):.0f} / {h.get('p99', nan):.0f}, "
          f"{result['late_chunk_starts']}/{result['chunks_with_deadline']} | {b.get('p50', nan):.3f} / "
          f"{b.get('p99', nan):.3f} | {i.get('p50', nan):.3f} / {i.get('p99', nan):.3f} |")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=("latency", "closed-loop"))
    p.add_argument("--model", default=str(ROOT / "checkpoints" / "sim_transfer_cube"))
    p.add_argument("--torch-threads", type=int, default=1, help="as memorywam-demo: the other core runs the sim")
    p.add_argument("--num-steps", type=int, default=10)
    p.add_argument("--chunks", type=int, default=40, help="latency: latent frames to time")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--task", default="transfer_cube", choices=("transfer_cube", "insertion"),
                   help="closed-loop: the simulated task (the checkpoint's sim.json must name it)")
    p.add_argument("--episode-timeout", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=100000)
    p.add_argument("--head-fovy", type=float, default=None, help="simulator head camera framing (the demos')")
    p.add_argument("--relabel-lead", type=int, default=None, help="timing only: run the checkpoint as if ℓ = L")
    p.add_argument("--log-dir", default="runs/realtime_logs")
    p.add_argument("--results", default=None, help="JSON path (default bench/results/realtime_<mode>.json)")
    args = p.parse_args(argv)
    result = latency(args) if args.mode == "latency" else closed_loop(args)
    suffix = "" if args.mode == "latency" else f"_l{result['observation_lead']}"
    out = Path(args.results or RESULTS / f"realtime_{args.mode.replace('-', '_')}{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
