"""Trainer side of memorywam_ros: bag conversion, episode storage, precompute, dataset, trainer.

Kept import-light on purpose: `import memorywam_train` must not pull in torch, h5py or rosbags,
so command-line tools start fast and ROS-free code stays importable everywhere. Import the
submodules (`memorywam_train.convert`, `memorywam_train.episodes`, ...) directly.
"""

from __future__ import annotations

__all__: list[str] = []
