"""End to end on CPU: rosbag2 bags (mcap + sqlite3) -> convert -> precompute -> 2-rank FSDP2 training
under torchrun (gloo) -> exact resume -> export -> Policy acts. Plus FSDP2 == plain model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.checkpoint import checkpoint
from train_bag_helpers import REPO, BagSpec, config_dict, write_bag

from memorywam_train.config import config_from_dict
from memorywam_train.convert import convert_bag
from memorywam_train.episodes import EpisodeReader
from memorywam_train.precompute import precompute

STEPS, RESUME_AT = 30, 15


def torchrun(*args: str, timeout: float = 240) -> None:
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "memorywam_train.train", *args]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


def losses(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def latents(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    root = tmp_path_factory.mktemp("pipeline")
    # raw rgb8 / bgr8 and JPEG-compressed cameras, JointState in shuffled name order, a command
    # topic, stamp jitter (helpers), and a dropped left-wrist frame; 6.5 s -> 4-5 latent frames
    spec = BagSpec(duration_s=6.5, drop={"left_wrist": [40]})
    cfg = config_from_dict(config_dict())
    for storage in ("mcap", "sqlite3"):
        write_bag(root / f"bag_{storage}", spec, storage)
        report = convert_bag(root / f"bag_{storage}", cfg, root / "episodes")
        assert report.ok, report.error
    rows = [len(EpisodeReader(p)) for p in sorted((root / "episodes").glob("*.hdf5"))]
    assert len(rows) == 2 and min(rows) >= 49, rows
    result = precompute(root / "episodes", tiny_checkpoint, root / "latents", random_text_dim=32, text_len=16,
                        progress=False)
    assert len(result.written) == 2 and not result.failed
    return root / "latents"


@pytest.mark.slow
def test_train_resume_export(latents: Path, tmp_path: Path) -> None:
    common = ["--config", str(REPO / "config" / "train_tiny.yaml"), f"latents_dir={latents}", "progress=false",
              f"steps={STEPS}", f"ckpt_every={RESUME_AT}", "mode=episode", "lr=2e-3", "min_lr=2e-3", "warmup_steps=5",
              "sample_steps=3"]
    torchrun(*common, f"out_dir={tmp_path / 'run'}", "--export", str(tmp_path / "export"))
    full = losses(tmp_path / "run")
    assert sorted(full) == list(range(1, STEPS + 1))
    first = np.mean([full[s]["loss"] for s in range(1, 6)])
    last = np.mean([full[s]["loss"] for s in range(STEPS - 4, STEPS + 1)])
    assert last < 0.8 * first, (first, last)
    assert all(np.isfinite(r["grad_norm"]) and r["samples_per_s"] > 0 for r in full.values())
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))

    # a new run resumed from the mid-run checkpoint redoes steps 16..30 with the same losses, bit for bit
    checkpoint = tmp_path / "run" / "checkpoints" / f"step_{RESUME_AT:08d}"
    torchrun(*common, f"out_dir={tmp_path / 'resumed'}", f"resume={checkpoint}")
    resumed = losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(RESUME_AT + 1, STEPS + 1))
    for step, record in resumed.items():
        for key in ("loss", "video_loss", "action_loss", "grad_norm", "lr"):
            assert record[key] == full[step][key], (step, key, record[key], full[step][key])

    # the export is a complete robot checkpoint, sampler settings of the run included
    from memorywam_ros.runtime.policy import Policy

    manifest = json.loads((tmp_path / "export" / "memorywam.json").read_text())
    assert manifest["sampler"] == {"action_shift": 1.0, "video_shift": 5.0, "num_steps": 3}
    policy = Policy.from_pretrained(tmp_path / "export")
    assert policy.num_steps == 3
    assert policy.instructions == ["stack the cubes"]
    policy.reset("stack the cubes")
    rng = np.random.default_rng(0)
    policy.observe(rng.integers(0, 255, (1, 384, 320, 3), dtype=np.uint8), np.zeros(14))
    chunk = policy.act()
    policy.observe(rng.integers(0, 255, (4, 384, 320, 3), dtype=np.uint8), chunk[-1])
    chunk = policy.act()
    assert chunk.shape == (16, 14) and np.isfinite(chunk).all()
    stats = json.loads((tmp_path / "export" / "normalization.json").read_text())
    assert stats["action"]["count"] > 0  # the dataset's statistics, not the identity


@pytest.mark.slow
def test_committed_prefix_trains_exports_and_acts(latents: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Issue 14 item 2, end to end: latents with observation lead 3, a model with a 3-command committed
    prefix (dotted override), a few torchrun steps, export; the robot's Policy then needs the
    committed commands, and a manifest whose lead contradicts the prefix is refused at load."""
    import shutil

    from memorywam_ros.model import CheckpointError
    from memorywam_ros.runtime.policy import Policy

    lead3 = tmp_path / "latents_l3"
    result = precompute(latents.parent / "episodes", tiny_checkpoint, lead3, random_text_dim=32, text_len=16,
                        progress=False, observation_lead=3)
    assert len(result.written) == 2 and not result.failed
    torchrun("--config", str(REPO / "config" / "train_tiny.yaml"), f"latents_dir={lead3}", "progress=false",
             "steps=4", "mode=episode", "model.action.committed_prefix=3", f"out_dir={tmp_path / 'run'}",
             "--export", str(tmp_path / "export"))
    assert all(np.isfinite(r["action_loss"]) for r in losses(tmp_path / "run").values())
    policy = Policy.from_pretrained(tmp_path / "export")
    assert policy.committed_prefix == 3
    policy.reset("stack the cubes")
    policy.observe(np.zeros((1, 384, 320, 3), dtype=np.uint8), np.zeros(14))
    with pytest.raises(ValueError, match="last 3 committed commands"):
        policy.act()
    a = policy.act(committed=np.zeros((3, 14)))
    policy.reset("stack the cubes")
    policy.observe(np.zeros((1, 384, 320, 3), dtype=np.uint8), np.zeros(14))
    b = policy.act(committed=np.full((3, 14), 0.5))
    assert a.shape == (16, 14) and np.abs(a - b).max() > 0  # same seed and frame: only the prefix differs
    # the same checkpoint claiming lead 0: its model's prefix could never be filled on the robot
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "export", bad)
    manifest = json.loads((bad / "memorywam.json").read_text())
    manifest.update(observation_lead=0, observation_substeps=[3, 7, 11, 15])
    (bad / "memorywam.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="committed commands, which only exist with observation_lead 3"):
        Policy.from_pretrained(bad)
    # a lead-3 dataset cannot feed a model whose prefix is 2
    with pytest.raises(AssertionError, match="observation lead"):
        torchrun("--config", str(REPO / "config" / "train_tiny.yaml"), f"latents_dir={lead3}", "progress=false",
                 "steps=1", "model.action.committed_prefix=2", f"out_dir={tmp_path / 'run2'}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fsdp_model_matches_plain_model(tiny_checkpoint: Path, dtype: torch.dtype,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The FSDP2 units (video+action block pairs behind register_fsdp_forward_method, checkpointed
    inside) compute the plain model's loss and gradients: a world of one runs every hook. bf16 is the
    GPU path (MixedPrecisionPolicy bf16 parameters and compute, fp32 reduce, activation checkpointing),
    compared with the plain model cast to bf16. No unit returns a view (FSDP2 warns about those: an
    in-place op on one would skip its pre-backward all-gather)."""
    import warnings

    import torch.distributed as dist

    from memorywam_ros.model import MemoryWAM
    from memorywam_train import fsdp

    torch.manual_seed(0)
    plain = MemoryWAM.from_pretrained(tiny_checkpoint / "model")
    state = {k: v.clone() for k, v in plain.state_dict().items()}
    plain = plain.to(dtype)
    n = 3
    inputs = (
        torch.randn(1, n, 48, 24, 20),
        torch.randn(1, 16, 32),
        torch.randn(1, n, 14),
        torch.randn(1, n, 16, 14),
        torch.rand(1, n) * 1000,
    )
    kwargs = {"cond_timestep": torch.rand(1, n) * 1000, "noisy_video": torch.randn(1, n - 1, 48, 24, 20),
              "video_timestep": torch.rand(1, n - 1) * 1000}

    def loss_of(model):
        out = model(*inputs, **kwargs)
        return out.action_velocity.float().pow(2).mean() + out.video_velocity.float().pow(2).mean()

    want = loss_of(plain)
    want.backward()
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        sharded = fsdp.build_sharded_model(plain.config, torch.device("cpu"), dtype, True, state, True)
        checkpointed = []  # activation checkpointing really runs: once per layer (unit) in the forward

        def counting_checkpoint(fn, layer, *args, **kwargs):
            checkpointed.append(layer)
            return checkpoint(fn, layer, *args, **kwargs)

        monkeypatch.setattr(fsdp, "checkpoint", counting_checkpoint)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = loss_of(sharded)
            got.backward()
        assert checkpointed == list(range(plain.config.video.num_layers)), checkpointed
        views = [str(w.message)[:60] for w in caught if "returned a view tensor" in str(w.message)]
        assert not views, views
        exact = dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=1e-5 if exact else 1e-3, atol=1e-6)
        grads = dict(plain.named_parameters())
        for name, param in sharded.named_parameters():
            got_grad, want_grad = param.grad.full_tensor().float(), grads[name].grad.float()
            if exact:
                torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-6, msg=name)
            else:  # bf16 gradients, accumulated in bf16 (plain) vs cast to fp32 for the reduce (FSDP)
                err = (got_grad - want_grad).norm() / want_grad.norm().clamp(min=1e-12)
                assert err < 2e-2, (name, err.item())
    finally:
        dist.destroy_process_group()
