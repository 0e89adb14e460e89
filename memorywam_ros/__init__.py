"""memorywam_ros: the MemoryWAM world action model as a ROS 2 policy node.

Sub-packages: `model` (the network, torch only), `runtime` (inference without ROS),
`ros` (rclpy glue, the only place that imports rclpy), `sim` (simulated dual arm, no ROS).
"""

__version__ = "0.1.0"
