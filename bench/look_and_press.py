"""Look-and-Press closed loop over real ROS 2 topics, and the memory table (issue 15, items 2-4).

    .venv/bin/python bench/look_and_press.py eval --model checkpoints/sim_look_and_press --policy hybrid \
        --cue-start 2 --episodes 50          # one cell: memorywam-demo's loop, resumable in blocks
    .venv/bin/python bench/look_and_press.py table   # bench/results/look_and_press.{md,json,png}

The checkpoints are trained by `TASK=look_and_press CUE_START=c MEMORY_POLICY=p scripts/train_sim.sh`
(scripted demos on seeds 1000-1049 -> memorywam-convert -> memorywam-precompute -> memorywam-train),
one per memory policy and cue timing, same data, config and budget.

`eval` runs `memorywam-demo --task look_and_press` (simulator and policy node as separate processes,
the policy node with the robot's parameters) on seeds from 200000 on (the cue is drawn from the seed:
disjoint from the training seeds) in blocks of `--block` episodes; each block is appended to
bench/results/look_and_press/c<cue_start>_<policy>.json at once, so a stopped run resumes at the next
block. Per episode: success (the cued button held 0.3 s, the other never touched), the stage reached,
chunk latency, the policy's KV-cache bytes at the episode's end (its /diagnostics), limit violations.

`table` reads every cell there plus the passkey probe's results (bench/results/passkey_uniform*.json)
and writes one table (success with its 95 % Wilson interval, chunk latency, cache bytes; the passkey
accuracy per delay) and a plot: passkey accuracy vs delay per policy, Look-and-Press success per
policy and cue timing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from memory_training import wilson  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CELLS = RESULTS / "look_and_press"
POLICY_ORDER = ("hybrid", "full", "window", "no_gist", "no_anchor")
SEED0 = 200_000  # training demos use seeds 1000..; the cue is a function of the seed
TIMING_NAMES = {0: "cue during the anchors (frames 0-1)", 2: "cue after the anchors (frames 2-3)"}


def _rel(path: str | Path) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def cell_path(cue_start: int, policy: str) -> Path:
    return CELLS / f"c{cue_start}_{policy}.json"


def evaluate(args: argparse.Namespace) -> dict:
    """Run blocks of memorywam-demo episodes until the cell holds `--episodes`; returns the cell."""
    from memorywam_ros.ros import demo

    path = cell_path(args.cue_start, args.policy)
    cell = json.loads(path.read_text()) if path.is_file() else None
    if cell is not None and cell["model"] != _rel(args.model):
        raise SystemExit(f"{_rel(path)} holds episodes of {cell['model']}, not {_rel(args.model)}: move it away first")
    manifest = json.loads((Path(args.model) / "memorywam.json").read_text())
    if cell is None:
        cell = {"task": "look_and_press", "policy": args.policy, "cue_start": args.cue_start,
                "cue_frames": args.cue_frames, "delay_chunks": args.delay_chunks, "model": _rel(args.model),
                "memory": manifest.get("model", {}).get("memory") or manifest.get("memory"),
                "command": "python bench/look_and_press.py " + " ".join(sys.argv[1:]), "blocks": []}
    while (done := sum(len(b["per_episode"]) for b in cell["blocks"])) < args.episodes:
        n = min(args.block, args.episodes - done)
        # the sim node uses seed + k for its k-th reset (k >= 1): blocks never share a seed
        ns = demo.build_parser().parse_args([
            "--task", "look_and_press", "--model", str(args.model), "--episodes", str(n),
            "--seed", str(SEED0 + done), "--cue-start", str(args.cue_start), "--cue-frames", str(args.cue_frames),
            "--delay-chunks", str(args.delay_chunks), "--torch-threads", str(args.torch_threads),
            "--log-dir", str(ROOT / "runs" / "look_and_press_logs")])
        summary = demo.run(ns)
        cell["blocks"].append({k: summary[k] for k in ("per_episode", "chunk_latency", "violations",
                                                        "cache_bytes_end_max", "commands")})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cell, indent=1) + "\n")
        print(f"[look_and_press] {_rel(path)}: {done + n}/{args.episodes} episodes", flush=True)
    return cell


def summarize_cell(cell: dict) -> dict:
    eps = [e for b in cell["blocks"] for e in b["per_episode"]]
    k, n = sum(e["success"] for e in eps), len(eps)
    lat = [b["chunk_latency"].get("p50_ms") for b in cell["blocks"] if b["chunk_latency"].get("n")]
    cache = [e["cache_bytes_end"] for e in eps if e.get("cache_bytes_end") is not None]
    stages: dict[str, int] = {}
    for e in eps:
        stages[e["stage"]] = stages.get(e["stage"], 0) + 1
    return {"policy": cell["policy"], "cue_start": cell["cue_start"], "model": cell["model"], "episodes": n,
            "successes": k, "success_rate": k / max(n, 1), "ci95": list(wilson(k, n)),
            "latency_p50_ms": float(np.median(lat)) if lat else None,
            "cache_bytes_end_median": float(np.median(cache)) if cache else None,
            "violations": sum(len(b["violations"]) for b in cell["blocks"]), "stages": stages,
            "command": cell["command"]}


def passkey_cells() -> list[dict]:
    """The passkey probe's cells (colour cue), the longest-trained run of each (policy, delay)."""
    best: dict[tuple[str, int], dict] = {}
    for f in sorted(RESULTS.glob("passkey_uniform*.json")):
        d = json.loads(f.read_text())
        steps = d.get("knobs", {}).get("steps")
        for c in d["cells"].values():
            key = (c["policy"], c["delay"])
            if key not in best or (steps or 0) > (best[key]["steps"] or 0):
                best[key] = {**c, "steps": steps, "command": d["command"], "file": _rel(f)}
    return sorted(best.values(), key=lambda c: (POLICY_ORDER.index(c["policy"]), c["delay"]))


def table(args: argparse.Namespace) -> dict:
    cells = [summarize_cell(json.loads(p.read_text())) for p in sorted(CELLS.glob("c*_*.json"))]
    cells.sort(key=lambda c: (c["cue_start"], POLICY_ORDER.index(c["policy"])))
    passkey = passkey_cells()
    lines = ["# Memory you can see: Look-and-Press closed loop and the passkey probe", "",
             "## Look-and-Press on the simulated dual arm (memorywam-demo over ROS 2, 2 CPU cores)", "",
             "| cue timing | policy | success | 95 % CI (Wilson) | stages reached | chunk latency p50 | "
             "cache at episode end | limit violations |", "|---|---|---|---|---|---|---|---|"]
    for c in cells:
        stages = ", ".join(f"{k}: {v}" for k, v in sorted(c["stages"].items(), key=lambda kv: -kv[1]))
        cache = f"{c['cache_bytes_end_median'] / 1024:.0f} KiB" if c["cache_bytes_end_median"] else "-"
        lat = f"{c['latency_p50_ms']:.0f} ms" if c["latency_p50_ms"] else "-"
        lines.append(f"| {TIMING_NAMES.get(c['cue_start'], c['cue_start'])} | {c['policy']} | "
                     f"{c['success_rate']:.0%} ({c['successes']}/{c['episodes']}) | {c['ci95'][0]:.0%}–"
                     f"{c['ci95'][1]:.0%} | {stages} | {lat} | {cache} | {c['violations']} |")
    lines += ["", "Commands (one per cell): " + "; ".join(f"`{c['command']}`" for c in cells), "",
              "## Passkey probe (synthetic latents through the real network and cache)", "",
              "| policy | D | accuracy | 95 % CI | training steps | cache KiB | latency / chunk (ms) | file |",
              "|---|---|---|---|---|---|---|---|"]
    for c in passkey:
        lines.append(f"| {c['policy']} | {c['delay']} | {c['accuracy']:.0%} ({c['correct']}/{c['episodes']}) | "
                     f"{c['ci95'][0]:.0%}–{c['ci95'][1]:.0%} | {c['steps']} | {c['cache_bytes'] / 1024:.1f} | "
                     f"{c['latency_ms_median']:.0f} | {c['file']} |")
    out = {"look_and_press": cells, "passkey": passkey}
    md = RESULTS / "look_and_press.md"
    md.write_text("\n".join(lines) + "\n")
    (RESULTS / "look_and_press.json").write_text(json.dumps(out, indent=1) + "\n")
    plot(cells, passkey, RESULTS / "look_and_press.png")
    print("\n".join(lines))
    print(f"wrote {_rel(md)}, look_and_press.json, look_and_press.png")
    return out


def plot(cells: list[dict], passkey: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for policy in POLICY_ORDER:
        pts = sorted((c["delay"], c["accuracy"], c["ci95"]) for c in passkey if c["policy"] == policy)
        if pts:
            d, acc, ci = zip(*pts, strict=True)
            err = np.array([[x - lo for x, (lo, _) in zip(acc, ci, strict=True)],
                            [hi - x for x, (_, hi) in zip(acc, ci, strict=True)]])
            a.errorbar(d, acc, yerr=err, marker="o", capsize=3, label=policy)
    a.axhline(0.25, color="grey", ls=":", label="chance (K = 4)")
    a.set(xscale="log", xlabel="delay D (latent frames)", ylabel="accuracy", title="passkey probe", ylim=(0, 1.05))
    a.legend(fontsize=8)
    timings = sorted({c["cue_start"] for c in cells})
    width = 0.8 / max(len(timings), 1)
    for i, t in enumerate(timings):
        sub = [c for c in cells if c["cue_start"] == t]
        x = [POLICY_ORDER.index(c["policy"]) + i * width for c in sub]
        y = [c["success_rate"] for c in sub]
        err = np.array([[c["success_rate"] - c["ci95"][0] for c in sub],
                        [c["ci95"][1] - c["success_rate"] for c in sub]])
        b.bar(x, y, width, yerr=err, capsize=3, label=TIMING_NAMES.get(t, str(t)))
    b.axhline(0.5, color="grey", ls=":", label="a coin flip between the buttons")
    b.set_xticks(np.arange(len(POLICY_ORDER)) + width * (len(timings) - 1) / 2, POLICY_ORDER)
    b.set(ylabel="success", title="Look-and-Press, closed loop over ROS 2", ylim=(0, 1.05))
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    e = sub.add_parser("eval", help="closed-loop episodes of one checkpoint (resumable)")
    e.add_argument("--model", required=True)
    e.add_argument("--policy", required=True, choices=POLICY_ORDER, help="the memory policy it was trained with")
    e.add_argument("--cue-start", type=int, required=True)
    e.add_argument("--cue-frames", type=int, default=2)
    e.add_argument("--delay-chunks", type=int, default=5)
    e.add_argument("--episodes", type=int, default=50)
    e.add_argument("--block", type=int, default=25, help="episodes per memorywam-demo run (saved after each)")
    e.add_argument("--torch-threads", type=int, default=1)
    sub.add_parser("table", help="the table and plot from every cell")
    a = p.parse_args(argv)
    if a.mode == "eval":
        evaluate(a)
    table(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
