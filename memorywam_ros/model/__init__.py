"""The MemoryWAM network (torch only; no ROS, no I/O beyond checkpoints).

    from memorywam_ros.model import MemoryWAM, MemoryWAMConfig, WanVideoDiT
"""

from .config import MEMORY_POLICIES, ActionDiTConfig, MemoryConfig, MemoryWAMConfig, VideoDiTConfig
from .wan_video_dit import WanVideoDiT

__all__ = [
    "MEMORY_POLICIES",
    "ActionDiTConfig",
    "MemoryConfig",
    "MemoryWAMConfig",
    "VideoDiTConfig",
    "WanVideoDiT",
]
