"""State / action normalisation: z-score with a floored standard deviation.

`normalize(x) = (x - mean) / max(std, std_floor)`. The floor matters for dimensions that never
move in the demonstrations (a gripper that stays open, a locked joint): their std is ~0, and
without a floor normalising divides by ~0, so sensor noise at deployment becomes a huge network
input (and training targets explode). With the floor (default 1e-2, in the data's units: ~0.6 deg
for radians) such dimensions just stay near their constant. min/max are recorded for inspection
only (range checks, plots); they are not used to normalise, and joint limits come from the robot
config, not from here.

Statistics come from arrays of any leading shape (..., dim), e.g. all states (N, 14) and all
action chunks (N, 16, 14) of a dataset. The same object maps numpy arrays and torch tensors.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = ["ArrayStats", "Normalizer"]

FORMAT_VERSION = 1
DEFAULT_STD_FLOOR = 1e-2

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class ArrayStats:
    """Per-dimension statistics of one quantity (dim,) float64 each."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    count: int

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def from_array(cls, values: np.ndarray | torch.Tensor, name: str = "values") -> ArrayStats:
        arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
        if arr.ndim < 1 or arr.shape[-1] < 1:
            raise ValueError(f"{name}: expected shape (..., dim), got {arr.shape}")
        flat = arr.reshape(-1, arr.shape[-1]).astype(np.float64)  # (N, dim)
        if flat.shape[0] == 0:
            raise ValueError(f"{name}: no samples")
        if not np.isfinite(flat).all():
            raise ValueError(f"{name}: contains NaN or inf")
        return cls(
            mean=flat.mean(0), std=flat.std(0), min=flat.min(0), max=flat.max(0), count=int(flat.shape[0])
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "min": self.min.tolist(),
            "max": self.max.tolist(),
            "count": self.count,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str = "stats") -> ArrayStats:
        try:
            arrays = {k: np.asarray(data[k], dtype=np.float64) for k in ("mean", "std", "min", "max")}
        except KeyError as exc:
            raise ValueError(f"{name}: missing field {exc}") from None
        dims = {a.shape for a in arrays.values()}
        if len(dims) != 1 or len(next(iter(dims))) != 1:
            raise ValueError(f"{name}: mean/std/min/max must be 1-D of one length, got {sorted(dims)}")
        return cls(count=int(data.get("count", 0)), **arrays)


class Normalizer:
    """Maps raw joint states / actions to network units and back."""

    def __init__(self, state: ArrayStats, action: ArrayStats, std_floor: float = DEFAULT_STD_FLOOR) -> None:
        if std_floor <= 0:
            raise ValueError(f"std_floor must be > 0, got {std_floor}")
        self.state = state
        self.action = action
        self.std_floor = float(std_floor)
        # (dim,) float64 divisors actually used
        self._state_scale = np.maximum(state.std, self.std_floor)
        self._action_scale = np.maximum(action.std, self.std_floor)

    @property
    def state_dim(self) -> int:
        return self.state.dim

    @property
    def action_dim(self) -> int:
        return self.action.dim

    @classmethod
    def from_arrays(
        cls,
        states: np.ndarray | torch.Tensor,
        actions: np.ndarray | torch.Tensor,
        std_floor: float = DEFAULT_STD_FLOOR,
    ) -> Normalizer:
        """Statistics over every sample: states (..., state_dim), actions (..., action_dim)."""
        state = ArrayStats.from_array(states, "states")
        return cls(state, ArrayStats.from_array(actions, "actions"), std_floor)

    @classmethod
    def identity(cls, state_dim: int, action_dim: int) -> Normalizer:
        """mean 0, std 1: for tiny random checkpoints without data."""

        def unit(dim: int) -> ArrayStats:
            return ArrayStats(np.zeros(dim), np.ones(dim), np.full(dim, -np.inf), np.full(dim, np.inf), 0)

        return cls(unit(state_dim), unit(action_dim), std_floor=DEFAULT_STD_FLOOR)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "std_floor": self.std_floor,
            "state": self.state.to_dict(),
            "action": self.action.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalizer:
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported normalization format {data.get('format_version')!r}")
        return cls(
            ArrayStats.from_dict(data["state"], "state"),
            ArrayStats.from_dict(data["action"], "action"),
            std_floor=float(data.get("std_floor", DEFAULT_STD_FLOOR)),
        )

    def to_json(self, path: str | os.PathLike) -> None:
        # json writes ±inf as Infinity (valid for Python's json, which is the only reader)
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Normalizer:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    # ------------------------------------------------------------------ maps
    @staticmethod
    def _apply(x: ArrayT, offset: np.ndarray, scale: np.ndarray, inverse: bool, name: str) -> ArrayT:
        if not isinstance(x, torch.Tensor):
            x = np.asarray(x)
        if x.ndim == 0 or x.shape[-1] != offset.shape[0]:
            raise ValueError(f"{name}: expected shape (..., {offset.shape[0]}), got {tuple(x.shape)}")
        if isinstance(x, torch.Tensor):
            dtype = x.dtype if x.is_floating_point() else torch.float32
            off = torch.as_tensor(offset, dtype=dtype, device=x.device)
            sc = torch.as_tensor(scale, dtype=dtype, device=x.device)
            x = x.to(dtype)
        else:
            dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
            off, sc = offset.astype(dtype), scale.astype(dtype)
            x = x.astype(dtype, copy=False)
        return x * sc + off if inverse else (x - off) / sc

    def normalize_state(self, state: ArrayT) -> ArrayT:
        """(..., state_dim) raw -> normalised, same array type and float dtype."""
        return self._apply(state, self.state.mean, self._state_scale, False, "state")

    def normalize_action(self, action: ArrayT) -> ArrayT:
        """(..., action_dim) raw -> normalised."""
        return self._apply(action, self.action.mean, self._action_scale, False, "action")

    def denormalize_action(self, action: ArrayT) -> ArrayT:
        """(..., action_dim) normalised -> raw joint targets."""
        return self._apply(action, self.action.mean, self._action_scale, True, "action")

    def __repr__(self) -> str:
        return (
            f"Normalizer(state_dim={self.state_dim}, action_dim={self.action_dim}, "
            f"std_floor={self.std_floor})"
        )
