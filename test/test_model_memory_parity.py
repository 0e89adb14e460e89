"""The memory invariant (DESIGN §4): masked whole-sequence training forward == incremental cached path.

For every memory policy and several (N_init, N_recent, M) settings, prefill frame by frame (the
cache evicting as it goes) and denoise: action and next-frame video velocities must equal the
training forward's at the same noise and timestep, for every frame; and the cache must hold
exactly the closed-formula number of tokens.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from model_helpers import random_inputs, random_model, tiny_config

from memorywam_ros.model import MEMORY_POLICIES

SETTINGS = [  # (n_init, n_recent, num_gists, latent grid)
    (2, 4, 8, (8, 6)),
    (1, 1, 1, (8, 6)),
    (2, 1, 8, (6, 4)),
    (1, 4, 1, (24, 20)),  # the real 384x320 latent grid: 120 tokens per frame
]


@pytest.mark.parametrize("policy", MEMORY_POLICIES)
@pytest.mark.parametrize("n_init,n_recent,num_gists,grid", SETTINGS)
def test_training_mask_equals_incremental_cache(policy, n_init, n_recent, num_gists, grid):
    config = tiny_config(policy, grid=grid, n_init=n_init, n_recent=n_recent, num_gists=num_gists)
    assert_parity(random_model(config, seed=n_init * 10 + n_recent), n_init + n_recent + 3)


@pytest.mark.parametrize("policy", ["hybrid", "full"])
def test_parity_with_absolute_position_embedding(policy):
    """Every path that embeds a frame (clean, noisy, prefill, next-frame prediction) adds the same table."""
    config = dataclasses.replace(tiny_config(policy, n_init=1, n_recent=2, num_gists=2), absolute_pos_embed=True)
    assert_parity(random_model(config, seed=3), 6)


@pytest.mark.parametrize("policy", ["hybrid", "no_anchor", "no_window"])
@pytest.mark.parametrize("num_gists,grid", [(8, (8, 6)), (4, (24, 20)), (1, (6, 4))])
def test_parity_with_pooled_gists(policy, num_gists, grid):
    """gist_init "pooled": the training forward and prefill build a frame's gists from its tokens alike."""
    config = dataclasses.replace(tiny_config(policy, grid=grid, n_init=1, n_recent=2, num_gists=num_gists),
                                 gist_init="pooled")
    assert_parity(random_model(config, seed=5), 6)


def assert_parity(model, frames: int) -> None:
    config = model.config
    x = random_inputs(config, batch=2, frames=frames)
    with torch.no_grad():
        out = model(**x)
        cache = model.new_cache(batch=2)
        text = model.text_context(x["text"])
        for i in range(frames):
            model.prefill(cache, x["latents"][:, i], i, text)
            assert cache.held_tokens == model.rules.held_tokens(i + 1, config.tokens_per_frame)
            action_kv = model.action_context(text, x["proprio"][:, i])
            v = model.action_velocity(cache, x["noisy_actions"][:, i], x["action_timestep"][:, i], action_kv)
            torch.testing.assert_close(v, out.action_velocity[:, i], atol=1e-4, rtol=0)
            if i + 1 < frames:
                vv = model.video_velocity(cache, x["noisy_video"][:, i], x["video_timestep"][:, i], i + 1, text)
                torch.testing.assert_close(vv, out.video_velocity[:, i], atol=1e-4, rtol=0)


def test_parity_is_not_vacuous():
    """An action chunk must depend on its memory: a different earlier frame changes it."""
    config = tiny_config("full")
    model = random_model(config)
    x = random_inputs(config, batch=1, frames=3)
    with torch.no_grad():
        a = model(**x).action_velocity[:, 2]
        x["latents"][:, 0] += 1.0
        b = model(**x).action_velocity[:, 2]
    assert (a - b).abs().max() > 1e-3
