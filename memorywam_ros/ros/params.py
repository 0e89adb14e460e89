"""Parameters of `memorywam_policy`: one table, declared with descriptors (defaults in config/memorywam.yaml).

The table imports without ROS (the static launch/config test reads it); rclpy only when declaring.

read_only marks what is wired once at start-up (model, devices, topics, rates): changing it at
runtime would silently do nothing, so rclpy refuses it instead. Ranges are enforced by rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.node import Node

__all__ = ["CAMERA_NAMES", "PARAMETERS", "NodeParams", "declare_parameters", "declare_table", "resolve_robot_config"]

CAMERA_NAMES = ("head", "left_wrist", "right_wrist")  # the mosaic's cameras (CONTRACTS.md)

# name: (default, description, read_only, range (lo, hi) or None)
PARAMETERS: dict[str, tuple[Any, str, bool, tuple[float, float] | None]] = {
    "model_path": ("", "checkpoint directory (memorywam.json, model/, vae/, ...)", True, None),
    "device": ("auto", "torch device: auto (cuda if available), cpu, cuda, cuda:N", True, None),
    "dtype": ("auto", "model dtype: auto (the checkpoint's choice), float32, bfloat16, float16", True, None),
    "num_steps": (0, "flow-matching denoising steps per chunk; 0 = the checkpoint's (its training run's "
                  "sample_steps, manifest 'sampler')", True, (0, 100)),
    "torch_threads": (0, "torch intra-op CPU threads; 0 = torch's default. On a CPU-only machine set "
                      "fewer than the cores so the control loop keeps one", True, (0, 256)),
    "seed": (0, "noise seed of the action sampler", True, (0, 2**31 - 1)),
    "instruction": ("", "task instruction; must be one the checkpoint has embeddings for. Empty: the "
                    "checkpoint's first. Changing it starts a new episode.", False, None),
    "robot_config": ("arx_x5_dual.yaml", "robot description YAML (joints, limits, state/command "
                     "mappings); a bare name is looked up in share/memorywam_ros/config/robots", True, None),
    "warmup": (True, "run one dummy inference at start-up (CUDA init, kernel selection) so the first real "
               "chunk is not late", True, None),
    "autostart": (False, "enable as soon as joint state arrives (default: wait for ~/enable)", True, None),
    "control_rate_hz": (10.0, "rate of the chunk's steps; must match the training data", True, (1.0, 100.0)),
    "observation_lead": (-1, "observation lead in control steps: the mosaics of the next latent frame are taken "
                         "this many steps before the chunk ends, so inference has lead x 100 ms before the next "
                         "chunk is due (no hold). Fixed by the training data: -1 = the checkpoint's "
                         "(memorywam.json observation_lead); any other value must equal it", True, (-1, 15)),
    "command_rate_hz": (10.0, "rate of the streamed commands; an integer multiple of control_rate_hz "
                        "(higher: linear interpolation between targets)", True, (1.0, 1000.0)),
    "camera_source": ("topics", "topics (sensor_msgs Image/CompressedImage) or realsense (pyrealsense2)",
                      True, None),
    "camera_timeout_s": (0.5, "hold when a camera's last good frame is older than this", False, (0.02, 10.0)),
    "joint_timeout_s": (0.25, "hold when the joint state is older than this", False, (0.01, 10.0)),
    "camera_max_clock_offset_s": (1.0, "frames whose header stamps are off from the node clock by more than "
                                  "this (old frames, or an unsynchronised camera host) are dropped; a smaller "
                                  "constant offset is estimated and cancelled", True, (0.001, 1e6)),
    "diagnostics_period_s": (1.0, "period of /diagnostics", True, (0.1, 60.0)),
    "realsense.width": (640, "pyrealsense2 colour width", True, (1, 4096)),
    "realsense.height": (480, "pyrealsense2 colour height", True, (1, 4096)),
    "realsense.fps": (30, "pyrealsense2 colour frame rate", True, (1, 300)),
}
_DEFAULT_TOPICS = {
    "head": "/cam_high/camera/color/image_raw",
    "left_wrist": "/cam_left_wrist/camera/color/image_raw",
    "right_wrist": "/cam_right_wrist/camera/color/image_raw",
}
for _cam in CAMERA_NAMES:
    PARAMETERS[f"cameras.{_cam}.topic"] = (_DEFAULT_TOPICS[_cam], f"{_cam} camera topic", True, None)
    PARAMETERS[f"cameras.{_cam}.transport"] = (
        "raw", "raw (sensor_msgs/Image rgb8|bgr8) or compressed (sensor_msgs/CompressedImage jpeg|png)",
        True, None)
    PARAMETERS[f"cameras.{_cam}.serial"] = ("", f"{_cam} RealSense serial (camera_source realsense)", True, None)


@dataclass
class NodeParams:
    values: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]


def _descriptor(name: str, description: str, read_only: bool, rng: Any, default: Any) -> ParameterDescriptor:
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    d = ParameterDescriptor(name=name, description=description, read_only=read_only)
    if rng is not None:
        if isinstance(default, bool):
            pass
        elif isinstance(default, int):
            d.integer_range = [IntegerRange(from_value=int(rng[0]), to_value=int(rng[1]), step=1)]
        elif isinstance(default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(rng[0]), to_value=float(rng[1]))]
    return d


def declare_table(node: Node, table: dict[str, tuple[Any, str, bool, Any]]) -> dict[str, Any]:
    """Declare every (default, description, read_only, range) entry of `table` -> {name: value}."""
    return {
        name: node.declare_parameter(name, default, _descriptor(name, description, read_only, rng, default)).value
        for name, (default, description, read_only, rng) in table.items()
    }


def declare_parameters(node: Node) -> NodeParams:
    values = declare_table(node, PARAMETERS)
    for cam in CAMERA_NAMES:
        t = values[f"cameras.{cam}.transport"]
        if t not in ("raw", "compressed"):
            raise ValueError(f"cameras.{cam}.transport must be raw or compressed, got {t!r}")
    if values["camera_source"] not in ("topics", "realsense"):
        raise ValueError(f"camera_source must be topics or realsense, got {values['camera_source']!r}")
    return NodeParams(values)


def resolve_robot_config(value: str) -> Path:
    """A path, or a bare file name looked up in the installed share dir, then the source tree."""
    p = Path(value).expanduser()
    if p.is_file():
        return p
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("memorywam_ros")) / "config" / "robots" / p.name)
    except Exception:  # not installed with colcon (pip / source tree)
        pass
    candidates.append(Path(__file__).resolve().parents[2] / "config" / "robots" / p.name)
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(f"robot_config {value!r} not found (looked in {[str(c) for c in candidates]})")
