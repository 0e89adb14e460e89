"""`memorywam-params`: parameter count of each preset, built on the meta device (nothing allocated)."""

from __future__ import annotations

import argparse

import torch

from .config import MemoryWAMConfig
from .memorywam import MemoryWAM

PRESETS = {"paper": MemoryWAMConfig.paper, "tiny": MemoryWAMConfig.tiny}


def count_parameters(config: MemoryWAMConfig) -> dict[str, int]:
    """{'video': ..., 'action': ..., 'memory': ..., 'total': ...} without allocating weights."""
    with torch.device("meta"):
        model = MemoryWAM(config)
    counts = {
        "video": sum(p.numel() for p in model.video.parameters())
        + (0 if model.pos_embed is None else model.pos_embed.numel()),  # the optional absolute position table
        "action": sum(p.numel() for p in model.action.parameters()),
        "memory": 0 if model.gist_tokens is None else model.gist_tokens.numel(),
    }
    counts["total"] = sum(counts.values())
    return counts


def _human(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3f}{unit}"
    return str(n)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", choices=sorted(PRESETS), action="append", help="default: all presets")
    args = parser.parse_args(argv)
    print(f"{'preset':<8} {'video DiT':>12} {'action DiT':>12} {'gists':>10} {'total':>12} {'bf16 weights':>14}")
    for name in args.preset or sorted(PRESETS):
        c = count_parameters(PRESETS[name]())
        gib = c["total"] * 2 / 2**30
        print(
            f"{name:<8} {_human(c['video']):>12} {_human(c['action']):>12} {_human(c['memory']):>10} "
            f"{_human(c['total']):>12} {gib:>11.2f} GiB"
        )


if __name__ == "__main__":
    main()
