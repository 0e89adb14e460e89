"""Network properties: visibility of evicted frames, RoPE, checkpoints, cache accounting, flow matching."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from model_helpers import random_inputs, random_model, tiny_config
from safetensors.torch import load_file, save_file

from memorywam_ros.model import MEMORY_POLICIES, CheckpointError, MemoryWAM, MemoryWAMConfig
from memorywam_ros.model.flow_matching import add_noise, euler_sample, sample_sigma, velocity_target
from memorywam_ros.model.param_count import count_parameters
from memorywam_ros.model.rope import action_positions, gist_positions, rope_angles, sincos_2d, video_positions


def _run_episode(model: MemoryWAM, x: dict[str, torch.Tensor], frames: int) -> torch.Tensor:
    """Prefill frames 0..frames-1 and return the action velocity at the last frame."""
    cache = model.new_cache(batch=1)
    text = model.text_context(x["text"])
    for i in range(frames):
        model.prefill(cache, x["latents"][:, i], i, text)
    kv = model.action_context(text, x["proprio"][:, frames - 1])
    return model.action_velocity(cache, x["noisy_actions"][:, frames - 1], x["action_timestep"][:, frames - 1], kv)


@pytest.mark.parametrize("policy,reachable", [("no_gist", False), ("hybrid", True)])
def test_evicted_frame_reachable_only_through_gists(policy, reachable):
    """Change a non-anchor frame long after it left the window: no_gist cannot notice, hybrid can.

    Through the window a frame still reaches later frames' deeper keys (one window hop per
    layer), so the evaluation frame is taken past that reach: num_layers * (N_recent - 1) + 1
    frames later.
    """
    config = tiny_config(policy, n_init=2, n_recent=4, num_gists=4)
    model = random_model(config)
    changed = config.memory.n_init  # first non-anchor frame
    last = changed + config.video.num_layers * (config.memory.n_recent - 1) + 1
    x = random_inputs(config, batch=1, frames=last + 1)
    with torch.no_grad():
        before = _run_episode(model, x, last + 1)
        x["latents"][:, changed] = torch.randn_like(x["latents"][:, changed])
        after = _run_episode(model, x, last + 1)
    if reachable:
        assert (before - after).abs().max() > 1e-4
    else:
        assert torch.equal(before, after)


def test_rope_beyond_1024_frames_and_translation_invariance():
    """Frame ids past 1024 work and, without anchors, only relative positions matter."""
    config = tiny_config("window")
    model = random_model(config)
    x = random_inputs(config, batch=1, frames=4)
    with torch.no_grad():
        near = model(**x, frame_ids=torch.arange(4)[None]).action_velocity
        far = model(**x, frame_ids=torch.arange(4)[None] + 5000).action_velocity
    assert torch.isfinite(far).all()
    torch.testing.assert_close(near, far, atol=1e-4, rtol=0)
    cos, _sin = rope_angles(torch.tensor([[5000.0, 3.0, 2.0]]), head_dim=128)
    assert cos.shape == (1, 64) and torch.isfinite(cos).all()
    # first t-frequency is 1 rad per frame: angle 5000 exactly (float64 on the way)
    assert abs(cos[0, 0].item() - torch.cos(torch.tensor(5000.0, dtype=torch.float64)).item()) < 1e-6


def test_gist_and_action_positions_collide_with_nothing():
    frames = torch.arange(0, 40)
    video = {tuple(p) for p in video_positions(frames, 12, 10).tolist()}
    gists = {tuple(p) for p in gist_positions(frames, 8).tolist()}
    actions = {tuple(p) for p in action_positions(frames, 16).tolist()}
    assert len(actions) == 40 * 16  # every action of every chunk has its own position
    assert not video & gists and not video & actions and not gists & actions


def test_checkpoint_round_trip_is_exact(tmp_path):
    config = tiny_config("hybrid")
    model = random_model(config)
    model.save_pretrained(tmp_path)
    loaded = MemoryWAM.from_pretrained(tmp_path)
    x = random_inputs(config, batch=1, frames=3)
    with torch.no_grad():
        assert torch.equal(model(**x).action_velocity, loaded(**x).action_velocity)
    assert loaded.config == config


def test_absolute_pos_embed_gives_each_token_its_place(tmp_path):
    """Off: a blank frame gives L identical tokens (RoPE only: a value does not say where it is). On: token l
    carries table row l, and row l codes the (h, w) that video_positions gives token l (not w, h)."""
    config = tiny_config("hybrid", grid=(8, 6))
    blank = torch.zeros(1, config.video.in_channels, 8, 6)
    with torch.no_grad():
        off = random_model(config).embed_video(blank)[0]  # (L, D)
        assert "pos_embed" not in random_model(config).state_dict()
        on_model = random_model(dataclasses.replace(config, absolute_pos_embed=True))
        on = on_model.embed_video(blank)[0]
    assert torch.allclose(off, off[:1].expand_as(off))
    torch.testing.assert_close(on - on_model.video.patch_embedding.bias, on_model.pos_embed)
    table = sincos_2d(4, 3, 48)  # grid 8x6 latents -> 4x3 patches
    hw = video_positions(torch.tensor([0]), 4, 3)[:, 1:].float()  # (L, 2)
    torch.testing.assert_close(table[:, 0], hw[:, 0].sin())  # first h frequency is 1 rad per patch
    torch.testing.assert_close(table[:, 24], hw[:, 1].sin())
    torch.testing.assert_close(MemoryWAM(on_model.config).pos_embed, table * 0.1)  # starts from the table
    assert count_parameters(on_model.config)["total"] == sum(p.numel() for p in on_model.parameters())
    on_model.save_pretrained(tmp_path)
    loaded = MemoryWAM.from_pretrained(tmp_path)
    assert loaded.config.absolute_pos_embed and torch.equal(loaded.pos_embed, on_model.pos_embed)


def test_pooled_gists_start_as_the_mean_of_their_cell(tmp_path):
    """gist_init "pooled": gist m = learned embedding m + the mean of the tokens in cell
    (m // cols, m % cols) of the gist grid, row-major over (h, w) as video_positions orders tokens.
    A transposed grid, a column-major cell order or a mean over the wrong axis fails here."""
    config = dataclasses.replace(tiny_config("hybrid", grid=(8, 6), num_gists=4), gist_init="pooled")
    assert config.gist_grid == (2, 2)  # 4 x 3 tokens -> 2 x 2 cells (adaptive pooling: cells overlap)
    model = random_model(config)
    h, w = model.grid
    hw = video_positions(torch.tensor([0]), h, w)[:, 1:]  # (L, 2): token l sits at (h, w)
    tokens = torch.zeros(1, h * w, config.video.inner_dim)
    tokens[0, :, 0], tokens[0, :, 1] = hw[:, 0].float(), hw[:, 1].float()  # a token says where it is
    with torch.no_grad():
        pooled = (model.gist_inputs(tokens) - model.gist_tokens)[0]  # (M, D)
    # adaptive pooling of 4 rows into 2 cells: rows 0-1, 2-3; of 3 columns into 2: cols 0-1, 1-2
    expected_h = torch.tensor([0.5, 0.5, 2.5, 2.5])
    expected_w = torch.tensor([0.5, 1.5, 0.5, 1.5])
    torch.testing.assert_close(pooled[:, 0], expected_h)
    torch.testing.assert_close(pooled[:, 1], expected_w)
    assert float(pooled[:, 2:].abs().max()) == 0.0
    # learned: the embeddings alone, whatever the frame
    learned = random_model(tiny_config("hybrid", grid=(8, 6), num_gists=4))
    with torch.no_grad():
        torch.testing.assert_close(learned.gist_inputs(tokens)[0], learned.gist_tokens)
    # the grid follows the token grid's aspect; a count that fits no grid is refused with the reason
    robot = dataclasses.replace(tiny_config("hybrid", grid=(24, 20), num_gists=8), gist_init="pooled")
    assert robot.gist_grid == (4, 2)  # 12 x 10 tokens
    with pytest.raises(ValueError, match="do not fit a grid"):
        dataclasses.replace(tiny_config("hybrid", grid=(8, 6), num_gists=7), gist_init="pooled")
    with pytest.raises(ValueError, match="gist_init 'mean' unknown"):
        dataclasses.replace(config, gist_init="mean")
    model.save_pretrained(tmp_path)
    assert MemoryWAM.from_pretrained(tmp_path).config.gist_init == "pooled"


@pytest.mark.parametrize("damage", ["missing", "shape"])
def test_damaged_checkpoint_names_the_key(tmp_path, damage):
    random_model(tiny_config()).save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    key = "action.blocks.1.ffn.net.2.weight"
    if damage == "missing":
        del state[key]
    else:
        state[key] = torch.zeros(3, 3)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        MemoryWAM.from_pretrained(tmp_path)


def test_config_mismatch_is_reported(tmp_path):
    random_model(tiny_config()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["memory"]["num_gists"] = 7  # weights hold 4 gists
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="gist_tokens"):
        MemoryWAM.from_pretrained(tmp_path)


@pytest.mark.parametrize("policy", MEMORY_POLICIES)
def test_cache_holds_closed_formula_tokens_and_bytes(policy):
    config = tiny_config(policy, grid=(4, 4))
    model = random_model(config)
    cache = model.new_cache(batch=1)
    text = model.text_context(torch.randn(1, 3, config.video.text_dim))
    L, M = config.tokens_per_frame, config.memory.num_gists
    with torch.no_grad():
        for n in range(1, 41):
            model.prefill(cache, torch.randn(1, 48, 4, 4), n - 1, text)
            assert cache.held_tokens == model.rules.held_tokens(n, L)
    per_token = config.video.num_layers * 2 * config.video.inner_dim * 4  # K and V, float32
    assert cache.held_bytes == model.rules.held_tokens(40, L) * per_token
    expected = {
        "hybrid": 6 * L + 40 * M,
        "full": 40 * L,
        "window": 4 * L,
        "no_anchor": 4 * L + 40 * M,
        "no_gist": 6 * L,
        "no_window": 3 * L + 40 * M,
    }[policy]
    assert cache.held_tokens == expected


def test_frame_ids_must_increase():
    model = random_model(tiny_config())
    cache = model.new_cache()
    text = model.text_context(torch.randn(1, 3, 32))
    model.prefill(cache, torch.randn(1, 48, 8, 6), 0, text)
    with pytest.raises(ValueError, match="increase"):
        model.prefill(cache, torch.randn(1, 48, 8, 6), 0, text)


def test_action_dit_interpolated_from_video():
    model = MemoryWAM(tiny_config())
    model.initialize_action_from_video()
    video, action = model.video.blocks[0], model.action.blocks[0]
    # endpoints are kept by align_corners interpolation; input dims shrink 48 -> 24: scaled by sqrt(2)
    src, dst = video.attn1.to_q.weight, action.attn1.to_q.weight
    assert dst.shape == (48, 24)
    torch.testing.assert_close(dst[:, 0], src[:, 0] * 2**0.5)
    torch.testing.assert_close(dst[:, -1], src[:, -1] * 2**0.5)
    torch.testing.assert_close(action.attn1.norm_q.weight, video.attn1.norm_q.weight)  # same width: copied
    # output dim shrinks: no scaling
    torch.testing.assert_close(action.attn1.to_out[0].weight[0, :], video.attn1.to_out[0].weight[0, :])
    # time_proj keeps its six modulation vectors apart: chunk 1 of the action starts where chunk 1 of the video does
    v_tp, a_tp = model.video.condition_embedder.time_proj.bias, model.action.condition_embedder.time_proj.bias
    assert a_tp[24] == v_tp[48] and a_tp[47] == v_tp[95]


def test_shifted_logit_normal_sigma():
    g = torch.Generator().manual_seed(0)
    s1 = sample_sigma((20000,), shift=1.0, generator=g)
    s5 = sample_sigma((20000,), shift=5.0, generator=g)
    assert s1.min() > 0 and s1.max() < 1
    assert abs(s1.median().item() - 0.5) < 0.02  # logit-normal is symmetric around 0.5
    assert s5.median() > 0.8  # shift 5 moves mass to high noise: median 5*.5/(1+4*.5) = 0.833


def test_flow_matching_target_and_euler_sampler_recover_data():
    """With the exact velocity field of a single data point, Euler integration lands on it."""
    x0 = torch.randn(2, 16, 14)
    noise = torch.randn(2, 16, 14)
    xt = add_noise(x0, noise, torch.tensor([0.3, 0.9]))
    torch.testing.assert_close(xt[1], 0.1 * x0[1] + 0.9 * noise[1])
    target = velocity_target(x0, noise)
    out = euler_sample(lambda x, t: target, noise, num_steps=10, shift=1.0)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_sample_actions_is_seedable():
    model = random_model(tiny_config())
    cache = model.new_cache()
    text = model.text_context(torch.randn(1, 3, 32))
    with torch.no_grad():
        model.prefill(cache, torch.randn(1, 48, 8, 6), 0, text)
        runs = [
            model.sample_actions(
                cache, text, torch.zeros(1, 14), num_steps=4, generator=torch.Generator().manual_seed(s)
            )
            for s in (1, 1, 2)
        ]
    assert runs[0].shape == (1, 16, 14)
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_paper_preset_parameter_count():
    counts = count_parameters(MemoryWAMConfig.paper())
    assert 4.9e9 < counts["video"] < 5.1e9  # Wan2.2-TI2V-5B
    assert 0.9e9 < counts["action"] < 1.1e9  # ~1B action expert
    assert counts["memory"] == 8 * 3072


def test_model_imports_without_ros():
    code = "import sys, memorywam_ros.model; assert 'rclpy' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_flex_block_mask_equals_dense_mask():
    """The CUDA path (flex attention block mask) and the CPU path (dense mask) apply the same rule.

    Checked here with uncompiled flex attention on CPU; CUDA uses the compiled kernel.
    """
    pytest.importorskip("torch.nn.attention.flex_attention")
    from memorywam_ros.model.attention import MemoryMaskedAttention

    config = tiny_config("hybrid", grid=(4, 4), n_init=1, n_recent=2, num_gists=2)
    model = random_model(config)
    x = random_inputs(config, batch=2, frames=6)
    captured = {}
    original = MemoryMaskedAttention.__init__

    def capture(self, rules, frame, kind, group, use_flex=None, compiled=True):
        original(self, rules, frame, kind, group, use_flex=False)
        captured.update(rules=rules, frame=frame, kind=kind, group=group)

    MemoryMaskedAttention.__init__ = capture
    try:
        with torch.no_grad():
            model(**x)
    finally:
        MemoryMaskedAttention.__init__ = original
    c = captured
    q, k, v = (torch.randn(2, 2, c["frame"].shape[1], 24) for _ in range(3))
    dense = MemoryMaskedAttention(c["rules"], c["frame"], c["kind"], c["group"], use_flex=False)(q, k, v)
    flex = MemoryMaskedAttention(c["rules"], c["frame"], c["kind"], c["group"], use_flex=True, compiled=False)
    torch.testing.assert_close(flex(q, k, v), dense, atol=1e-5, rtol=0)
