"""Distributed plumbing for train.py: process group, FSDP2 sharding, resumable checkpoints, export.

FSDP2 units. `MemoryWAM._joint_layer(layer, ...)` runs video block i and action block i as one
mixture-of-transformers layer, calling their pieces (`modulation`, `self_attention_qkv`,
`finish`) rather than `block.forward`, so FSDP's forward hooks would never fire on a block. Each
layer's pair of blocks is therefore ONE FSDP unit (`fully_shard([video_block, action_block])`)
whose forward is the joint layer, registered with `register_fsdp_forward_method`: the pair is
all-gathered right before the layer runs and resharded right after (and again in backward).
Activation checkpointing runs inside that unit (the `checkpoint_wrapper`-inside-`fully_shard`
arrangement), so a recompute in backward finds the layer's parameters gathered. The root unit
holds the rest (patch embedding, time/text embedders, proprio/action encoders, heads, gists).

Model initialisation at scale: every rank builds the model on the meta device and shards it;
rank 0 alone materialises the full initial weights on CPU (random init, optional diffusers Wan
video DiT, action DiT interpolated from it) and `set_model_state_dict(broadcast_from_rank0=True)`
scatters them, so a 6B model is never held N times in host memory.

Checkpoints (resume) use DCP (`torch.distributed.checkpoint`): each rank writes its own shards of
the model and AdamW state in parallel, nothing is gathered, and a checkpoint loads on another
world size. Next to it: `trainer.json` (step, data position, config) and `rng_rank<r>.pt` (the
per-rank noise generator). The directory is written as `step_N.partial` and renamed when every
rank has finished, so a crash never leaves a checkpoint that looks complete.
Export gathers one full float32 state dict on rank 0 (`get_model_state_dict(full_state_dict=True,
cpu_offload=True)`) and writes the robot's checkpoint directory with `write_checkpoint`.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.utils.checkpoint import checkpoint

from memorywam_ros.model import MemoryWAM, MemoryWAMConfig
from memorywam_ros.model.flow_matching import SamplerSettings

CHECKPOINTS = "checkpoints"


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun: its env; a plain `python` run is a world of one."""
    cuda = torch.cuda.is_available()
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    backend = "nccl" if cuda else "gloo"
    if "RANK" in os.environ:
        dist.init_process_group(backend, device_id=device if cuda else None)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return dist.get_rank(), dist.get_world_size(), device


def initial_state_dict(config: MemoryWAMConfig, seed: int, init_video_from: str | None, init_from: str | None):
    """Rank 0: the full initial weights (CPU, float32)."""
    if init_from:  # fine-tune a MemoryWAM model directory (a checkpoint's model/ or the checkpoint itself)
        path = Path(init_from)
        model = MemoryWAM.from_pretrained(path / "model" if (path / "model").is_dir() else path)
        if model.config.to_dict() != config.to_dict():
            raise ValueError(f"init_from {init_from}: model config differs from the training config")
        return model.state_dict()
    torch.manual_seed(seed)
    model = MemoryWAM(config)
    if init_video_from:
        from memorywam_ros.model import WanVideoDiT

        video = WanVideoDiT.from_diffusers(init_video_from)
        if video.config != config.video:
            raise ValueError(f"init_video_from {init_video_from}: {video.config} != training config {config.video}")
        model.video.load_state_dict(video.state_dict())
    model.initialize_action_from_video()  # paper §4.1: action DiT interpolated from the video DiT
    return model.state_dict()


def build_sharded_model(
    config: MemoryWAMConfig,
    device: torch.device,
    param_dtype: torch.dtype,
    activation_checkpointing: bool,
    full_state: dict[str, torch.Tensor] | None,
    broadcast: bool,
) -> MemoryWAM:
    """Meta-device model -> FSDP2-sharded on `device`. broadcast=True (on every rank): weights from rank 0's
    `full_state`; False: left uninitialised because a checkpoint is loaded next."""
    with torch.device("meta"):
        model = MemoryWAM(config)
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    # cast_forward_inputs=False: timesteps (0..1000) and RoPE angles must stay float32 (pitfalls 3, 4);
    # the model casts its own inputs to the weights' dtype where it wants them.
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32, cast_forward_inputs=False)
    joint_layer = model._joint_layer  # bound method, captured before it is rerouted below

    def run_layer(*args: Any) -> Any:
        if activation_checkpointing and torch.is_grad_enabled():
            return checkpoint(joint_layer, *args, use_reentrant=False)
        return joint_layer(*args)

    for video_block, action_block in zip(model.video.blocks, model.action.blocks):
        fully_shard([video_block, action_block], mesh=mesh, mp_policy=mp)
        video_block.run_layer = run_layer  # type: ignore[assignment]
        register_fsdp_forward_method(video_block, "run_layer")
    fully_shard(model, mesh=mesh, mp_policy=mp)
    model._joint_layer = lambda layer, *args: model.video.blocks[layer].run_layer(layer, *args)  # type: ignore
    model.gradient_checkpointing = False  # checkpointing happens inside the FSDP unit instead
    model.to_empty(device=device)
    if broadcast:
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_model_state_dict(model, full_state or {}, options=options)
    return model


# ------------------------------------------------------------------------------------------ checkpoints
def checkpoint_dirs(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(out_dir) / CHECKPOINTS
    dirs = [p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".partial")]
    return sorted(dirs, key=lambda p: int(p.name.split("_")[1]))


def save_state_file(path: str | Path, identity: dict[str, Any], state: dict[str, Any]) -> None:
    """A one-process run's resumable state (`torch.save`, with the arguments that made it) as one file.

    The single-process trainers' counterpart of `save_checkpoint` (bench/memory_training.py,
    memorywam-train-vae): written beside the target and renamed over it, so a kill mid-write leaves
    the last good state."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"identity": identity, **state}, tmp)
    os.replace(tmp, path)


def load_state_file(path: str | Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The state `save_state_file` kept at `path`, or None when there is none; a run with other arguments is refused."""
    path = Path(path)
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)  # (a GPU-made state resumes on CPU too)
    if state["identity"] != identity:
        raise SystemExit(f"{path} holds a run with other arguments: move it away to start this one")
    return state


def save_checkpoint(
    out_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    generator: torch.Generator,
    keep: int,
) -> Path:
    rank = dist.get_rank()
    final = Path(out_dir) / CHECKPOINTS / f"step_{trainer_state['step']:08d}"
    tmp = final.with_name(final.name + ".partial")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    torch.save({"generator": generator.get_state()}, tmp / f"rng_rank{rank}.pt")
    dist.barrier()
    if rank == 0:
        (tmp / "trainer.json").write_text(json.dumps(trainer_state, indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in checkpoint_dirs(out_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> dict[str, Any]:
    """Restore model, optimiser and this rank's generator in place; returns trainer.json."""
    path = Path(path)
    model_sd, optim_sd = get_state_dict(model, optimizer)  # (initialises AdamW's state so DCP can fill it)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    rng = path / f"rng_rank{dist.get_rank()}.pt"
    if rng.is_file():  # absent when resuming on more ranks than were saved: those ranks keep a fresh seed
        generator.set_state(torch.load(rng)["generator"])
    return json.loads((path / "trainer.json").read_text())


def export(
    directory: str | Path,
    model: nn.Module,
    config: MemoryWAMConfig,
    dataset: Any,
    latents_dir: str | Path,
    sampler: SamplerSettings | None = None,
) -> Path | None:
    """Gather the full model on rank 0 and write a complete robot checkpoint directory.

    sampler: the run's SamplerSettings (train.sampler_settings), written into the manifest."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)  # collective: every rank calls it
    if dist.get_rank() != 0:
        return None
    from diffusers import AutoencoderKLWan

    from memorywam_ros.runtime.checkpoint import write_checkpoint

    with torch.device("meta"):
        plain = MemoryWAM(config)
    plain.load_state_dict({k: v.float() for k, v in state.items()}, assign=True)
    vae = AutoencoderKLWan.from_pretrained(str(Path(latents_dir) / "vae"), low_cpu_mem_usage=False)
    meta = dataset.meta
    return write_checkpoint(
        directory,
        plain,
        vae,
        dataset.normalizer,
        dataset.instruction_embeddings(),
        random=False,
        image_size=tuple(meta["image_size"]),
        encoder_id=meta["instruction_encoder"],
        observation_lead=meta.get("observation_lead", 0),
        sampler=sampler,
    )
