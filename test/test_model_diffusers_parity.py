"""Our WanVideoDiT loads a diffusers WanTransformer3DModel checkpoint and matches its output."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import WanTransformer3DModel

from memorywam_ros.model import WanVideoDiT
from memorywam_ros.model.weights import CheckpointError

TINY_WAN = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=24,
    in_channels=8,
    out_channels=8,
    text_dim=32,
    freq_dim=32,
    ffn_dim=64,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
)


@pytest.fixture(scope="module")
def diffusers_model(tmp_path_factory):
    torch.manual_seed(0)
    model = WanTransformer3DModel(**TINY_WAN).eval()
    # randomise every parameter (some are zero/one at init) so the comparison can fail
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    path = tmp_path_factory.mktemp("wan")
    model.save_pretrained(path)
    return model, path


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 8, 3, 8, 6, generator=g)  # B, C, F, H, W -> 3 * 4 * 3 = 36 tokens
    text = torch.randn(2, 5, 32, generator=g)
    return latents, text


@pytest.mark.parametrize("per_token", [False, True])
def test_matches_diffusers(diffusers_model, per_token):
    reference, path = diffusers_model
    ours = WanVideoDiT.from_diffusers(path).eval()
    latents, text = _inputs()
    if per_token:
        timestep = torch.rand(2, 36) * 1000
        timestep[:, :12] = 0  # first frame clean, as Wan2.2 TI2V does
    else:
        timestep = torch.tensor([10.0, 730.0])
    with torch.no_grad():
        expected = reference(latents, timestep, text).sample
        got = ours(latents, timestep, text)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-5


def test_sharded_checkpoint_loads(diffusers_model, tmp_path):
    reference, _ = diffusers_model
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "diffusion_pytorch_model.safetensors.index.json").is_file()
    ours = WanVideoDiT.from_diffusers(tmp_path)
    latents, text = _inputs(2)
    t = torch.tensor([500.0, 3.0])
    with torch.no_grad():
        assert torch.allclose(ours(latents, t, text), reference(latents, t, text).sample, atol=1e-5)


def test_missing_key_is_named(diffusers_model, tmp_path):
    from safetensors.torch import load_file, save_file

    _, path = diffusers_model
    state = load_file(str(path / "diffusion_pytorch_model.safetensors"))
    del state["blocks.1.attn2.to_k.weight"]
    save_file(state, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(CheckpointError, match=r"blocks\.1\.attn2\.to_k\.weight"):
        WanVideoDiT.from_diffusers(tmp_path)


def test_image_conditioned_config_refused(diffusers_model, tmp_path):
    _, path = diffusers_model
    config = json.loads((path / "config.json").read_text())
    config["image_dim"] = 1280
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="image_dim"):
        WanVideoDiT.from_diffusers(tmp_path)
