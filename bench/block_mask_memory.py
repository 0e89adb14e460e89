"""Memory and time of building the training block mask at the paper's size (issue 12, point 5).

    .venv/bin/python bench/block_mask_memory.py          # ~1-2 min on 2 CPU cores (the dense row)

The sequence of 64 latent frames in the paper's layout: per frame 120 video + 8 gist tokens, 63
noisy next frames of 120, 64 action chunks of 16 -> S = 16776 (MemoryWAM.sequence_metadata).
Rows, each in its own process (peak RSS is per process):
  dense      what attention.py did before: create_block_mask(mask_mod) uncompiled, at S
  analytic   memory_block_mask at S (the rule per pair of token runs, no S x S tensor)
  bucketed   what training now builds: the metadata padded to its bucket (32768), analytic
Writes bench/results/block_mask_memory.json.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
FRAMES = 64

CHILD = """
import json, resource, sys, time, torch
from torch.nn.attention.flex_attention import create_block_mask
from memorywam_ros.model import MemoryConfig, MemoryRules, MemoryWAM
from memorywam_ros.model import attention
variant, frames = sys.argv[1], int(sys.argv[2])
rules = MemoryRules(MemoryConfig())
frame, kind, group = MemoryWAM.sequence_metadata(torch.arange(frames)[None], 120, 8, 16, True)
if variant == "bucketed":
    frame, kind, group = attention.pad_metadata(frame, kind, group, attention.bucket_length(frame.shape[1]))
S = frame.shape[1]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if variant == "dense":
    def mask_mod(b, h, q, kv):
        return rules.visible(frame[b, q], kind[b, q], group[b, q], frame[b, kv], kind[b, kv], group[b, kv])
    mask = create_block_mask(mask_mod, 1, None, S, S, device="cpu")
else:
    mask = attention.memory_block_mask(rules, frame, kind, group)
seconds = time.perf_counter() - t0
growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
blocks = int(mask.kv_num_blocks.sum()), int(mask.full_kv_num_blocks.sum())
row = {"variant": variant, "tokens": S, "seconds": seconds, "peak_rss_growth_bytes": growth}
row.update(partial_blocks=blocks[0], full_blocks=blocks[1], total_blocks=mask.kv_indices.shape[-1] ** 2)
print(json.dumps(row))
"""


def main() -> None:
    rows = []
    for variant in ("dense", "analytic", "bucketed"):
        out = subprocess.run([sys.executable, "-c", CHILD, variant, str(FRAMES)], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"{variant}: {out.stderr[-2000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"  {variant:<9s} S={row['tokens']:<6d} {row['seconds']:8.3f} s"
            f"  peak RSS +{row['peak_rss_growth_bytes'] / 2**20:8.1f} MiB  blocks partial {row['partial_blocks']}"
            f" full {row['full_blocks']} of {row['total_blocks']}",
            flush=True,
        )
    result = {"frames": FRAMES, "machine": platform.processor() or platform.machine(), "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "block_mask_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'block_mask_memory.json'}")


if __name__ == "__main__":
    main()
