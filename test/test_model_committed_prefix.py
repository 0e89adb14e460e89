"""The committed prefix (issue 14 item 2): P clean committed commands before each action chunk.

Pinned here: the training forward equals the incremental cached path with the prefix, for the
memory policies that matter; the prefix conditions the chunk (changing it changes the velocity)
while the chunk never conditions the prefix (only a_* are returned); it sits at RoPE k = -P..-1
with timestep 0; and shapes are checked with messages.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from model_helpers import random_inputs, random_model, tiny_config

from memorywam_ros.model.config import ActionDiTConfig
from memorywam_ros.model.rope import action_positions


def prefix_config(policy: str, prefix: int, **memory: int):
    config = tiny_config(policy, **memory)
    return dataclasses.replace(config, action=dataclasses.replace(config.action, committed_prefix=prefix))


@pytest.mark.parametrize("policy", ["hybrid", "window", "full"])
@pytest.mark.parametrize("prefix", [1, 5])
def test_training_forward_equals_incremental_path_with_prefix(policy: str, prefix: int) -> None:
    config = prefix_config(policy, prefix, n_init=1, n_recent=2, num_gists=2)
    model = random_model(config, seed=prefix)
    frames = 5
    x = random_inputs(config, batch=2, frames=frames)
    g = torch.Generator().manual_seed(7)
    x["committed"] = torch.randn(2, frames, prefix, config.action.action_dim, generator=g)
    with torch.no_grad():
        out = model(**x)
        assert out.action_velocity.shape == x["noisy_actions"].shape  # the prefix is not predicted
        cache = model.new_cache(batch=2)
        text = model.text_context(x["text"])
        for i in range(frames):
            model.prefill(cache, x["latents"][:, i], i, text)
            action_kv = model.action_context(text, x["proprio"][:, i])
            v = model.action_velocity(cache, x["noisy_actions"][:, i], x["action_timestep"][:, i], action_kv,
                                      x["committed"][:, i])
            torch.testing.assert_close(v, out.action_velocity[:, i], atol=1e-4, rtol=0)


def test_prefix_conditions_the_chunk_and_is_clean() -> None:
    config = prefix_config("hybrid", 3)
    model = random_model(config)
    x = random_inputs(config, batch=1, frames=2)
    x["committed"] = torch.zeros(1, 2, 3, config.action.action_dim)
    with torch.no_grad():
        a = model(**x).action_velocity
        x["committed"][:, 1] += 1.0
        b = model(**x).action_velocity
    assert (a[:, 1] - b[:, 1]).abs().max() > 1e-3  # frame 1's chunk reads its prefix
    torch.testing.assert_close(a[:, 0], b[:, 0])  # and only its own (nothing sees another chunk)
    # the prefix is clean: its tokens get timestep 0 whatever the chunk's noise level
    seen = []
    orig = model.action.condition_embedder.time

    def spy(t):
        seen.append(t.detach().clone())
        return orig(t)

    model.action.condition_embedder.time = spy
    with torch.no_grad():
        model(**x)
    t = seen[-1].unflatten(1, (2, 3 + config.action.chunk_size))
    assert torch.all(t[:, :, :3] == 0)
    torch.testing.assert_close(t[:, :, 3:], x["action_timestep"][..., None].expand(1, 2, config.action.chunk_size))


def test_prefix_rope_sits_right_before_the_chunk() -> None:
    pos = action_positions(torch.tensor([[4]]), 3 + 16, first=-3)[0]
    assert pos[:, 2].tolist() == list(range(-3, 16)) and set(pos[:, 0].tolist()) == {4.0}
    assert action_positions(torch.tensor([[4]]), 16)[0, :, 2].tolist() == list(range(16))


def test_prefix_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="committed_prefix 16"):
        ActionDiTConfig(committed_prefix=16)
    config = prefix_config("hybrid", 2)
    model = random_model(config)
    x = random_inputs(config, batch=1, frames=2)
    with pytest.raises(ValueError, match=r"committed must be \(1, 2, 2, 14\)"):
        model(**x)
    plain = random_model(tiny_config("hybrid"))
    with pytest.raises(ValueError, match="no committed prefix"):
        plain(**x, committed=torch.zeros(1, 2, 2, 14))
    cache = model.new_cache(batch=1)
    text = model.text_context(x["text"])
    model.prefill(cache, x["latents"][:, 0], 0, text)
    with pytest.raises(ValueError, match="committed must be"):
        model.sample_actions(cache, text, x["proprio"][:, 0], num_steps=2)
    chunk = model.sample_actions(cache, text, x["proprio"][:, 0], num_steps=2, committed=torch.zeros(1, 2, 14))
    assert chunk.shape == (1, config.action.chunk_size, 14)
