"""Plain-Python pieces of the launch files (no `launch` import, so they are unit-tested anywhere).

`record_topics` reads the converter's topic file (config/record_topics*.yaml, written for
`memorywam-convert`): every value of a `topic:` key at any depth, plus the top-level
`*_topic` keys (`instruction_topic`, `split_topic`) that are set. Recording exactly what the
converter reads keeps the two in step without a second list.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CAMERA_NAMESPACES",
    "FASTDDS_PROFILE_VARS",
    "REALSENSE_ARGUMENTS",
    "bag_record_actions",
    "bag_record_cmd",
    "dds_environment",
    "launch_true",
    "package_share",
    "realsense_camera_nodes",
    "realsense_launch_nodes",
    "realsense_parameters",
    "record_topics",
]

# realsense2_camera nodes: namespace per camera, node name `camera` → /<ns>/camera/color/image_raw
CAMERA_NAMESPACES = {"head": "cam_high", "left_wrist": "cam_left_wrist", "right_wrist": "cam_right_wrist"}

# (name, default, description) of the camera launch arguments that bringup and record share
REALSENSE_ARGUMENTS = [
    ("use_realsense", "false", "start three realsense2_camera nodes (colour only)"),
    ("head_serial", "", "head camera serial (prefix digits with _ or quote them)"),
    ("left_wrist_serial", "", "left wrist camera serial"),
    ("right_wrist_serial", "", "right wrist camera serial"),
    ("color_profile", "640x480x30", "RealSense colour profile WxHxFPS"),
]


def package_share() -> Path:
    """share/memorywam_ros when installed with colcon, else the source tree (pip -e / checkout)."""
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("memorywam_ros"))
    except Exception:
        return Path(__file__).resolve().parents[2]


# Fast DDS 3.x (ROS 2 Kilted on) reads the first (checked: the only one its library names), 2.x
# (Humble, Jazzy) the second; Kilted's rmw warns on every start when the second is set
FASTDDS_PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")


def dds_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment variable that selects the shipped Fast DDS profile (config/fastdds_profile.xml:
    shared memory large enough for 1280x720 camera images), or {} where the user chose a profile.

    Set before a process creates its first ROS 2 participant (Fast DDS reads it once); other RMWs
    ignore it. Which variable: by ROS_DISTRO (unset, as with the pip wheels: Kilted's Fast DDS 3).
    """
    env = os.environ if env is None else env
    if any(env.get(v) for v in FASTDDS_PROFILE_VARS):
        return {}
    profile = package_share() / "config" / "fastdds_profile.xml"
    if not profile.is_file():
        return {}
    var = FASTDDS_PROFILE_VARS[1] if env.get("ROS_DISTRO", "") in FAST_DDS_2_DISTROS else FASTDDS_PROFILE_VARS[0]
    return {var: str(profile)}


def _collect(node: Any, out: list[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "topic" and isinstance(value, str):
                out.append(value)
            else:
                _collect(value, out)
    elif isinstance(node, list):
        for item in node:
            _collect(item, out)


def record_topics(path: str | Path, extra: list[str] | None = None) -> list[str]:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    topics: list[str] = []
    _collect(data, topics)
    for key, value in data.items():
        if key.endswith("_topic") and isinstance(value, str) and value:
            topics.append(value)
    topics.extend(extra or [])
    seen: dict[str, None] = {}
    for t in topics:
        seen.setdefault(t, None)
    if not seen:
        raise ValueError(f"{path}: no `topic:` entries to record")
    return list(seen)


def bag_record_cmd(topics: list[str], qos_overrides: str | Path | None, output: str = "") -> list[str]:
    """`ros2 bag record` as used for demonstrations: MCAP with zstd chunk compression.

    The chunk-compressed preset keeps the bag indexable (unlike --compression-mode file).
    """
    cmd = ["ros2", "bag", "record", "-s", "mcap", "--storage-preset-profile", "zstd_fast"]
    if qos_overrides:
        cmd += ["--qos-profile-overrides-path", str(qos_overrides)]
    if output:
        cmd += ["-o", output]
    return [*cmd, *topics]


def launch_true(value: str) -> bool:
    """A launch argument's text as a boolean (`true`, `1`, `yes`, `on`, any case)."""
    return value.strip().lower() in ("1", "true", "yes", "on")


def bag_record_actions(topics: list[str], qos_overrides: str | Path | None, output: str = "") -> list[Any]:
    """A log line naming the topics and the `ros2 bag record` process (needs launch)."""
    from launch.actions import ExecuteProcess, LogInfo

    return [LogInfo(msg=f"recording {len(topics)} topics: {' '.join(topics)}"),
            ExecuteProcess(cmd=bag_record_cmd(topics, qos_overrides, output), output="screen")]


def realsense_launch_nodes(arg: dict[str, str]) -> list[Any]:
    """The camera nodes REALSENSE_ARGUMENTS ask for: none unless use_realsense is true (needs launch_ros)."""
    if not launch_true(arg["use_realsense"]):
        return []
    serials = {cam: arg[f"{cam}_serial"] for cam in CAMERA_NAMESPACES}
    return realsense_camera_nodes(serials, arg["color_profile"])


def realsense_parameters(serial: str, profile: str = "640x480x30") -> dict[str, Any]:
    """Colour only (depth off saves USB bandwidth with three cameras on one host)."""
    return {
        "serial_no": serial,
        "enable_color": True,
        "enable_depth": False,
        "enable_infra1": False,
        "enable_infra2": False,
        "rgb_camera.color_profile": profile,
        "initial_reset": True,
    }


def realsense_camera_nodes(serials: dict[str, str], profile: str) -> list[Any]:
    """One realsense2_camera node per camera, in the namespaces of CAMERA_NAMESPACES (needs launch_ros)."""
    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterValue

    nodes = []
    for cam, ns in CAMERA_NAMESPACES.items():
        serial = serials.get(cam, "")
        if not serial:
            raise RuntimeError(f"use_realsense:=true needs {cam}_serial")
        params = realsense_parameters(serial, profile)
        # a serial of digits would otherwise be parsed into an int by the launch YAML rules
        params["serial_no"] = ParameterValue(serial, value_type=str)
        nodes.append(Node(package="realsense2_camera", executable="realsense2_camera_node", namespace=ns,
                          name="camera", parameters=[params], output="screen"))
    return nodes
