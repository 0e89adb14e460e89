"""Control rows and latent frames of a simulated episode (pure arithmetic: no torch, no MuJoCo).

The robot runtime's time scale: control rows at 10 Hz, 16-row chunks, one latent frame per chunk.
Row 0 is latent frame 0 alone; rows 16(j-1)+1 .. 16j belong to frame j (the streaming VAE's 1 + 4k
frame grouping at one mosaic per sub-step). `memory_transfer` and `look_and_press` time their cues
with it; the simulator node imports it without pulling in the model's dependencies.
"""

from __future__ import annotations

__all__ = ["CHUNK", "frame_of_row"]

CHUNK = 16  # control rows per action chunk = per latent frame (the robot's chunk)


def frame_of_row(t: int, chunk: int = CHUNK) -> int:
    """Latent frame an observation at control row t belongs to (row 0 -> 0, rows 16(j-1)+1 .. 16j -> j)."""
    if t < 0:
        raise ValueError(f"row {t} < 0")
    return -(-t // chunk)
