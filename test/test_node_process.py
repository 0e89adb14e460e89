"""`memorywam_policy` as its own process (the console-script entry, parameters from
config/memorywam.yaml): enable over the service, then SIGINT mid-chunk — the process exits cleanly
and the last command on the wire is the hold."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2 pip wheels or a sourced ROS 2) needed")

import rclpy
from node_helpers import CAMERA_TOPICS, Driver, Recorder, wait_for, write_robot_config
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from std_srvs.srv import SetBool

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]


def test_process_sigint_publishes_hold_last(tiny_checkpoint, tmp_path) -> None:
    cfg = write_robot_config(tmp_path / "robot.yaml")
    cmd = [
        sys.executable, "-m", "memorywam_ros.ros.policy_node", "--ros-args",
        "--params-file", str(ROOT / "config" / "memorywam.yaml"),
        "-p", f"model_path:={tiny_checkpoint}", "-p", f"robot_config:={cfg}",
        "-p", "torch_threads:=1", "-p", "warmup:=false",
    ] + [a for cam, topic in CAMERA_TOPICS.items() for a in ("-p", f"cameras.{cam}.topic:={topic}")]
    log = open(tmp_path / "node.log", "w+")  # noqa: SIM115 - read back on failure
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ), cwd=ROOT)
    driver = Driver()
    ctx = Context()
    rclpy.init(context=ctx)
    robot = Recorder(ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(robot)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    try:
        assert robot.enable_client.wait_for_service(timeout_sec=60.0), "node did not come up"
        deadline = time.monotonic() + 30
        resp = None
        while time.monotonic() < deadline:  # the node may not have seen the joints yet
            fut = robot.enable_client.call_async(SetBool.Request(data=True))
            wait_for(fut.done, 10.0, "enable call")
            resp = fut.result()
            if resp.success:
                break
            time.sleep(0.3)
        assert resp is not None and resp.success, resp
        wait_for(lambda: len(robot.chunks) >= 1, 60.0, "first chunk")
        time.sleep(0.5)  # mid-chunk
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        time.sleep(0.3)
        with robot.lock:
            cmds = [c[1] for c in robot.commands]
        assert len(cmds) >= 3
        # the hold repeats the last streamed target: the final message equals the one before it
        np.testing.assert_array_equal(cmds[-1], cmds[-2])
    except BaseException:
        log.seek(0)
        print(log.read())
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ex.shutdown(timeout_sec=2.0)
        robot.destroy_node()
        rclpy.try_shutdown(context=ctx)
        driver.close()
        log.close()
