"""Flow matching for both branches (rectified flow, velocity = noise - data).

x_sigma = (1 - sigma) * x0 + sigma * noise, target v = noise - x0, model timestep = 1000 * sigma.

Training timesteps: shifted logit-normal, sigma = s * u / (1 + (s - 1) * u) with u = sigmoid(N(0, 1));
shift 5 for video, 1 for actions (paper §4.1). Sampling sigma from this density is the
"logit-normal training weight": we do not multiply the loss by the density again.

Sampling: Euler steps with diffusers' FlowMatchEulerDiscreteScheduler (its sigma grid and update
rule are the field's reference; shift 1 for actions). Deterministic given the initial noise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

NUM_TRAIN_TIMESTEPS = 1000


def sample_sigma(
    shape: tuple[int, ...], shift: float, generator: torch.Generator | None = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Shifted logit-normal sigmas in (0, 1)."""
    u = torch.sigmoid(torch.randn(shape, generator=generator, device=device))
    return shift * u / (1 + (shift - 1) * u)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """sigma broadcast from the left: (B, N) against x0 (B, N, ...)."""
    sigma = sigma.reshape(*sigma.shape, *([1] * (x0.ndim - sigma.ndim)))
    return (1 - sigma) * x0 + sigma * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def euler_sample(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    num_steps: int,
    shift: float = 1.0,
) -> torch.Tensor:
    """Integrate from pure noise (sigma = 1) to data with `num_steps` Euler steps.

    velocity(x, timestep) with timestep a 0-dim tensor in [0, 1000].
    """
    from diffusers import FlowMatchEulerDiscreteScheduler  # lazy: importing diffusers costs seconds per process

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, shift=shift)
    scheduler.set_timesteps(num_steps, device=noise.device)
    x = noise
    for t in scheduler.timesteps:
        x = scheduler.step(velocity(x, t), t, x).prev_sample
    return x
