"""Bring up the MemoryWAM policy on the robot (or the simulator), optionally cameras and a recorder.

    ros2 launch memorywam_ros bringup.launch.py model_path:=/data/ckpt
    ros2 launch memorywam_ros bringup.launch.py model_path:=/data/ckpt use_realsense:=true \
        head_serial:=_123 left_wrist_serial:=_456 right_wrist_serial:=_789 record:=true
    ros2 launch memorywam_ros bringup.launch.py model_path:=/data/ckpt sim:=true

The policy starts disabled: `ros2 service call /memorywam_policy/enable std_srvs/srv/SetBool "{data: true}"`.
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

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
from memorywam_ros.sim.sim_setup import sim_node_parameters

SHARE = package_share()
CONFIG = SHARE / "config"

ARGUMENTS = [
    ("model_path", "", "checkpoint directory (required)"),
    ("params_file", str(CONFIG / "memorywam.yaml"), "policy node parameters"),
    ("robot_config", "", "robot description YAML; empty: arx_x5_dual.yaml, or aloha_sim.yaml with sim:=true"),
    ("instruction", "", "task instruction (empty: the params file's / the checkpoint's first)"),
    ("autostart", "false", "enable the policy without a ~/enable call"),
    ("command_rate_hz", "10.0", "streamed command rate (integer multiple of 10; >10 interpolates)"),
    *REALSENSE_ARGUMENTS,
    ("record", "false", "also run `ros2 bag record` (mcap, zstd_fast)"),
    ("bag_output", "", "bag directory (empty: rosbag2_<timestamp>)"),
    ("sim", "false", "start the MuJoCo simulator memorywam_sim and use config/robots/aloha_sim.yaml"),
]

# the policy node's own outputs are recorded too when it runs, to review what it commanded
POLICY_TOPICS = ["/memorywam_policy/action_chunk", "/memorywam_policy/joint_command", "/diagnostics"]


def _setup(context, *args, **kwargs):
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    sim = launch_true(arg["sim"])
    # every node started here uses the shipped Fast DDS profile (large camera images; unless set)
    actions = [SetEnvironmentVariable(k, v) for k, v in dds_environment().items()]
    robot_config = arg["robot_config"] or str(CONFIG / "robots" / ("aloha_sim.yaml" if sim else "arx_x5_dual.yaml"))
    overrides = {
        "model_path": arg["model_path"],
        "robot_config": robot_config,
        "autostart": launch_true(arg["autostart"]),
        "command_rate_hz": float(arg["command_rate_hz"]),
    }
    if arg["instruction"]:
        overrides["instruction"] = ParameterValue(arg["instruction"], value_type=str)
    if sim:
        # the simulator publishes exactly the default camera topics of config/memorywam.yaml
        # the task and head framing the checkpoint's demos were recorded with (its sim.json), else the sim's defaults
        sim_params = sim_node_parameters(arg["model_path"]) if arg["model_path"] else {}
        actions.append(Node(package="memorywam_ros", executable="memorywam_sim", name="memorywam_sim",
                            output="screen", parameters=[sim_params] if sim_params else []))
    else:
        actions.extend(realsense_launch_nodes(arg))
    actions.append(Node(
        package="memorywam_ros", executable="memorywam_policy", name="memorywam_policy", output="screen",
        parameters=[arg["params_file"], overrides],
    ))
    if launch_true(arg["record"]):
        topics_file = CONFIG / ("record_topics_sim.yaml" if sim else "record_topics.yaml")
        topics = record_topics(topics_file, extra=POLICY_TOPICS)
        qos = CONFIG / "record_qos_overrides.yaml"
        actions.extend(bag_record_actions(topics, qos if qos.is_file() else None, arg["bag_output"]))
    return actions


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=desc) for name, default, desc in ARGUMENTS]
        + [OpaqueFunction(function=_setup)]
    )
