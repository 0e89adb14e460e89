"""MiniGrid Memory adapter (memorywam_ros/sim/minigrid_memory.py): oracle, action adapter, observation path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("minigrid")

from memorywam_ros.sim.minigrid_memory import (
    CHUNK,
    ENV_IDS,
    MOSAIC_SIZE,
    NAV_ACTIONS,
    OBJECT_COLORS,
    MemoryTask,
    action_chunk,
    action_vector,
    chunk_to_action,
    frame_mosaics,
    run_oracle_episode,
)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_oracle_solves_env_and_cue_is_out_of_view_at_decision(env_id):
    for seed in range(8):
        ep = run_oracle_episode(env_id, seed, keep_mosaics=False)
        assert ep.success, (env_id, seed)
        assert ep.decision_step >= 0
        # the oracle saw the cue before choosing, and at the choice the cue is outside the view window
        assert ep.cue_in_view[: ep.decision_step + 1].any()
        assert not ep.cue_in_view[ep.decision_step]
        assert ep.proprio.shape == (ep.num_steps + 1, 14) and ep.actions.shape == (ep.num_steps, 14)


def test_adapter_maps_chunks_to_discrete_actions():
    for action in NAV_ACTIONS:
        chunk = action_chunk(action)
        assert chunk.shape == (CHUNK, 14)
        assert chunk_to_action(chunk) == action
        noisy = chunk + np.random.default_rng(action).normal(0, 0.2, chunk.shape)
        assert chunk_to_action(noisy) == action
    # majority over the rows of the chunk, dims 3..13 ignored
    mixed = np.stack([action_vector(2), action_vector(2), action_vector(0), action_vector(2)])
    mixed[:, 5] = 10.0
    assert chunk_to_action(mixed) == 2
    with pytest.raises(ValueError):
        action_vector(5)


def test_observations_go_through_mosaic_and_streaming_vae():
    from diffusers import AutoencoderKLWan

    from memorywam_ros.runtime.vae import StreamingVAEEncoder, wan22_vae_config

    task = MemoryTask(ENV_IDS[1])
    first = task.reset(3)
    assert first.shape == (*MOSAIC_SIZE, 3) and first.dtype == np.uint8
    assert first[: MOSAIC_SIZE[0] // 3].max() == 0  # black wrist cameras
    torch.manual_seed(0)
    enc = StreamingVAEEncoder(AutoencoderKLWan(**wan22_vae_config(tiny=True)))
    lat0 = enc.encode(frame_mosaics(first, True))
    assert lat0.shape == (48, 1, MOSAIC_SIZE[0] // 16, MOSAIC_SIZE[1] // 16)
    nxt = task.step(NAV_ACTIONS[0])
    assert frame_mosaics(nxt, False).shape == (4, *MOSAIC_SIZE, 3)
    assert enc.encode(frame_mosaics(nxt, False)).shape == lat0.shape
    assert task.proprio()[:4].sum() == 1.0 and task.proprio()[4:].sum() == 0.0


def test_cue_kind_changes_the_latent():
    """Same scene with a key or a ball as the cue: the random VAE's latents differ where the cue is."""
    from diffusers import AutoencoderKLWan
    from minigrid.core.world_object import Ball, Key

    from memorywam_ros.runtime.vae import StreamingVAEEncoder, wan22_vae_config

    torch.manual_seed(0)
    enc = StreamingVAEEncoder(AutoencoderKLWan(**wan22_vae_config(tiny=True)))
    task = MemoryTask(ENV_IDS[0])
    task.reset(0)
    env = task.unwrapped
    env.agent_pos, env.agent_dir = np.array((1, env.height // 2)), 3  # facing the cue, one cell away
    assert task.cue_in_view()
    latents = []
    for kind in (Key, Ball):
        env.grid.set(*task.cue_pos, kind(OBJECT_COLORS[kind.__name__.lower()]))
        enc.reset()
        latents.append(enc.encode(frame_mosaics(task.mosaic(), True)))
    diff = (latents[0] - latents[1]).abs()
    assert diff.max() > 1e-3 * latents[0].abs().max()


def test_objects_are_coloured_by_kind_and_the_cue_hint_fills_the_wrists():
    from minigrid.core.constants import COLORS

    task = MemoryTask(ENV_IDS[0])
    task.reset(5)
    grid = task.unwrapped.grid
    objects = [cell for cell in grid.grid if cell is not None and cell.type in OBJECT_COLORS]
    assert len(objects) == 3  # the cue and the two candidates
    assert all(cell.color == OBJECT_COLORS[cell.type] for cell in objects)
    plain = task.mosaic()
    assert plain[: MOSAIC_SIZE[0] // 3].max() == 0
    hinted = MemoryTask(ENV_IDS[0], cue_hint=True)
    mosaic = hinted.reset(5)
    wrists = mosaic[: MOSAIC_SIZE[0] // 3].reshape(-1, 3)
    assert (wrists == COLORS[OBJECT_COLORS[hinted.cue_kind]]).all()
    assert (mosaic[MOSAIC_SIZE[0] // 3 :] == plain[MOSAIC_SIZE[0] // 3 :]).all()  # the head view is unchanged
    big = MemoryTask(ENV_IDS[0], mosaic_size=(192, 128)).reset(5)
    assert big.shape == (192, 128, 3)
