"""Shared pytest set-up.

Every ROS 2 participant a test starts must stay on this machine: DDS discovery on localhost only
and a domain id of this run's own (DESIGN §7). Set before anything imports rclpy.
"""

from __future__ import annotations

import os

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
os.environ.setdefault("MUJOCO_GL", "egl")

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A complete random tiny checkpoint directory, made once per test session with the CLI's code."""
    from memorywam_ros.runtime.checkpoint import init_random

    return init_random(tmp_path_factory.mktemp("ckpt") / "tiny", preset="tiny")


@pytest.fixture(scope="session")
def tiny_policy(tiny_checkpoint):
    """One Policy on the tiny checkpoint for every policy-node graph test (nodes take it injected:
    `PolicyNode(policy=...)`); each node resets it when it starts."""
    from memorywam_ros.runtime.policy import Policy

    return Policy.from_pretrained(tiny_checkpoint, device="cpu")
