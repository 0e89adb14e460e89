"""One table for the memory capability benchmark: MiniGrid Memory (both envs) + the blind-head dual arm.

    .venv/bin/python bench/memory_table.py MINIGRID.json DUAL_ARM.json --out bench/results/memory_capability_table

Reads the JSON of bench/memory_capability.py (merged over envs) and of bench/memory_dual_arm.py and
writes <out>.md (+ .json): per task and memory policy the success rate with its 95 % Wilson
interval, per-chunk latency and KV-cache bytes at episode end; for the dual arm also the graded
"reached" rate. bench/run_memory_capability.sh calls it last.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

POLICY_ORDER = ("hybrid", "window", "full", "no_gist", "no_anchor")


def rows(minigrid: dict, dual_arm: dict) -> list[dict]:
    out = []
    for env_id, cells in minigrid["results"].items():
        for policy in POLICY_ORDER:
            if policy in cells:
                r = cells[policy]
                out.append({"task": env_id, "policy": policy, "successes": r["successes"], "episodes": r["episodes"],
                            "ci95": r["ci95"], "latency_ms": r["latency_ms_median"],
                            "cache_bytes": r["cache_bytes_end_mean"], "chance": 0.5, "extra": ""})
    blind = dual_arm["references"]["blind"]
    for policy in POLICY_ORDER:
        if policy in dual_arm["results"]:
            r = dual_arm["results"][policy]
            out.append({"task": "TransferCube, blind head", "policy": policy, "successes": r["successes"],
                        "episodes": r["episodes"], "ci95": r["ci95"], "latency_ms": r["latency_ms_median"],
                        "cache_bytes": r["cache_bytes_end_mean"], "chance": blind["success_rate"],
                        "extra": f"reached {r['reached']}/{r['episodes']} "
                                 f"({r['reach_ci95'][0]:.0%}–{r['reach_ci95'][1]:.0%}), "
                                 f"held {100 * r['dwell_dist_m_mean']:.1f} cm"})
    return out


def markdown(table: list[dict]) -> list[str]:
    lines = ["| task | policy | success | 95 % CI (Wilson) | no-memory baseline | latency / chunk (median) | "
             "cache at episode end | graded (dual arm) |", "|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['task']} | {r['policy']} | {r['successes'] / r['episodes']:.0%} "
                     f"({r['successes']}/{r['episodes']}) | {r['ci95'][0]:.0%}–{r['ci95'][1]:.0%} | "
                     f"{r['chance']:.0%} | {r['latency_ms']:.0f} ms | {r['cache_bytes'] / 1024:.1f} KiB | "
                     f"{r['extra'] or '–'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("minigrid", help="result JSON of bench/memory_capability.py (all envs)")
    p.add_argument("dual_arm", help="result JSON of bench/memory_dual_arm.py")
    p.add_argument("--out", required=True, help="output stem")
    args = p.parse_args(argv)
    minigrid = json.loads(Path(args.minigrid).read_text())
    dual_arm = json.loads(Path(args.dual_arm).read_text())
    table = rows(minigrid, dual_arm)
    stem = Path(args.out)
    stem.with_suffix(".json").write_text(json.dumps({"rows": table, "sources": [args.minigrid, args.dual_arm],
                                                     "commands": [minigrid["command"], dual_arm["command"]]},
                                                    indent=2) + "\n")
    lines = [f"# Memory capability — one table ({minigrid['preset']} presets)", "", *markdown(table), "",
             "No-memory baseline: MiniGrid Memory chance (50 %); dual arm: the scripted plan aimed at the centre of "
             "the cube sampler (what a policy that never saw the cube can do). Latency: VAE + prefill + 10 "
             "denoising steps, float32, CPU, batch 1 (ratios between policies only; absolute numbers from a "
             "shared 2-core machine).", "", "Commands:", "", f"    {minigrid['command']}", f"    {dual_arm['command']}",
             f"    python bench/memory_table.py {args.minigrid} {args.dual_arm} --out {args.out}"]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(markdown(table)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
