"""The paper's widths before the first GPU: Wan2.2-TI2V-5B layer shapes (3072 hidden, 24 heads x 128,
48 latent channels, FFN 14336, text 4096) and the 1024-wide action DiT, at 2 layers instead of 30.

A real diffusers `WanTransformer3DModel` is saved in diffusers format, loaded with
`WanVideoDiT.from_diffusers` into MemoryWAM (the action DiT interpolated from it, as training
initialises it), cast for inference as the robot casts it, and run in bf16 exactly as the node
runs it: prefill frame by frame (the cache evicting past the window) and `sample_actions`. The
cache must hold the paper's (N_init + N_recent)·L + N·M tokens at 24 x 128 x bf16 per layer.
Built directly in bf16 (0.42 B video parameters, 0.8 GB) to keep memory modest on CPU.
"""

from __future__ import annotations

import dataclasses

import torch
from diffusers import WanTransformer3DModel

from memorywam_ros.model import MemoryWAM, MemoryWAMConfig, WanVideoDiT
from memorywam_ros.model.action_dit import ActionDiT
from memorywam_ros.model.weights import cast_for_inference

LAYERS = 2


def paper_width_config() -> MemoryWAMConfig:
    paper = MemoryWAMConfig.paper()
    return dataclasses.replace(paper, video=dataclasses.replace(paper.video, num_layers=LAYERS))


def test_paper_width_from_diffusers_prefill_and_sample_bf16(tmp_path):
    config = paper_width_config()
    video = config.video
    assert (video.inner_dim, video.num_attention_heads, video.attention_head_dim) == (3072, 24, 128)
    assert (video.in_channels, video.ffn_dim, video.text_dim, config.action.hidden_dim) == (48, 14336, 4096, 1024)
    diffusers_config = {k: v for k, v in dataclasses.asdict(video).items() if k != "rope_theta"}  # diffusers' keys
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # initialise in bf16: half the memory of float32
    try:
        torch.manual_seed(0)
        reference = WanTransformer3DModel(**diffusers_config)
    finally:
        torch.set_default_dtype(previous)
    reference.save_pretrained(tmp_path / "transformer")
    del reference

    loaded = WanVideoDiT.from_diffusers(tmp_path, dtype=torch.bfloat16)  # the pipeline layout: transformer/
    assert loaded.config == video
    with torch.device("meta"):
        model = MemoryWAM(config)
    model.video = loaded  # the large part, never held twice; the rest is built for real
    model.action = ActionDiT(config.action, video)
    model.gist_tokens = torch.nn.Parameter(torch.randn(config.memory.num_gists, video.inner_dim) * 0.02)
    with torch.no_grad():
        model.initialize_action_from_video()
    cast_for_inference(model, torch.bfloat16).eval()
    assert model.action.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16

    frames = 8  # past N_init + N_recent = 6: eviction has happened
    g = torch.Generator().manual_seed(1)
    cache = model.new_cache(batch=1)
    text = model.text_context(torch.randn(1, config.text_len, video.text_dim, generator=g))
    with torch.no_grad():
        for i in range(frames):
            model.prefill(cache, torch.randn(1, 48, 24, 20, generator=g).to(torch.bfloat16), i, text)
        actions = model.sample_actions(cache, text, torch.zeros(1, 14), num_steps=10, generator=g)

    assert actions.shape == (1, 16, 14) and torch.isfinite(actions).all()
    L, M = config.tokens_per_frame, config.memory.num_gists
    assert L == 120 and cache.dtype == torch.bfloat16
    tokens = (config.memory.n_init + config.memory.n_recent) * L + frames * M  # paper: (2 + 4)·120 + 8·8
    assert cache.held_tokens == tokens == model.rules.held_tokens(frames, L) == 784
    assert cache.held_bytes == tokens * LAYERS * 2 * 24 * 128 * 2  # K and V, 24 heads x 128, bf16
