"""Simulated dual-arm robot (gym-aloha / MuJoCo) for demos and closed-loop tests. ROS-free.

Submodules import MuJoCo lazily on use: `aloha` (the simulator), `scripted` (a scripted TransferCube
policy), `demos` (scripted episodes written as rosbag2 MCAP bags, `memorywam-sim-demos`).
"""
