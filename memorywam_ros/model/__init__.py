"""The MemoryWAM network (torch only; no ROS, no I/O beyond checkpoints).

from memorywam_ros.model import MemoryWAM, MemoryWAMConfig, WanVideoDiT
"""

from .config import MEMORY_POLICIES, ActionDiTConfig, MemoryConfig, MemoryWAMConfig, VideoDiTConfig
from .memory import MemoryKVCache, MemoryRules
from .memorywam import MemoryWAM, TrainingOutput
from .wan_video_dit import WanVideoDiT
from .weights import CheckpointError

__all__ = [
    "MEMORY_POLICIES",
    "ActionDiTConfig",
    "CheckpointError",
    "MemoryConfig",
    "MemoryKVCache",
    "MemoryRules",
    "MemoryWAM",
    "MemoryWAMConfig",
    "TrainingOutput",
    "VideoDiTConfig",
    "WanVideoDiT",
]
