"""Record teleoperated demonstrations for training (no policy): cameras (optional) + `ros2 bag record`.

    ros2 launch memorywam_ros record.launch.py use_realsense:=true \
        head_serial:=_123 left_wrist_serial:=_456 right_wrist_serial:=_789 bag_output:=/data/bags/demo_001

The arms' teleoperation (ARX master/follower launch) runs separately. The recorded topics are the
ones `memorywam-convert` reads (config/record_topics.yaml; record_topics_sim.yaml with sim:=true).
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription
from memorywam_ros.ros.launch_utils import (
    REALSENSE_ARGUMENTS,
    bag_record_actions,
    dds_environment,
    launch_true,
    package_share,
    realsense_launch_nodes,
    record_topics,
)

CONFIG = package_share() / "config"

ARGUMENTS = [
    ("topics_file", "", "converter topic file (empty: config/record_topics.yaml, _sim with sim:=true)"),
    ("qos_overrides", str(CONFIG / "record_qos_overrides.yaml"), "rosbag2 QoS overrides"),
    ("bag_output", "", "bag directory (empty: rosbag2_<timestamp>)"),
    *REALSENSE_ARGUMENTS,
    ("sim", "false", "record the simulator's topics (record_topics_sim.yaml)"),
]


def _setup(context, *args, **kwargs):
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    sim = launch_true(arg["sim"])
    # every node started here uses the shipped Fast DDS profile (large camera images; unless set)
    actions = [SetEnvironmentVariable(k, v) for k, v in dds_environment().items()]
    actions.extend(realsense_launch_nodes(arg))
    topics_file = arg["topics_file"] or str(CONFIG / ("record_topics_sim.yaml" if sim else "record_topics.yaml"))
    topics = record_topics(topics_file)
    qos = arg["qos_overrides"]
    actions.extend(bag_record_actions(topics, qos or None, arg["bag_output"]))
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, desc in ARGUMENTS]
        + [OpaqueFunction(function=_setup)]
    )
