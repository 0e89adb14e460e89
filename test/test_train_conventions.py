"""The training loss's conventions and inference's use of them, checked on what the model receives.

`flow_matching_loss` runs with a real tiny MemoryWAM; a forward hook records its inputs and
output. From them every convention is checked exactly, without replaying the noise stream:
    timestep = 1000 sigma, noisy = (1 - sigma) x0 + sigma eps, target = eps - x0 (loss recomputed);
    the video branch denoises frame i+1; the conditioning latents carry noise of level
    cond_timestep / 1000; sigma is shifted logit-normal (video shift 5, actions shift 1) and the
    conditioning level uniform (Kolmogorov-Smirnov distance, a uniform sampler fails).
Then the model side (gist RoPE ids, the proprio token) and inference (Policy samples on the
grid and shift of the checkpoint's SamplerSettings, normalises the joint state with the state
statistics, encodes in a float32 VAE).

Issue 12 item 3's mutations, one at a time, and the test here that fails on each (planted and
checked; "loss" = test_loss_inputs_and_targets_follow_flow_matching):
    (a) velocity target sign swapped (train.py or velocity_target): loss, loss_vanishes_for_the_exact_velocity
    (b) sigma uniform instead of shifted logit-normal: loss_sigma_distributions, sample_sigma_is_shifted_logit_normal
    (c) timestep sigma instead of 1000 sigma (any branch): loss, loss_sigma_distributions
    (d) conditioning timestep dropped: loss ("not passed"); ignored inside the model:
        conditioning_timestep_conditions_the_model
    (e) noise augmentation off (cond = x, s = 0, cond_noise_prob 0): loss, loss_sigma_distributions,
        paper_config_flow_matching_settings
    (f) video target frame i instead of i+1: loss, loss_vanishes_for_the_exact_velocity
    (g) sampler shift 5 (or 1, or video_shift) instead of the checkpoint's: policy_samples_with_the_checkpoint_sampler,
        sampler_settings_follow_the_training_config; export drops it: written_checkpoint_carries_the_run_sampler
    (h) state normalised with the action statistics: policy_state_normalised_with_state_statistics_and_vae_fp32
        (robot), test_train_dataset.py::test_normalisation_statistics (training)
    (i) gists at RoPE t-1: gists_sit_at_their_own_frame_in_rope
    (j) proprio token ignored (zeroed, left out of the context, first frame's for all): loss (inputs),
        proprio_token_conditions_the_actions
    (k) state dropout applied to the proprio token only, or to all frames of a sample, or drawn
        before the noise: state_dropout_zeroes_whole_frames_of_proprio_and_committed_prefix
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import random_model, tiny_config

from memorywam_ros.model import CheckpointError
from memorywam_ros.model.flow_matching import SamplerSettings, sample_sigma, scheduler, shift_sigma
from memorywam_ros.model.rope import GIST_MARKER, video_positions
from memorywam_train.train import TrainConfig, flow_matching_loss, sampler_settings

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ helpers
def make_batch(config, b: int, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A collated batch (dataset.collate's keys), every frame valid, frames independent."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = config.video.in_channels, config.latent_height, config.latent_width
    k, a = config.action.chunk_size, config.action.action_dim
    return {
        "latents": torch.randn(b, n, c, h, w, generator=g),
        "actions": torch.randn(b, n, k, a, generator=g),
        "text": torch.randn(b, 4, config.video.text_dim, generator=g),
        "proprio": torch.randn(b, n, config.action.proprio_dim, generator=g),
        "frame_ids": torch.arange(n).expand(b, n).clone(),
        "action_mask": torch.ones(b, n, k, dtype=torch.bool),
        "frame_valid": torch.ones(b, n, dtype=torch.bool),
        "video_mask": torch.ones(b, n - 1, dtype=torch.bool),
    }


def run_loss(model, batch, cfg: TrainConfig, seed: int = 0) -> tuple[dict, tuple[torch.Tensor, ...]]:
    """flow_matching_loss once; returns (what the model received and returned, the three losses)."""
    seen: dict = {}

    def hook(module, args, kwargs, output):
        names = ("cond", "text", "proprio", "noisy_actions", "action_timestep")
        seen.update(zip(names, args), **kwargs, output=output)

    handle = model.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            losses = flow_matching_loss(model, batch, cfg, torch.Generator().manual_seed(seed), "cpu")
    finally:
        handle.remove()
    return seen, losses


class _Stop(Exception):
    pass


def model_inputs(model, batch, cfg: TrainConfig, seed: int = 0) -> dict:
    """What flow_matching_loss passes to the model, without running it (a pre-hook stops the call)."""
    seen: dict = {}

    def hook(module, args, kwargs):
        seen.update(zip(("cond", "text", "proprio", "noisy_actions", "action_timestep"), args), **kwargs)
        raise _Stop

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with pytest.raises(_Stop):
            flow_matching_loss(model, batch, cfg, torch.Generator().manual_seed(seed), "cpu")
    finally:
        handle.remove()
    return seen


def recover_noise(noisy: torch.Tensor, x0: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    """eps such that noisy = (1 - sigma) x0 + sigma eps, with sigma = timestep / 1000 (per leading (B, N))."""
    sigma = (timestep / 1000).reshape(*timestep.shape, *([1] * (x0.ndim - timestep.ndim)))
    return (noisy - (1 - sigma) * x0) / sigma


def shifted_logit_normal_cdf(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    u = sigma / (shift - (shift - 1) * sigma)  # inverse of the shift
    return 0.5 * (1 + torch.erf(torch.logit(u.double()) / math.sqrt(2)))


def ks_distance(samples: torch.Tensor, cdf) -> float:
    x = samples.double().flatten().sort().values
    n = x.numel()
    f = cdf(x)
    upper = torch.arange(1, n + 1, dtype=torch.float64) / n - f
    lower = f - torch.arange(0, n, dtype=torch.float64) / n
    return max(upper.max().item(), lower.max().item())


def ks_limit(n: int) -> float:
    return 1.95 / math.sqrt(n)  # Kolmogorov-Smirnov critical value at alpha = 0.001


@pytest.fixture(scope="module")
def model():
    return random_model(tiny_config("hybrid", grid=(4, 4)))


# ------------------------------------------------------------------------------------------ the loss
def test_loss_inputs_and_targets_follow_flow_matching(model) -> None:
    """timestep 1000 sigma, noisy (1 - sigma) x0 + sigma eps, target eps - x0 for the NEXT frame; the
    conditioning latents carry noise of exactly the level their timestep says."""
    cfg = TrainConfig()
    batch = make_batch(model.config, b=2, n=3)
    seen, (loss, video_loss, action_loss) = run_loss(model, batch, cfg)
    x, actions = batch["latents"], batch["actions"]
    out = seen["output"]

    # actions: sigma in (0, 1), the noise it implies is standard normal, and the loss is MSE to eps - x0
    t_a = seen["action_timestep"]
    assert t_a.shape == (2, 3) and t_a.min() > 0 and t_a.max() < 1000 and t_a.max() > 1  # 1000 sigma, not sigma
    eps_a = recover_noise(seen["noisy_actions"], actions, t_a)
    assert abs(eps_a.std().item() - 1) < 0.1 and abs(eps_a.mean().item()) < 0.1
    want_a = (out.action_velocity - (eps_a - actions)).pow(2).mean()
    torch.testing.assert_close(action_loss, want_a, rtol=1e-3, atol=1e-5)

    # video: frames 1..N-1 are noised and predicted (frame i+1 from frame i's position in the sequence)
    t_v = seen["video_timestep"]
    assert t_v.shape == (2, 2) and t_v.min() > 0 and t_v.max() < 1000
    eps_v = recover_noise(seen["noisy_video"], x[:, 1:], t_v)
    for frame in eps_v.flatten(0, 1):  # pure noise: unit variance, uncorrelated with the clean next frame
        assert abs(frame.std().item() - 1) < 0.1
    corr = torch.corrcoef(torch.stack((eps_v.flatten(), x[:, 1:].flatten())))[0, 1]
    assert abs(corr.item()) < 0.05
    want_v = (out.video_velocity - (eps_v - x[:, 1:])).pow(2).mean()
    torch.testing.assert_close(video_loss, want_v, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(loss, want_v + want_a, rtol=1e-3, atol=1e-5)

    # conditioning: given, noised (cond_noise_prob 1), and its level is the model's cond timestep
    s = seen.get("cond_timestep")
    assert s is not None, "the conditioning timestep is not passed"
    assert s.shape == (2, 3) and s.min() > 0 and s.max() < 1000
    assert not torch.equal(seen["cond"], x)
    eps_c = recover_noise(seen["cond"], x, s)
    for frame, clean in zip(eps_c.flatten(0, 1), x.flatten(0, 1)):
        assert abs(frame.std().item() - 1) < 0.1, "conditioning noise level differs from its timestep"
        assert abs(torch.corrcoef(torch.stack((frame.flatten(), clean.flatten())))[0, 1].item()) < 0.15
    assert torch.equal(seen["frame_ids"], batch["frame_ids"]) and torch.equal(seen["proprio"], batch["proprio"])


def test_loss_vanishes_for_the_exact_velocity(model) -> None:
    """A model that answers exactly eps - x0 (actions) and eps - x_{i+1} (video), computed from the
    inputs it receives, gets zero loss; a swapped sign or a video target of frame i would cost ~8."""
    from memorywam_ros.model.memorywam import TrainingOutput

    def oracle(module, args, kwargs, output):
        seen = dict(zip(("cond", "text", "proprio", "noisy_actions", "action_timestep"), args), **kwargs)
        eps_a = recover_noise(seen["noisy_actions"], batch["actions"], seen["action_timestep"])
        eps_v = recover_noise(seen["noisy_video"], batch["latents"][:, 1:], seen["video_timestep"])
        return TrainingOutput(action_velocity=eps_a - batch["actions"], video_velocity=eps_v - batch["latents"][:, 1:])

    batch = make_batch(model.config, b=2, n=3)
    handle = model.register_forward_hook(oracle, with_kwargs=True)
    try:
        with torch.no_grad():
            loss, video_loss, action_loss = flow_matching_loss(model, batch, TrainConfig(),
                                                               torch.Generator().manual_seed(0), "cpu")
    finally:
        handle.remove()
    assert video_loss.item() < 1e-6 and action_loss.item() < 1e-6 and loss.item() < 2e-6, (video_loss, action_loss)


def test_loss_sigma_distributions(model) -> None:
    """Over many frames the model sees video sigma ~ shifted logit-normal (shift 5), action sigma ~
    logit-normal (shift 1) and conditioning levels ~ uniform(0, 1)."""
    cfg = TrainConfig()
    seen = model_inputs(model, make_batch(model.config, b=384, n=6), cfg)
    sig_a, sig_v, cond = (seen[k].flatten() / 1000 for k in ("action_timestep", "video_timestep", "cond_timestep"))
    assert (sig_a.numel(), sig_v.numel(), cond.numel()) == (2304, 1920, 2304)
    assert ks_distance(sig_a, lambda x: shifted_logit_normal_cdf(x, cfg.shift_action)) < ks_limit(sig_a.numel())
    assert ks_distance(sig_v, lambda x: shifted_logit_normal_cdf(x, cfg.shift_video)) < ks_limit(sig_v.numel())
    assert ks_distance(cond, lambda x: x) < ks_limit(cond.numel())
    # the test has power: a uniform sigma (or the other branch's shift) is far outside the limit
    assert ks_distance(torch.rand(2304, generator=torch.Generator().manual_seed(0)),
                       lambda x: shifted_logit_normal_cdf(x, 1.0)) > 2 * ks_limit(2304)
    assert ks_distance(sig_v, lambda x: shifted_logit_normal_cdf(x, 1.0)) > 4 * ks_limit(sig_v.numel())


def test_sample_sigma_is_shifted_logit_normal() -> None:
    g = torch.Generator().manual_seed(0)
    for shift in (1.0, 5.0):
        sigma = sample_sigma((20000,), shift, g)
        assert sigma.min() > 0 and sigma.max() < 1
        assert ks_distance(sigma, lambda x, s=shift: shifted_logit_normal_cdf(x, s)) < ks_limit(20000)
    uniform = torch.rand(20000, generator=g)
    assert ks_distance(uniform, lambda x: shifted_logit_normal_cdf(x, 1.0)) > 5 * ks_limit(20000)


def test_paper_config_flow_matching_settings() -> None:
    """Paper §4.1: video shift 5, action shift 1, conditioning noise augmentation on every sample."""
    for path in ("train_paper.yaml", "train_tiny.yaml"):
        cfg = TrainConfig.load(str(REPO / "config" / path), [])
        assert (cfg.shift_video, cfg.shift_action, cfg.cond_noise_prob) == (5.0, 1.0, 1.0), path
    assert (TrainConfig.shift_video, TrainConfig.shift_action, TrainConfig.cond_noise_prob) == (5.0, 1.0, 1.0)


# ------------------------------------------------------------------------------------------ the model
def test_gists_sit_at_their_own_frame_in_rope(model) -> None:
    """Gist tokens of frame t get RoPE position (t, -1, -1) in training and at prefill; the noisy video
    of frame i+1 sits at frame i+1."""
    calls = []
    rope = model.video.rope
    model.video.rope = lambda positions: calls.append(positions.clone()) or rope(positions)
    L, M = model.config.tokens_per_frame, model.rules.num_gists
    assert M > 0
    try:
        batch = make_batch(model.config, b=1, n=3)
        batch["frame_ids"] = torch.tensor([[0, 1, 5]])  # an anchor-prefixed window: ids are not 0..N-1
        run_loss(model, batch, TrainConfig())
        pos = calls[0][0, 0]  # video-expert positions (S_v, 3): [f_0 g_0 f_1 g_1 f_5 g_5] [noisy 1, 5]
        per_frame = pos[: 3 * (L + M)].unflatten(0, (3, L + M))
        for t, block in zip((0, 1, 5), per_frame):
            want = torch.tensor([t, *GIST_MARKER], dtype=block.dtype).expand(M, 3)
            assert torch.equal(block[L:], want), (t, block[L:])
            assert torch.equal(block[:L], video_positions(torch.tensor([t]), *model.grid))
        assert torch.equal(pos[3 * (L + M) :], video_positions(torch.tensor([1, 5]), *model.grid))

        calls.clear()
        cache = model.new_cache()
        with torch.no_grad():
            model.prefill(cache, batch["latents"][:, 0], 7, model.text_context(batch["text"]))
        want = torch.tensor([7, *GIST_MARKER], dtype=calls[0].dtype).expand(M, 3)
        assert torch.equal(calls[0][L:], want)
    finally:
        model.video.rope = rope


def test_proprio_token_conditions_the_actions(model) -> None:
    """Changing frame j's joint state changes chunk j's velocity (training) and the sampled chunk (inference)."""
    batch = make_batch(model.config, b=1, n=3)
    x = {"latents": batch["latents"], "text": batch["text"], "noisy_actions": batch["actions"],
         "action_timestep": torch.full((1, 3), 500.0)}
    with torch.no_grad():
        before = model(proprio=batch["proprio"], **x).action_velocity
        moved = batch["proprio"].clone()
        moved[:, 1] += 1.0
        after = model(proprio=moved, **x).action_velocity
    assert (before[:, 1] - after[:, 1]).abs().max() > 1e-3

    cache = model.new_cache()
    with torch.no_grad():
        text = model.text_context(batch["text"])
        model.prefill(cache, batch["latents"][:, 0], 0, text)
        noise = torch.randn(1, model.config.action.chunk_size, model.config.action.action_dim)
        a = model.sample_actions(cache, text, batch["proprio"][:, 0], num_steps=2, noise=noise)
        b = model.sample_actions(cache, text, batch["proprio"][:, 0] + 1.0, num_steps=2, noise=noise)
    assert (a - b).abs().max() > 1e-3


def test_state_dropout_zeroes_whole_frames_of_proprio_and_committed_prefix() -> None:
    """state_dropout p: per frame, the proprio token and the committed prefix are zeroed together
    (fraction ~p), other frames pass unchanged; p = 0 leaves the inputs and the noise stream as they were."""
    import dataclasses

    config = tiny_config("hybrid", grid=(4, 4))
    config = dataclasses.replace(config, action=dataclasses.replace(config.action, committed_prefix=3))
    prefix_model = random_model(config)
    batch = make_batch(config, b=4, n=6)
    batch["committed"] = torch.randn(4, 6, 3, config.action.action_dim, generator=torch.Generator().manual_seed(5))
    base = model_inputs(prefix_model, batch, TrainConfig())
    torch.testing.assert_close(base["proprio"], batch["proprio"])
    torch.testing.assert_close(base["committed"], batch["committed"])
    same = model_inputs(prefix_model, batch, TrainConfig(state_dropout=0.0))
    torch.testing.assert_close(same["noisy_actions"], base["noisy_actions"])

    seen = model_inputs(prefix_model, batch, TrainConfig(state_dropout=0.5))
    torch.testing.assert_close(seen["noisy_actions"], base["noisy_actions"])  # drawn after the noise
    dropped = (seen["proprio"] == 0).all(-1)  # (B, N)
    assert dropped.equal((seen["committed"] == 0).all(-1).all(-1)), "proprio and prefix dropped together"
    assert 0 < dropped.sum() < dropped.numel()
    assert (dropped.any(1) & ~dropped.all(1)).any(), "drawn per frame, not per sample"
    torch.testing.assert_close(seen["proprio"][~dropped], batch["proprio"][~dropped])
    torch.testing.assert_close(seen["committed"][~dropped], batch["committed"][~dropped])
    rates = [model_inputs(prefix_model, batch, TrainConfig(state_dropout=0.25), seed=s)["proprio"].eq(0).all(-1)
             .float().mean().item() for s in range(20)]
    assert abs(float(np.mean(rates)) - 0.25) < 0.06
    everything = model_inputs(prefix_model, batch, TrainConfig(state_dropout=1.0))
    assert everything["proprio"].eq(0).all() and everything["committed"].eq(0).all()


def test_conditioning_timestep_conditions_the_model(model) -> None:
    """The conditioning latents' noise level is an input: the same latents at timestep 0 and 500
    give different velocities (a model that drops cond_timestep would not see the augmentation)."""
    batch = make_batch(model.config, b=1, n=3)
    x = {"latents": batch["latents"], "text": batch["text"], "proprio": batch["proprio"],
         "noisy_actions": batch["actions"], "action_timestep": torch.full((1, 3), 500.0),
         "noisy_video": batch["latents"][:, 1:], "video_timestep": torch.full((1, 2), 500.0)}
    with torch.no_grad():
        clean = model(cond_timestep=torch.zeros(1, 3), **x)
        noisy = model(cond_timestep=torch.full((1, 3), 500.0), **x)
    assert (clean.action_velocity - noisy.action_velocity).abs().max() > 1e-3
    assert (clean.video_velocity - noisy.video_velocity).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------ inference
def test_sampling_grid_has_equal_steps() -> None:
    """10 steps at shift 1: sigma 1.0, 0.9, ..., 0.1 -> 0 (diffusers' default grid would end 0.112 -> 0.001 -> 0)."""
    sched = scheduler(10, 1.0)
    torch.testing.assert_close(sched.sigmas.double(), torch.linspace(1, 0, 11, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(sched.timesteps.double(), torch.linspace(1000, 100, 10, dtype=torch.float64),
                               atol=1e-3, rtol=0)
    shifted = scheduler(4, 5.0).sigmas.double()
    torch.testing.assert_close(shifted[:-1], shift_sigma(torch.tensor([1, 0.75, 0.5, 0.25], dtype=torch.float64), 5.0),
                               atol=1e-6, rtol=0)
    assert shifted[-1] == 0


def test_sampler_settings_follow_the_training_config() -> None:
    cfg = TrainConfig(shift_action=2.0, shift_video=3.0, sample_steps=7)
    assert sampler_settings(cfg) == SamplerSettings(action_shift=2.0, video_shift=3.0, num_steps=7)
    assert sampler_settings(TrainConfig()) == SamplerSettings()  # what old checkpoints fall back to
    with pytest.raises(ValueError, match="num_steps"):
        SamplerSettings(num_steps=0)


def _checkpoint_with(tiny_checkpoint: Path, tmp_path: Path, sampler: dict | None, state_stats: bool = False) -> Path:
    ckpt = shutil.copytree(tiny_checkpoint, tmp_path / "ckpt")
    manifest = json.loads((ckpt / "memorywam.json").read_text())
    if sampler is None:
        manifest.pop("sampler")
    else:
        manifest["sampler"] = sampler
    (ckpt / "memorywam.json").write_text(json.dumps(manifest))
    if state_stats:  # state and action statistics that differ in every dimension
        norm = json.loads((ckpt / "normalization.json").read_text())
        norm["state"].update(mean=list(np.linspace(-1, 1, 14)), std=list(np.linspace(0.5, 2, 14)))
        norm["action"].update(mean=list(np.linspace(3, 4, 14)), std=list(np.linspace(5, 6, 14)))
        (ckpt / "normalization.json").write_text(json.dumps(norm))
    return ckpt


def _record_calls(policy, name: str) -> list:
    """Wrap policy.model.<name> on the instance; returns the list of (args, kwargs) it is called with."""
    calls, original = [], getattr(policy.model, name)

    def wrapper(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    setattr(policy.model, name, wrapper)
    return calls


def test_policy_samples_with_the_checkpoint_sampler(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The chunk is denoised on the grid of the manifest's shift and step count."""
    from memorywam_ros.runtime import Policy

    ckpt = _checkpoint_with(tiny_checkpoint, tmp_path, {"action_shift": 3.0, "video_shift": 5.0, "num_steps": 4})
    policy = Policy.from_pretrained(ckpt)
    assert policy.num_steps == 4 and policy.sampler.action_shift == 3.0
    calls = _record_calls(policy, "action_velocity")
    policy.reset("transfer the cube")
    policy.observe(latent=torch.randn(48, 24, 20), joint_state=np.zeros(14))
    policy.act()
    got = torch.stack([args[2][0] for args, _ in calls]).double()
    want = 1000 * shift_sigma(torch.tensor([1.0, 0.75, 0.5, 0.25], dtype=torch.float64), 3.0)
    torch.testing.assert_close(got, want, atol=1e-3, rtol=0)

    default = Policy.from_pretrained(tiny_checkpoint)  # written by init_random: SamplerSettings()
    calls = _record_calls(default, "action_velocity")
    default.reset("transfer the cube")
    default.observe(latent=torch.randn(48, 24, 20), joint_state=np.zeros(14))
    default.act()
    got = torch.stack([args[2][0] for args, _ in calls]).double()
    torch.testing.assert_close(got, torch.linspace(1000, 100, 10, dtype=torch.float64), atol=1e-3, rtol=0)


def test_old_manifest_without_sampler_warns_and_bad_one_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from memorywam_ros.runtime.checkpoint import load_checkpoint

    old = _checkpoint_with(tiny_checkpoint, tmp_path / "old", None)
    with pytest.warns(UserWarning, match="no 'sampler' entry"):
        assert load_checkpoint(old).sampler == SamplerSettings()
    bad = _checkpoint_with(tiny_checkpoint, tmp_path / "bad", {"action_shift": -1.0})
    with pytest.raises(CheckpointError, match=r"memorywam\.json: invalid 'sampler' entry"):
        load_checkpoint(bad)


def test_written_checkpoint_carries_the_run_sampler(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """What the export writes (write_checkpoint's sampler, from train.sampler_settings) is what the robot loads."""
    from memorywam_ros.runtime.checkpoint import load_checkpoint, write_checkpoint

    ckpt = load_checkpoint(tiny_checkpoint)
    run = sampler_settings(TrainConfig(shift_action=2.0, shift_video=3.0, sample_steps=7))
    texts = {t: ckpt.instructions.get(t) for t in ckpt.instructions.texts()}
    out = write_checkpoint(tmp_path / "export", ckpt.model, ckpt.vae, ckpt.normalizer, texts, random=True,
                           image_size=tuple(ckpt.manifest["image_size"]), sampler=run)
    assert load_checkpoint(out).sampler == run


def test_policy_state_normalised_with_state_statistics_and_vae_fp32(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """The proprio the model gets is (q - state mean) / state std; the VAE is float32 under a bf16 model."""
    from memorywam_ros.runtime import Policy

    ckpt = _checkpoint_with(tiny_checkpoint, tmp_path, SamplerSettings(num_steps=1).to_dict(), state_stats=True)
    policy = Policy.from_pretrained(ckpt, dtype=torch.bfloat16)
    assert policy.model.video.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert {p.dtype for p in policy.vae.vae.parameters()} == {torch.float32}
    calls = _record_calls(policy, "sample_actions")
    policy.reset("transfer the cube")
    q = np.linspace(0.2, -0.3, 14)
    policy.observe(latent=torch.randn(48, 24, 20), joint_state=q)
    policy.act()
    proprio = calls[0][0][2]
    want = (q - np.linspace(-1, 1, 14)) / np.linspace(0.5, 2, 14)
    np.testing.assert_allclose(proprio[0].double().numpy(), want, rtol=1e-5)
