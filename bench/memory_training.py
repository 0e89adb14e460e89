"""What every memory benchmark shares: one-process training through the trainer's step.

No simulator and no VAE here, so the sim-free passkey probe (bench/passkey.py) and its CI test
import it without MiniGrid; every memory benchmark imports `train_model` from here.
The Wilson interval the benchmarks report lives in bench/binomial.py.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memorywam_ros.model import MemoryWAM, MemoryWAMConfig
from memorywam_train.dataset import collate
from memorywam_train.fsdp import load_state_file, save_state_file
from memorywam_train.train import TrainConfig, build_optimizer, train_step


def relative_class_difference(x: np.ndarray, y: np.ndarray, reference: np.ndarray | None = None) -> float:
    """x (n, ...) features, y (n,) class labels: rms of the difference of two classes' mean features,
    relative to the rms of `reference` (default x itself), averaged over the pairs of classes present.
    How strongly a class is written into a representation: a linear probe reads any nonzero difference
    when the rest is deterministic, this says how large it is against everything the features carry."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    scale = np.sqrt((np.asarray(x if reference is None else reference, dtype=np.float64) ** 2).mean())
    means = [x[y == k].mean(0) for k in np.unique(y)]
    pairs = [np.sqrt(((a - b) ** 2).mean()) for i, a in enumerate(means) for b in means[i + 1:]]
    return float(np.mean(pairs) / scale) if pairs else 0.0


def train_model(config: MemoryWAMConfig, data: Sequence[dict], steps: int, batch: int, seed: int,
                cond_noise: float = 1.0, checkpoint: Path | None = None, checkpoint_every: int = 200,
                device: str = "cpu", **train: object) -> tuple[MemoryWAM, dict]:
    """Train MemoryWAM(config) from scratch on samples in the LatentDataset layout, one process.

    Each step is `memorywam_train.train.train_step` (lr_at schedule, flow_matching_loss, clip,
    AdamW from build_optimizer) on a `collate`d batch, as memorywam-train runs it; only the FSDP /
    torchrun set-up is left out (it buys nothing at these sizes). `data` may be any sequence
    (a lazily generated one too). Learning rate 1e-3 with 100 warm-up steps and cosine decay to
    1e-4: the paper's 2e-4 fine-tunes a pretrained 5B model, these models start from scratch.
    `train` overrides further TrainConfig fields (e.g. loss_video_weight=0.0). `device`: where the
    steps run ("cuda": flex attention with the block mask, as memorywam-train on a GPU; float32 either
    way); the noise is drawn on CPU from the same generator, and the model comes back on CPU.

    `checkpoint`: a file that holds the run every `checkpoint_every` steps (model, AdamW, the
    noise generator, the sample order, the losses so far) and resumes it when the same call is
    made again, so an interrupted cell of a long benchmark continues where it stopped instead of
    starting over; the resumed run is the uninterrupted one, step for step (tested). The file
    records the arguments it was made with and a run with other arguments is refused."""
    knobs = {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 100, "cond_noise_prob": cond_noise, **train}
    cfg = TrainConfig(steps=steps, seed=seed, **knobs)
    torch.manual_seed(seed)
    dev = torch.device(device)
    model = MemoryWAM(config).to(dev)
    opt = build_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    order = np.random.default_rng(seed)
    perm: list[int] = []
    losses: list[tuple[float, float]] = []
    start, spent = 0, 0.0
    identity = {"config": config.to_dict(), "train": {k: repr(v) for k, v in sorted(knobs.items())},
                "steps": steps, "batch": batch, "seed": seed, "samples": len(data)}
    state = load_state_file(checkpoint, identity) if checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state["model"])  # (loaded on CPU, copied onto the model's device)
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        order.bit_generator.state = state["order"]
        perm, losses, start, spent = state["perm"], state["losses"], state["step"], state["train_s"]
    t0 = time.perf_counter()
    model.train()
    for step in range(start, steps):
        if len(perm) < batch:
            perm += order.permutation(len(data)).tolist()
        idx, perm = perm[:batch], perm[batch:]
        batch_data = collate([data[i] for i in idx])
        _, video_loss, action_loss, _, _ = train_step(model, opt, batch_data, cfg, gen, dev, step)
        losses.append((float(video_loss), float(action_loss)))
        if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            save_state_file(checkpoint, identity, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
                "order": order.bit_generator.state, "perm": perm, "losses": losses, "step": step + 1,
                "train_s": spent + time.perf_counter() - t0})
    tail = np.array(losses[-max(1, steps // 10):])
    params = sum(p.numel() for p in model.parameters())
    return model.cpu().eval(), {"params": params, "device": device, "train_s": spent + time.perf_counter() - t0,
                                "resumed_at": start, "final_video_loss": float(tail[:, 0].mean()),
                                "final_action_loss": float(tail[:, 1].mean())}

