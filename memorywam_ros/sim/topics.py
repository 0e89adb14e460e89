"""ROS names the simulated robot uses, shared by the demo bag writer and the `memorywam_sim` node.

They are the real robot's names (docs/CONTRACTS.md, realsense-ros under namespaces cam_high /
cam_left_wrist / cam_right_wrist with camera_name `camera`), so `config/record_topics_sim.yaml`
converts sim bags and the policy node drives the sim without remapping. Pure constants: no ROS.
"""

from __future__ import annotations

# MJCF camera -> realsense-style namespace (the camera's "name" in frame ids).
CAMERA_NAMESPACES: dict[str, str] = {
    "top": "cam_high",
    "left_wrist": "cam_left_wrist",
    "right_wrist": "cam_right_wrist",
}

IMAGE_TOPICS: dict[str, str] = {cam: f"/{ns}/camera/color/image_raw" for cam, ns in CAMERA_NAMESPACES.items()}
"""MJCF camera -> sensor_msgs/msg/Image topic (rgb8)."""

FRAME_IDS: dict[str, str] = {cam: f"{ns}_color_optical_frame" for cam, ns in CAMERA_NAMESPACES.items()}
"""realsense-ros names the colour frame `<name>_color_optical_frame`."""

JOINT_STATES_TOPIC = "/joint_states"  # sensor_msgs/msg/JointState, 14 names
COMMAND_TOPIC = "/memorywam_policy/joint_command"  # sensor_msgs/msg/JointState (the action)
INSTRUCTION_TOPIC = "/instruction"  # std_msgs/msg/String

IMAGE_TYPE = "sensor_msgs/msg/Image"
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
STRING_TYPE = "std_msgs/msg/String"
