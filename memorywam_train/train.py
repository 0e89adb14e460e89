"""`memorywam-train`: flow-matching training of MemoryWAM on precomputed latents (DESIGN §5).

    torchrun --standalone --nproc_per_node 8 -m memorywam_train.train --config config/train_paper.yaml \\
        latents_dir=data/latents out_dir=runs/exp1 [key=value ...] [--export DIR]

One script for one CPU process (tests; gloo, float32) and many GPUs (NCCL, bf16 FSDP2, activation
checkpointing); see docs/training.md for single-GPU / multi-GPU / multi-node command lines.

Per step, for every latent frame i of a sample (dataset.py): the clean latent is mixed with
noise at a uniform ratio s (probability cond_noise_prob, video side only) and shown to the model
with timestep 1000·s (pitfall 5); frame i+1 is denoised from sigma_v (shifted logit-normal, shift
5) and action chunk i from sigma_a (shift 1), both drawn per frame. Loss = λv·MSE(video velocity)
+ λa·MSE(action velocity), the action term masked where a chunk runs past the episode's end, the
video term where frame i+1 does not follow frame i (anchor -> window). With state_dropout p, a
frame's state inputs (proprio token and committed prefix) are zeroed with probability p: a model
that can continue its own motion from them need not look (the simulated TransferCube policy's
first chunk ignores the image, bench/sim_diagnosis.py readout). No extra loss weighting:
sampling sigma from the logit-normal density already is the paper's "logit-normal training
weight" (model/flow_matching.py). The export writes the run's sampler settings (shift_action,
shift_video, sample_steps) into the checkpoint manifest; the robot samples with them.

Randomness is a function of (seed, rank, step) only: the noise comes from one per-rank generator
saved in every checkpoint, the data order and window starts from (seed, epoch, index); with
model and AdamW state restored by DCP (fsdp.py), a resumed run reproduces the uninterrupted
run's losses exactly (test/test_train_pipeline.py). Per-step scalars go to OUT/log.jsonl and
TensorBoard (OUT/tb).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from memorywam_ros.model import MemoryRules, MemoryWAMConfig
from memorywam_ros.model.flow_matching import SamplerSettings, add_noise, sample_sigma, timestep, velocity_target

from . import fsdp
from .dataset import LatentDataset, collate


@dataclass
class TrainConfig:
    latents_dir: str = ""  # memorywam-precompute output
    out_dir: str = "runs/memorywam"
    # model
    preset: str = "tiny"  # MemoryWAMConfig.tiny / .paper
    memory_policy: str = "hybrid"
    # overrides of the preset's MemoryWAMConfig, e.g. {memory: {n_recent: 2}, action: {chunk_size: 4}}
    model: dict = field(default_factory=dict)
    init_video_from: str | None = None  # diffusers Wan2.2 TI2V-5B transformer (or pipeline) folder
    init_from: str | None = None  # MemoryWAM checkpoint to fine-tune (skips the init above)
    # data
    mode: str = "window"  # "window" (random windows + anchors) or "episode"
    window: int = 8
    max_frames: int = 64
    batch_size: int = 1  # per rank (paper: 1 per GPU)
    num_workers: int = 2
    # optimisation (paper §4.1)
    steps: int = 10000
    lr: float = 2e-4
    min_lr: float = 2e-4  # == lr: constant after warm-up; lower: cosine decay to it
    warmup_steps: int = 500
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    grad_clip: float = 1.0
    # flow matching
    shift_video: float = 5.0
    shift_action: float = 1.0
    sample_steps: int = 10  # the robot's default Euler steps per chunk (written to the checkpoint with the shifts)
    cond_noise_prob: float = 1.0
    # probability per frame that the arm's state inputs (proprio token, committed prefix) are replaced
    # by zeros (the normalised mean): training-time only, against copying one's own motion
    state_dropout: float = 0.0
    loss_video_weight: float = 1.0
    loss_action_weight: float = 1.0
    # system
    precision: str = "auto"  # auto: bf16 on CUDA, float32 on CPU
    activation_checkpointing: str | bool = "auto"  # auto: on for CUDA
    seed: int = 0
    ckpt_every: int = 1000
    keep_checkpoints: int = 3
    resume: str | None = "auto"  # "auto": latest checkpoint in out_dir; a path; null: start fresh
    export_dir: str | None = None  # write a robot checkpoint directory at the end
    progress: bool = True

    @classmethod
    def load(cls, path: str | None, overrides: list[str]) -> TrainConfig:
        raw = yaml.safe_load(Path(path).read_text()) if path else {}
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"override {item!r} is not key=value")
            # dotted keys reach into a section: model.action.committed_prefix=12
            *parents, leaf = key.strip().split(".")
            node = raw
            for name in parents:
                node = node.setdefault(name, {})
                if not isinstance(node, dict):
                    raise SystemExit(f"override {item!r}: {name} is not a section")
            node[leaf] = yaml.safe_load(value)
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(raw) - set(types)
        if unknown:
            raise SystemExit(f"unknown config keys: {sorted(unknown)}")
        for key, value in raw.items():  # YAML 1.1 reads "2e-4" (no dot) as a string
            if types[key] in ("float", "int") and isinstance(value, str):
                raw[key] = float(value) if types[key] == "float" else int(value)
        for key in ("cond_noise_prob", "state_dropout"):
            if key in raw and not 0.0 <= float(raw[key]) <= 1.0:
                raise SystemExit(f"{key} is a probability, got {raw[key]}")
        return cls(**raw)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.min_lr (constant when they are equal)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def epoch_batches(n: int, epoch: int, cfg: TrainConfig, rank: int, world: int) -> list[list[int]]:
    """This rank's batches of one epoch: a seeded permutation, wrapped so every rank gets as many."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)).tolist()
    per_step = world * cfg.batch_size
    total = math.ceil(n / per_step) * per_step
    perm = (perm * math.ceil(total / n))[:total]
    mine = perm[rank::world]
    return [mine[i : i + cfg.batch_size] for i in range(0, len(mine), cfg.batch_size)]


def flow_matching_loss(model, batch: dict[str, torch.Tensor], cfg: TrainConfig, gen: torch.Generator, device):
    """(loss, video loss, action loss) of one batch. All noise is drawn on CPU from `gen` (device-independent).

    Every model input and target comes from model/flow_matching.py's helpers (add_noise,
    velocity_target, timestep); test/test_train_conventions.py inspects what the model receives.
    """
    x = batch["latents"]  # (B, N, C, h, w) clean
    actions = batch["actions"]  # (B, N, K, A) normalised
    b, n = x.shape[:2]
    # noise augmentation of the conditioning latents; its level is the model's timestep for them
    s = torch.rand(b, n, generator=gen) * (torch.rand(b, n, generator=gen) < cfg.cond_noise_prob)
    cond = add_noise(x, torch.randn(x.shape, generator=gen), s)
    sigma_a = sample_sigma((b, n), cfg.shift_action, gen)
    noise_a = torch.randn(actions.shape, generator=gen)
    sigma_v = sample_sigma((b, n - 1), cfg.shift_video, gen)
    target_frames = x[:, 1:]  # chunk i's frame predicts frame i+1
    noise_v = torch.randn(target_frames.shape, generator=gen)
    video = n > 1 and cfg.loss_video_weight > 0
    proprio, committed = batch["proprio"], batch.get("committed")
    if cfg.state_dropout > 0:  # drawn last, so runs without it keep their noise stream
        keep = (torch.rand(b, n, generator=gen) >= cfg.state_dropout).to(proprio.dtype)  # (B, N)
        proprio = proprio * keep[..., None]
        committed = committed * keep[..., None, None] if committed is not None else None

    to = lambda t: t.to(device, non_blocking=True)  # noqa: E731
    out = model(
        to(cond),
        to(batch["text"]),
        to(proprio),
        to(add_noise(actions, noise_a, sigma_a)),
        to(timestep(sigma_a)),
        frame_ids=to(batch["frame_ids"]),
        cond_timestep=to(timestep(s)),
        noisy_video=to(add_noise(target_frames, noise_v, sigma_v)) if video else None,
        video_timestep=to(timestep(sigma_v)) if video else None,
        committed=to(committed) if committed is not None else None,  # clean: no noise, no loss
    )
    mask = to(batch["action_mask"] & batch["frame_valid"][..., None]).float()  # (B, N, K)
    err_a = (out.action_velocity.float() - to(velocity_target(actions, noise_a))).pow(2).mean(-1)
    action_loss = (err_a * mask).sum() / mask.sum().clamp(min=1)
    video_loss = torch.zeros((), device=device)
    if video:
        vmask = to(batch["video_mask"]).float()  # (B, N-1)
        err_v = (out.video_velocity.float() - to(velocity_target(target_frames, noise_v))).pow(2).mean((2, 3, 4))
        video_loss = (err_v * vmask).sum() / vmask.sum().clamp(min=1)
    loss = cfg.loss_video_weight * video_loss + cfg.loss_action_weight * action_loss
    return loss, video_loss.detach(), action_loss.detach()


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW (DESIGN §5) without weight decay on biases, norms and the modulation tables."""
    decay = [p for name, p in model.named_parameters() if p.ndim >= 2 and "scale_shift_table" not in name]
    no_decay = [p for name, p in model.named_parameters() if p.ndim < 2 or "scale_shift_table" in name]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=tuple(cfg.betas),
    )


def train_step(model, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor], cfg: TrainConfig,
               gen: torch.Generator, device, step: int):
    """One optimisation step: schedule (lr_at), flow-matching loss, backward, grad clip, AdamW.

    The one step every trainer runs (memorywam-train here, the benchmarks in bench/ in one process).
    Returns (loss, video loss, action loss, grad norm, lr), the losses detached."""
    lr = lr_at(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss, video_loss, action_loss = flow_matching_loss(model, batch, cfg, gen, device)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach(), video_loss, action_loss, grad_norm, lr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memorywam-train", description="Train MemoryWAM (run under torchrun).")
    parser.add_argument("--config", default=None, help="YAML (config/train_tiny.yaml, config/train_paper.yaml)")
    parser.add_argument("--export", default=None, metavar="DIR", help="write a robot checkpoint here at the end")
    parser.add_argument("overrides", nargs="*", help="key=value (YAML values), e.g. steps=100 lr=1e-4")
    args = parser.parse_args(argv)
    cfg = TrainConfig.load(args.config, args.overrides)
    if args.export:
        cfg.export_dir = args.export
    if not cfg.latents_dir:
        parser.error("latents_dir is not set (config or latents_dir=DIR)")

    # ---- system ----------------------------------------------------------------------------
    rank, world, device = fsdp.setup_distributed()
    cuda = device.type == "cuda"
    param_dtype = torch.bfloat16 if cfg.precision == "bf16" or (cfg.precision == "auto" and cuda) else torch.float32
    ac = cuda if cfg.activation_checkpointing == "auto" else bool(cfg.activation_checkpointing)
    out_dir = Path(cfg.out_dir)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "train_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))

    # ---- model + data ----------------------------------------------------------------------
    config = model_config(cfg)
    resume = fsdp.checkpoint_dirs(out_dir)[-1:] if cfg.resume == "auto" else ([Path(cfg.resume)] if cfg.resume else [])
    resume_from = resume[0] if resume else None
    normalizer = None
    if resume_from is not None and (resume_from / "normalization.json").is_file():
        from memorywam_ros.runtime.normalization import Normalizer

        normalizer = Normalizer.from_json(resume_from / "normalization.json")  # the stats the run started with
    try:
        dataset = LatentDataset(
            cfg.latents_dir, cfg.mode, cfg.window, cfg.max_frames, MemoryRules(config.memory).n_anchor, normalizer,
            cfg.seed, committed_prefix=config.action.committed_prefix,
        )
    except (FileNotFoundError, ValueError) as err:
        raise SystemExit(f"memorywam-train: {err}") from None
    _check_fit(dataset, config)
    full_state = None
    if resume_from is None and rank == 0:
        full_state = fsdp.initial_state_dict(config, cfg.seed, cfg.init_video_from, cfg.init_from)
    model = fsdp.build_sharded_model(config, device, param_dtype, ac, full_state, broadcast=resume_from is None)
    del full_state
    optimizer = build_optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + rank)  # per-rank noise stream
    step, epoch, batch_in_epoch = 0, 0, 0
    if resume_from is not None:
        state = fsdp.load_checkpoint(resume_from, model, optimizer, gen)
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        _truncate_log(out_dir / "log.jsonl", step, rank)
    if rank == 0:
        dataset.normalizer.to_json(out_dir / "normalization.json")
        print(f"memorywam-train: {world} rank(s) on {device.type}, {param_dtype}, activation checkpointing {ac}; "
              f"{len(dataset)} episodes; {'resuming ' + str(resume_from) if resume_from else 'fresh start'} "
              f"at step {step}", flush=True)

    # ---- loop ------------------------------------------------------------------------------
    writer = log_file = bar = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        writer = SummaryWriter(str(out_dir / "tb"), purge_step=step)
        log_file = (out_dir / "log.jsonl").open("a")
        bar = tqdm(total=cfg.steps, initial=step, disable=not cfg.progress, desc="train", dynamic_ncols=True)
    model.train()
    while step < cfg.steps:
        dataset.set_epoch(epoch)
        batches = epoch_batches(len(dataset), epoch, cfg, rank, world)
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batches[batch_in_epoch:], collate_fn=collate, num_workers=cfg.num_workers,
            pin_memory=cuda,
        )
        for batch in loader:
            t0 = time.perf_counter()
            loss, video_loss, action_loss, grad_norm, lr = train_step(model, optimizer, batch, cfg, gen, device, step)
            step += 1
            batch_in_epoch += 1
            if batch_in_epoch == len(batches):
                epoch, batch_in_epoch = epoch + 1, 0

            # ---- logging (every step: tiny scalars) ----
            stats = torch.stack((loss.detach(), video_loss, action_loss))
            dist.all_reduce(stats)
            stats = (stats / world).tolist()
            grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
            record = {
                "step": step, "loss": stats[0], "video_loss": stats[1], "action_loss": stats[2], "lr": lr,
                "grad_norm": grad_norm, "samples_per_s": world * cfg.batch_size / (time.perf_counter() - t0),
            }
            if rank == 0:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                for key, value in record.items():
                    if key != "step":
                        writer.add_scalar(f"train/{key}", value, step)
                bar.update(1)
                bar.set_postfix(loss=f"{stats[0]:.4f}", lr=f"{lr:.2e}")

            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                trainer_state = {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "world_size": world,
                                 "config": dataclasses.asdict(cfg)}
                path = fsdp.save_checkpoint(out_dir, model, optimizer, trainer_state, gen, cfg.keep_checkpoints)
                if rank == 0:
                    dataset.normalizer.to_json(path / "normalization.json")
            if step >= cfg.steps:
                break

    if rank == 0:
        bar.close()
        writer.close()
        log_file.close()
    if cfg.export_dir:
        exported = fsdp.export(cfg.export_dir, model, config, dataset, cfg.latents_dir, sampler_settings(cfg))
        if exported is not None:
            print(f"memorywam-train: exported {exported}", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return 0


def sampler_settings(cfg: TrainConfig) -> SamplerSettings:
    """What inference must use to integrate the flow this run trains: the shifts and the step count."""
    return SamplerSettings(action_shift=cfg.shift_action, video_shift=cfg.shift_video, num_steps=cfg.sample_steps)


def model_config(cfg: TrainConfig) -> MemoryWAMConfig:
    """The preset with `cfg.model` overrides merged in (section by section)."""
    base = {"tiny": MemoryWAMConfig.tiny, "paper": MemoryWAMConfig.paper}[cfg.preset](cfg.memory_policy).to_dict()
    for key, value in cfg.model.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key].update(value)
        else:
            base[key] = value
    try:
        return MemoryWAMConfig.from_dict(base)
    except (TypeError, ValueError) as err:
        raise SystemExit(f"invalid model overrides {cfg.model}: {err}") from err


def _check_fit(dataset: LatentDataset, config: MemoryWAMConfig) -> None:
    """The latents and instruction embeddings were made for this model size."""
    sample = dataset[0]
    c, h, w = sample["latents"].shape[1:]
    if (c, h, w) != (config.video.in_channels, config.latent_height, config.latent_width):
        raise SystemExit(f"latents are {c}x{h}x{w}, the model expects "
                         f"{config.video.in_channels}x{config.latent_height}x{config.latent_width}")
    if sample["actions"].shape[1] != config.action.chunk_size:
        raise SystemExit(f"latents hold chunks of {sample['actions'].shape[1]} actions, the model's chunk_size is "
                         f"{config.action.chunk_size} (memorywam-precompute --chunk-size)")
    if sample["text"].shape[-1] != config.video.text_dim:
        raise SystemExit(f"instruction embeddings have dim {sample['text'].shape[-1]}, model text_dim "
                         f"{config.video.text_dim} (precompute with the matching --text-encoder / --random-text-dim)")


def _truncate_log(path: Path, step: int, rank: int) -> None:
    """Resuming in the same run folder: drop log lines of steps after the checkpoint (they are redone)."""
    if rank != 0 or not path.is_file():
        return
    lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in lines))


if __name__ == "__main__":
    raise SystemExit(main())
