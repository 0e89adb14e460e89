"""Flow matching for both branches (rectified flow, velocity = noise - data).

x_sigma = (1 - sigma) * x0 + sigma * noise, target v = noise - x0, model timestep = 1000 * sigma
(`add_noise`, `velocity_target`, `timestep`: train.py builds every model input and target with
these, and test/test_train_conventions.py checks what the model receives).

Training timesteps: shifted logit-normal, sigma = s * u / (1 + (s - 1) * u) with u = sigmoid(N(0, 1));
shift 5 for video, 1 for actions (paper §4.1). Sampling sigma from this density is the
"logit-normal training weight": we do not multiply the loss by the density again.

Sampling: Euler steps with diffusers' FlowMatchEulerDiscreteScheduler (its update rule and shift
are the field's reference) on an explicit sigma grid, `sampling_sigmas`: linspace(1, 0, n + 1)
without its final 0, shifted, then diffusers appends the terminal 0. With shift 1 and 10 steps
that is 1.0, 0.9, ..., 0.1 -> 0: ten equal steps. diffusers' default grid instead runs from
sigma 1 to sigma_min = 1/1000 and appends 0 (1.0, 0.889, ..., 0.112, 0.001 -> 0): its tenth step
moves sigma by 0.001 only, so "10 steps" would be 9 steps of size 1/9 plus a no-op; training
draws sigma continuously in (0, 1), so nothing ties inference to the 1/1000 floor.

`SamplerSettings` is everything the sampler needs (shifts, steps); training writes it into the
checkpoint manifest (runtime/checkpoint.py) and the robot's Policy reads it from there, so
inference integrates the same flow the model was trained on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class SamplerSettings:
    """Inference-time sampler of a trained model (the checkpoint manifest's "sampler" entry).

    action_shift / video_shift: the sigma shifts of training (TrainConfig.shift_action /
    shift_video), applied to the sampling grid the same way. num_steps: the default number of
    Euler steps per action chunk (a deployment may ask for another count).
    """

    action_shift: float = 1.0
    video_shift: float = 5.0
    num_steps: int = 10

    def __post_init__(self) -> None:
        for name in ("action_shift", "video_shift"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"sampler {name} must be a positive number, got {value!r}")
        if not (isinstance(self.num_steps, int) and self.num_steps >= 1):
            raise ValueError(f"sampler num_steps must be an integer >= 1, got {self.num_steps!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplerSettings:
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown sampler settings {sorted(unknown)}")
        return cls(**data)


def sample_sigma(
    shape: tuple[int, ...], shift: float, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Shifted logit-normal sigmas in (0, 1)."""
    u = torch.sigmoid(torch.randn(shape, generator=generator, device=device))
    return shift_sigma(u, shift)


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """The SD3 / Wan time shift s·σ / (1 + (s - 1)·σ) (diffusers' `shift`): s > 1 moves σ towards 1."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def timestep(sigma: torch.Tensor) -> torch.Tensor:
    """The model's timestep input for noise level sigma: 1000 * sigma (diffusers' convention)."""
    return sigma * NUM_TRAIN_TIMESTEPS


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """sigma broadcast from the left: (B, N) against x0 (B, N, ...)."""
    sigma = sigma.reshape(*sigma.shape, *([1] * (x0.ndim - sigma.ndim)))
    return (1 - sigma) * x0 + sigma * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """d x_sigma / d sigma: what the model is trained to predict."""
    return noise - x0


def sampling_sigmas(num_steps: int) -> list[float]:
    """The unshifted sigma grid of `num_steps` Euler steps: 1, 1 - 1/n, ..., 1/n (then 0, appended by diffusers)."""
    return torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)[:-1].tolist()


def scheduler(num_steps: int, shift: float, device: torch.device | str | None = None):
    """diffusers' FlowMatchEulerDiscreteScheduler set to our grid: `.sigmas` has num_steps + 1 entries ending at 0."""
    from diffusers import FlowMatchEulerDiscreteScheduler  # lazy: importing diffusers costs seconds per process

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)
    sched.set_timesteps(sigmas=sampling_sigmas(num_steps), device=device)
    return sched


def euler_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    num_steps: int,
    shift: float,
) -> torch.Tensor:
    """Integrate from pure noise (sigma = 1) to data with `num_steps` Euler steps.

    velocity(x, timestep) with timestep a 0-dim tensor in [0, 1000]. `shift` has no default on
    purpose: it must be the one the model was trained with (SamplerSettings).
    """
    sched = scheduler(num_steps, shift, noise.device)
    x = noise
    for t in sched.timesteps:
        x = sched.step(velocity(x, t), t, x).prev_sample
    return x
