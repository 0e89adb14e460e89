"""`memorywam_policy` as its own process (the `python -m` entry, parameters from
config/memorywam.yaml), driven from a separate client node: SIGINT mid-chunk (also with the machine
loaded and a model call running, and a second Ctrl-C during the shutdown) exits cleanly within a
bound with the hold as the last command; a burst of 20 `~/reset` calls is answered in full; and
1280x720 rgb8 cameras from another process arrive at a good rate with the shipped Fast DDS profile."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2 pip wheels or a sourced ROS 2) needed")

import rclpy
from node_helpers import CAMERA_TOPICS, Driver, Recorder, wait_for, write_robot_config
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from std_srvs.srv import SetBool, Trigger

from memorywam_ros.ros.launch_utils import FASTDDS_PROFILE_VARS, dds_environment
from memorywam_ros.ros.process_control import SignalFlag

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]
EXIT_BOUND_S = 10.0  # SIGINT -> process gone (the node's own budget is 5 s; margin for a loaded CI)
# the node's real entry point, with every model call after the first stuck for 60 s (real act first):
# a model call that is running whenever the SIGINT comes and outlasts any shutdown budget
STUCK_MODEL_ENTRY = """
import sys, time
from memorywam_ros.runtime.policy import Policy
real_act, calls = Policy.act, []
def stuck_act(self):
    calls.append(1)
    if len(calls) > 1:
        print("model call stuck", flush=True)
        time.sleep(60.0)
    return real_act(self)
Policy.act = stuck_act
from memorywam_ros.ros.policy_node import main
sys.exit(main(sys.argv[1:]))
"""


class NodeProcess:
    """The node process, the fake driver process and an in-process recorder/client node."""

    def __init__(self, ckpt: Path, tmp_path: Path, params: tuple[str, ...] = (), driver_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, stuck_model: bool = False) -> None:
        cfg = write_robot_config(tmp_path / "robot.yaml")
        entry = ["-c", STUCK_MODEL_ENTRY] if stuck_model else ["-m", "memorywam_ros.ros.policy_node"]
        cmd = [
            sys.executable, *entry, "--ros-args",
            "--params-file", str(ROOT / "config" / "memorywam.yaml"),
            "-p", f"model_path:={ckpt}", "-p", f"robot_config:={cfg}",
            "-p", "torch_threads:=1", "-p", "warmup:=false",
        ] + [a for cam, topic in CAMERA_TOPICS.items() for a in ("-p", f"cameras.{cam}.topic:={topic}")]
        for p in params:
            cmd += ["-p", p]
        self.log = open(tmp_path / "node.log", "w+")  # noqa: SIM115 - read back on failure
        env = dict(os.environ if env is None else env)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        saved = dict(os.environ)
        os.environ.update(env)  # the driver (a camera driver stand-in) gets the same DDS environment
        try:
            self.driver = Driver(*driver_args)
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.ctx = Context()
        rclpy.init(context=self.ctx)
        self.robot = Recorder(self.ctx)
        self.ex = SingleThreadedExecutor(context=self.ctx)
        self.ex.add_node(self.robot)
        self.spin = threading.Thread(target=self.ex.spin, daemon=True)
        self.spin.start()
        assert self.robot.enable_client.wait_for_service(timeout_sec=60.0), "node did not come up"

    def enable(self) -> None:
        deadline = time.monotonic() + 30
        resp = None
        while time.monotonic() < deadline:  # the node may not have seen the joints yet
            fut = self.robot.enable_client.call_async(SetBool.Request(data=True))
            wait_for(fut.done, 10.0, "enable call")
            resp = fut.result()
            if resp.success:
                break
            time.sleep(0.3)
        assert resp is not None and resp.success, resp

    def commands(self) -> list[np.ndarray]:
        with self.robot.lock:
            return [c[1] for c in self.robot.commands]

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.ex.shutdown(timeout_sec=2.0)
        self.robot.destroy_node()
        rclpy.try_shutdown(context=self.ctx)
        self.driver.close()
        self.log.close()


@contextlib.contextmanager
def node_process(*args, **kwargs) -> Iterator[NodeProcess]:
    n = NodeProcess(*args, **kwargs)
    try:
        yield n
    except BaseException:
        print(n.output())
        raise
    finally:
        n.close()


@contextlib.contextmanager
def busy_machine() -> Iterator[None]:
    """One busy-looping process per core (a loaded robot PC / a CI machine during set-up)."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _sigint_and_check_hold(n: NodeProcess, second_sigint: bool = False) -> float:
    """SIGINT (and optionally a second one 0.3 s later, during the shutdown); -> seconds to exit."""
    t0 = time.monotonic()
    n.proc.send_signal(signal.SIGINT)
    if second_sigint:
        time.sleep(0.3)
        n.proc.send_signal(signal.SIGINT)
    rc = n.proc.wait(timeout=60)
    took = time.monotonic() - t0
    assert rc == 0, n.output()
    time.sleep(0.3)
    cmds = n.commands()
    assert len(cmds) >= 3
    # the hold repeats the last streamed target: the final message equals the one before it
    np.testing.assert_array_equal(cmds[-1], cmds[-2])
    assert "Traceback" not in n.output()
    return took


def test_process_sigint_publishes_hold_last(tiny_checkpoint, tmp_path) -> None:
    with node_process(tiny_checkpoint, tmp_path) as n:
        n.enable()
        wait_for(lambda: len(n.robot.chunks) >= 1, 60.0, "first chunk")
        time.sleep(0.5)  # mid-chunk
        assert _sigint_and_check_hold(n) < EXIT_BOUND_S


def test_process_sigint_under_load_is_bounded(tiny_checkpoint, tmp_path) -> None:
    """A model call is running (stuck for 60 s) and busy processes load every core: the node must
    still publish the hold and be gone within EXIT_BOUND_S, and a second Ctrl-C during that
    shutdown prints no traceback (the plain single SIGINT: test_process_sigint_publishes_hold_last)."""
    with node_process(tiny_checkpoint, tmp_path, stuck_model=True) as n:
        n.enable()
        wait_for(lambda: len(n.robot.chunks) >= 1, 60.0, "first chunk")
        with busy_machine():
            wait_for(lambda: "model call stuck" in n.output(), 30.0, "the second model call")
            time.sleep(0.5)  # the stuck model call runs on a loaded machine
            took = _sigint_and_check_hold(n, second_sigint=True)
        print(f"SIGINT -> exit took {took:.1f} s")
        assert took < EXIT_BOUND_S, f"exit took {took:.1f} s"
        # the second SIGINT may land after the process has gone (a fast machine exits in ~0.4 s);
        # what must hold either way: exit 0, hold last, no traceback (checked above). Its message
        # is pinned by test_signal_flag_second_signal_only_reports.



def test_process_sigint_while_a_reset_waits_for_the_model_is_bounded(tiny_checkpoint, tmp_path) -> None:
    """A ~/reset is being served (it waits for the running model call, stuck for 60 s, on the
    executor thread) when SIGINT comes: the shutdown must not wait for that model call either.
    Before: the spin loop never saw the signal until the model call ended (no hold, no exit in 40 s)."""
    with node_process(tiny_checkpoint, tmp_path, params=("diagnostics_period_s:=0.2",), stuck_model=True) as n:
        n.enable()
        wait_for(lambda: len(n.robot.chunks) >= 1, 60.0, "first chunk")
        wait_for(lambda: "model call stuck" in n.output(), 30.0, "the second model call")
        reset = n.robot.reset_client.call_async(Trigger.Request())

        def executor_blocked() -> bool:  # /diagnostics stop while the node's executor serves the reset
            with n.robot.lock:
                count = len(n.robot.diagnostics)
            time.sleep(1.0)
            with n.robot.lock:
                return len(n.robot.diagnostics) == count

        wait_for(executor_blocked, 30.0, "the reset waiting for the model call")
        assert not reset.done()
        took = _sigint_and_check_hold(n)
        print(f"SIGINT during a waiting ~/reset -> exit took {took:.1f} s")
        assert took < EXIT_BOUND_S, f"exit took {took:.1f} s"

def test_signal_flag_second_signal_only_reports(capsys) -> None:
    """Before spinning a signal interrupts (model loading: nothing to hold); once spinning the first
    only sets the flag and any further one only prints that the shutdown is running."""
    flag = SignalFlag(budget_s=5.0)
    with pytest.raises(KeyboardInterrupt):
        flag._handle(signal.SIGINT, None)
    assert flag.stop_requested
    flag, stops = SignalFlag(budget_s=5.0), []
    flag.on_stop = lambda: stops.append(1)  # the node's request_stop: a waiting ~/reset gives up
    flag.spinning = True
    flag._handle(signal.SIGINT, None)
    assert flag.stop_requested and capsys.readouterr().err == "" and stops == [1]
    flag._handle(signal.SIGINT, None)  # no raise
    assert "already shutting down (at most 5 s)" in capsys.readouterr().err and stops == [1]


def test_reset_flood_every_call_answered(tiny_checkpoint, tmp_path) -> None:
    """20 concurrent ~/reset calls (20 callers, as 20 `ros2 service call`s) while the node runs:
    every one is answered. The default service queue (KEEP_LAST 10) dropped about half."""
    with node_process(tiny_checkpoint, tmp_path) as n:
        n.enable()
        wait_for(lambda: len(n.robot.chunks) >= 1, 60.0, "first chunk")
        clients = [n.robot.create_client(Trigger, "/memorywam_policy/reset") for _ in range(20)]
        for c in clients:
            assert c.wait_for_service(timeout_sec=10.0)
        futures = [c.call_async(Trigger.Request()) for c in clients]
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not all(f.done() for f in futures):
            time.sleep(0.05)
        answered = [f.result() for f in futures if f.done()]
        assert len(answered) == 20, f"{len(answered)}/20 answered"
        assert all(r.success for r in answered)


def test_large_images_from_another_process_arrive(tiny_checkpoint, tmp_path) -> None:
    """1280x720 rgb8 cameras at 30 Hz from the fake driver process, both with the shipped profile
    (config/fastdds_profile.xml, as the launch files and memorywam-demo set it): the node's
    /diagnostics report a good rate for every camera. The node is not enabled (only reception)."""
    env = {k: v for k, v in os.environ.items() if k not in FASTDDS_PROFILE_VARS}
    env.update(dds_environment(env))
    assert any(env.get(k) for k in FASTDDS_PROFILE_VARS), "config/fastdds_profile.xml not found"
    with node_process(tiny_checkpoint, tmp_path, params=("diagnostics_period_s:=0.5",),
                      driver_args=("--height", "720", "--width", "1280"), env=env) as n:
        time.sleep(3.0)  # discovery and the first frames
        with n.robot.lock:
            n.robot.diagnostics.clear()
        time.sleep(6.0)
        with n.robot.lock:
            arrays = list(n.robot.diagnostics)
        samples: dict[str, list[float]] = {c: [] for c in CAMERA_TOPICS}
        for arr in arrays:
            for st in arr.status:
                if st.name.endswith(": inputs"):
                    vals = {kv.key: kv.value for kv in st.values}
                    for c in CAMERA_TOPICS:
                        samples[c].append(float(vals[f"{c}.rate_hz"]))
        rates = {c: float(np.median(v)) if v else 0.0 for c, v in samples.items()}
        assert all(r >= MIN_RATE_HZ for r in rates.values()), f"median camera rates at the node {rates}"


# 30 Hz published (measured at the node with the profile: 30/30/30 Hz; Fast DDS defaults: 24/24/15 Hz,
# on a busy 2-core machine both less: the Python driver serialising 3 x 2.8 MB per frame is the limit)
MIN_RATE_HZ = 20.0
