"""Policy and complete checkpoint directories: load, act, reset, deterministic, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from memorywam_ros.model import CheckpointError
from memorywam_ros.runtime import Policy
from memorywam_ros.runtime.checkpoint import load_checkpoint, main

RNG = np.random.default_rng(0)
FIRST = RNG.integers(0, 256, (1, 384, 320, 3), dtype=np.uint8)
GROUP = RNG.integers(0, 256, (4, 384, 320, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def policy(tiny_checkpoint):
    return Policy.from_pretrained(tiny_checkpoint, num_steps=3, seed=7)


def _episode(policy: Policy, chunks: int = 2) -> list[np.ndarray]:
    policy.reset("transfer the cube")
    out = []
    for i in range(chunks):
        policy.observe(FIRST if i == 0 else GROUP, np.full(14, 0.1 * i))
        out.append(policy.act())
    return out


def test_acts_with_absolute_joint_targets(policy):
    chunks = _episode(policy)
    assert all(c.shape == (16, 14) and c.dtype == np.float64 and np.isfinite(c).all() for c in chunks)
    assert policy.frames_observed == 2
    assert set(policy.last_latency) == {"vae", "prefill", "denoise"}
    assert policy.cache_bytes == policy.model.rules.held_tokens(2, 120) * policy.cache.bytes_per_token()


def test_seeded_episodes_repeat_and_reset_clears_memory(policy):
    first = _episode(policy)
    assert policy.cache_bytes > 0
    policy.reset("transfer the cube")
    assert policy.cache_bytes == 0 and policy.frames_observed == 0
    second = _episode(policy)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_precomputed_latent_equals_mosaic_path(policy):
    policy.reset("transfer the cube")
    policy.observe(FIRST, np.zeros(14))
    from_mosaic = policy.act()
    policy.vae.reset()
    latent = policy.vae.encode(FIRST)[:, 0]
    policy.reset("transfer the cube")
    policy.observe(latent=latent, joint_state=np.zeros(14))
    np.testing.assert_allclose(policy.act(), from_mosaic, atol=1e-5)


def test_unknown_instruction_refused_and_state_kept(policy):
    _episode(policy, chunks=1)
    held = policy.cache_bytes
    with pytest.raises(KeyError, match="unknown instruction 'fly to the moon'"):
        policy.reset("fly to the moon")
    assert policy.cache_bytes == held and policy.instruction == "transfer the cube"


def test_protocol_errors(tiny_checkpoint):
    fresh = Policy.from_pretrained(tiny_checkpoint, num_steps=2)
    with pytest.raises(RuntimeError, match="before reset"):
        fresh.observe(FIRST, np.zeros(14))
    fresh.reset("transfer the cube")
    with pytest.raises(RuntimeError, match="before observe"):
        fresh.act()
    with pytest.raises(ValueError, match="finite"):
        fresh.observe(FIRST, np.full(14, np.nan))
    with pytest.raises(ValueError, match="takes 1 mosaic"):
        fresh.observe(GROUP, np.zeros(14))


@pytest.mark.parametrize("part", ["vae", "normalization.json", "instructions", "model", "memorywam.json"])
def test_missing_part_is_named(tiny_checkpoint, tmp_path, part):
    broken = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    target = broken / part
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(CheckpointError, match=part.split(".")[0]):
        load_checkpoint(broken)


def test_mismatched_parts_are_named(tiny_checkpoint, tmp_path):
    broken = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    norm = json.loads((broken / "normalization.json").read_text())
    for key in ("mean", "std", "min", "max"):
        norm["action"][key] = norm["action"][key][:7]
    (broken / "normalization.json").write_text(json.dumps(norm))
    with pytest.raises((CheckpointError, ValueError), match="action"):
        load_checkpoint(broken)
    manifest = json.loads((tiny_checkpoint / "memorywam.json").read_text())
    manifest["memory"]["n_recent"] = 9
    broken2 = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt2")
    (broken2 / "memorywam.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="memory settings"):
        load_checkpoint(broken2)


def test_cli_init_random_refuses_to_overwrite(tmp_path, capsys):
    assert main(["init-random", "--out", str(tmp_path / "c"), "--instruction", "wave"]) == 0
    with pytest.raises(SystemExit):
        main(["init-random", "--out", str(tmp_path / "c")])
    assert main(["info", str(tmp_path / "c")]) == 0
    assert "wave" in capsys.readouterr().out
    assert main(["info", str(tmp_path)]) == 1


def test_bf16_cast_keeps_modulation_in_fp32(tiny_checkpoint):
    p = Policy.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16, num_steps=2)
    assert p.model.video.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert p.model.video.blocks[0].scale_shift_table.dtype == torch.float32
    p.reset("transfer the cube")
    p.observe(FIRST, np.zeros(14))
    assert np.isfinite(p.act()).all()


def test_instructions_of_another_encoder_are_not_used(tiny_checkpoint, tmp_path):
    """Embeddings from a different text encoder in the same store are invisible to the policy."""
    from memorywam_ros.runtime import InstructionStore

    ckpt = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    InstructionStore(ckpt / "instructions").put(["open the drawer"], torch.zeros(1, 16, 32), "another-encoder")
    p = Policy.from_pretrained(ckpt, num_steps=2)
    assert "open the drawer" not in p.instructions
    with pytest.raises(KeyError, match="open the drawer"):
        p.reset("open the drawer")
    p.reset("transfer the cube")


def test_cli_init_random_centres_outputs_on_the_robot_home(tmp_path, capsys):
    """init-random --robot: random outputs land near the robot file's home pose, inside the start
    distance, so the node executes its chunks (test_node_graph: the arm moves around home)."""
    from memorywam_ros.runtime.robot_config import RobotConfig

    robot = RobotConfig.from_yaml(Path(__file__).resolve().parents[1] / "config" / "robots" / "aloha_sim.yaml")
    assert main(["init-random", "--out", str(tmp_path / "c"), "--robot", "aloha_sim.yaml"]) == 0
    assert "home pose of aloha_sim.yaml" in capsys.readouterr().out
    p = Policy.from_pretrained(tmp_path / "c", num_steps=2)
    p.reset(p.instructions[0])
    h, w = p.image_size
    p.observe(np.zeros((1, h, w, 3), np.uint8), robot.home)
    chunk = p.act()
    assert np.abs(chunk - robot.home).max() < 0.5 * robot.max_start_distance.min()
    with pytest.raises(SystemExit):
        main(["init-random", "--out", str(tmp_path / "d"), "--robot", "no_such_robot.yaml"])
    assert "--robot" in capsys.readouterr().err
