"""3D rotary position embeddings computed from explicit (t, h, w) positions.

Wan splits each 128-dim head into t/h/w parts of 44/42/42 dims and rotates interleaved pairs.
diffusers slices a table precomputed for 1024 frames; we compute the angles from the positions
themselves, so a frame index of 5000 works and gist/action tokens can sit at marker positions.

Where the non-video tokens sit (one shared positional frame for both experts, paper §4.1):
  video token of latent frame t at patch (h, w):   (t, h, w),       h, w >= 0
  gist token of latent frame t (all M of them):     (t, -1, -1)      GIST_MARKER
  action k of the chunk predicted at frame t:       (t, -2, k)       ACTION_ROW
Video positions are non-negative on h, so neither marker collides with a video position, and the
two markers differ from each other on h.
"""

from __future__ import annotations

import torch

GIST_MARKER = (-1.0, -1.0)
ACTION_ROW = -2.0


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """(t, h, w) rotary dims of one head, as in Wan: h = w = 2 * (head_dim // 6), t gets the rest."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of the rotation angles for each token.

    positions: (..., S, 3) float (t, h, w).  Returns cos, sin: (..., S, head_dim // 2) float32,
    one angle per rotated pair. Angles are formed in float64 so large frame indices stay exact.
    """
    angles = []
    for axis, dim in enumerate(axis_dims(head_dim)):
        exponent = torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim
        inv_freq = theta ** (-exponent)  # (dim/2,)
        angles.append(positions[..., axis, None].to(torch.float64) * inv_freq)
    angle = torch.cat(angles, dim=-1)
    return angle.cos().float(), angle.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2j], x[2j+1]) of x: (B, H, S, D) by cos/sin: (S, D/2) or (B, 1, S, D/2)."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2).type_as(x)


def video_positions(frame_ids: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
    """(..., F) frame ids -> (..., F * grid_h * grid_w, 3) positions in diffusers' token order (t, h, w)."""
    shape = (*frame_ids.shape, grid_h, grid_w)
    f = frame_ids.to(torch.float64)[..., None, None].expand(shape)
    h = torch.arange(grid_h, dtype=torch.float64, device=frame_ids.device)[:, None].expand(shape)
    w = torch.arange(grid_w, dtype=torch.float64, device=frame_ids.device)[None, :].expand(shape)
    return torch.stack((f, h, w), dim=-1).flatten(-4, -2)


def gist_positions(frame_ids: torch.Tensor, num_gists: int) -> torch.Tensor:
    """(..., F) -> (..., F * M, 3): every gist of frame t sits at (t, *GIST_MARKER)."""
    f = frame_ids.to(torch.float64)[..., None].expand(*frame_ids.shape, num_gists)
    pos = torch.stack((f, torch.full_like(f, GIST_MARKER[0]), torch.full_like(f, GIST_MARKER[1])), dim=-1)
    return pos.flatten(-3, -2)


def action_positions(frame_ids: torch.Tensor, chunk_size: int, first: int = 0) -> torch.Tensor:
    """(..., F) -> (..., F * chunk, 3): action k of the chunk predicted at frame t sits at (t, ACTION_ROW, k),
    k = first .. first + chunk - 1 (a committed prefix of P actions: first = -P, right before the chunk)."""
    f = frame_ids.to(torch.float64)[..., None].expand(*frame_ids.shape, chunk_size)
    k = torch.arange(first, first + chunk_size, dtype=torch.float64, device=frame_ids.device).expand_as(f)
    pos = torch.stack((f, torch.full_like(f, ACTION_ROW), k), dim=-1)
    return pos.flatten(-3, -2)


def sincos_2d(grid_h: int, grid_w: int, dim: int) -> torch.Tensor:
    """(grid_h * grid_w, dim) fixed 2D sin/cos table in token order (h, w): half the dims code h, half w.

    The initial value of MemoryWAM's optional absolute position embedding (a value, not a rotation):
    nearby patches get similar vectors, so a linear read of an attended token's value gives its place.
    """
    if dim % 4:
        raise ValueError(f"dim {dim} must be divisible by 4 for a 2D sin/cos table")
    freq = 1.0 / 100.0 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # (dim/4,)
    h = torch.arange(grid_h, dtype=torch.float64)[:, None].expand(grid_h, grid_w).flatten()[:, None] * freq
    w = torch.arange(grid_w, dtype=torch.float64)[None, :].expand(grid_h, grid_w).flatten()[:, None] * freq
    return torch.cat((h.sin(), h.cos(), w.sin(), w.cos()), dim=1).float()
