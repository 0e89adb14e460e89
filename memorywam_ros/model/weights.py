"""Reading and writing weights: safetensors files (single or sharded), strict key/shape checks."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

# Kept in float32 when a model is cast to bf16/fp16 for inference: the adaLN modulation path and the
# norm weights (diffusers keeps the same set in fp32).
FP32_PARAM_PATTERNS = ("time_embedder", "time_proj", "scale_shift_table", "norm")


class CheckpointError(ValueError):
    """A checkpoint directory or state dict that does not fit the model; the message names the part."""


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """`load_file`, failing with a CheckpointError naming the file (safetensors' own errors do not)."""
    try:
        return load_file(str(path))
    except Exception as err:  # SafetensorError (truncated header/data), OSError, ...
        raise CheckpointError(f"{path}: unreadable safetensors file ({type(err).__name__}: {err})") from err


def read_json(path: Path, what: str) -> dict:
    """A JSON object from `path`, failing with a CheckpointError naming the file and what it should hold."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path}: {what} is not readable JSON ({type(err).__name__}: {err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {what} must be a JSON object, got {type(data).__name__}")
    return data


def load_safetensors_dir(directory: Path, stem: str) -> dict[str, torch.Tensor]:
    """Load `<stem>.safetensors`, or the shards listed in `<stem>.safetensors.index.json`."""
    single = directory / f"{stem}.safetensors"
    index = directory / f"{stem}.safetensors.index.json"
    if single.is_file():
        return read_safetensors(single)
    if index.is_file():
        weight_map = read_json(index, "safetensors shard index").get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: no weight_map")
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = directory / shard
            if not shard_path.is_file():
                raise CheckpointError(f"{index}: shard {shard} is missing")
            state.update(read_safetensors(shard_path))
        missing = set(weight_map) - set(state)
        if missing:
            raise CheckpointError(f"{index}: tensors listed but not found in shards: {sorted(missing)[:5]}")
        return state
    raise CheckpointError(f"{directory}: neither {single.name} nor {index.name} found")


def check_state_dict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming every missing/unexpected key and every shape mismatch."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:10])}" + (" ..." if len(missing) > 10 else ""))
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:10])}" + (" ..." if len(unexpected) > 10 else ""))
    for key in sorted(set(expected) & set(state)):
        if tuple(state[key].shape) != expected[key]:
            problems.append(f"wrong shape for {key}: checkpoint {tuple(state[key].shape)}, model {expected[key]}")
    if problems:
        raise CheckpointError(f"{source} does not match the model: " + "; ".join(problems))


def load_into(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load `state` into `module` (which may live on the meta device)."""
    check_state_dict(module, state, source)
    module.load_state_dict(state, strict=True, assign=True)


def cast_for_inference(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast weights to `dtype`, keeping the modulation path and norm weights in float32."""
    for name, param in module.named_parameters():
        keep = any(p in name for p in FP32_PARAM_PATTERNS)
        param.data = param.data.to(torch.float32 if keep else dtype)
    return module
