"""Inference without ROS: camera mosaic, streaming VAE encoder, instruction embeddings,
normalisation (and the `Policy`). Never imports rclpy."""

from __future__ import annotations

from .checkpoint import Checkpoint, load_checkpoint, write_checkpoint
from .instructions import (
    InstructionStore,
    UnknownInstructionError,
    encode_instructions,
    encoder_identity,
    random_instruction_embeddings,
)
from .mosaic import compose_mosaic, mosaics_to_tensor, resize_center_crop
from .normalization import ArrayStats, Normalizer
from .policy import Policy
from .vae import WAN22_LATENTS_MEAN, WAN22_LATENTS_STD, StreamingVAEEncoder, wan22_vae_config

__all__ = [
    "WAN22_LATENTS_MEAN",
    "WAN22_LATENTS_STD",
    "ArrayStats",
    "Checkpoint",
    "InstructionStore",
    "Normalizer",
    "Policy",
    "StreamingVAEEncoder",
    "UnknownInstructionError",
    "compose_mosaic",
    "encode_instructions",
    "encoder_identity",
    "load_checkpoint",
    "mosaics_to_tensor",
    "random_instruction_embeddings",
    "resize_center_crop",
    "wan22_vae_config",
    "write_checkpoint",
]
