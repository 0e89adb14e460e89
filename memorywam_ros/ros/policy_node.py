"""`memorywam_policy`: cameras + joint state in, safe 16-step chunks out at 10 Hz.

Threads and locks (why): the command stream runs on its own thread at absolute deadlines
(runtime/periodic.py), the model on one plain background thread (runtime/inference_worker.py), so a
slow chunk never delays a command. Everything else (camera/joint callbacks, services, parameters,
diagnostics) is short and runs on a SingleThreadedExecutor: rclpy's MultiThreadedExecutor busy-spins
holding the GIL while a mutually exclusive group is busy (measured: the 10 Hz stream stalled for up
to 0.8 s in-process), and nothing here needs parallel callbacks. `~/reset` waits for a running model
call (up to one inference) while the stream keeps holding on its own thread. Lock order, never reversed:
`_policy_lock` (model calls, reset) → `_lock` (node state, publishing commands) → `_result_lock`.

Test seam: `PolicyNode(policy=...)` takes an already loaded Policy (tests share one and may wrap
its `act`, e.g. to return NaN); `node.policy` is that object.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import math
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from std_srvs.srv import SetBool, Trigger

from memorywam_ros.ros import conversions
from memorywam_ros.ros.diagnostics import publish_diagnostics
from memorywam_ros.ros.inputs import CameraInput, Frame, JointInputs
from memorywam_ros.ros.params import CAMERA_NAMES, declare_parameters, resolve_robot_config
from memorywam_ros.runtime.chunk_executor import ChunkExecutor
from memorywam_ros.runtime.inference_worker import InferenceWorker, Job, JobResult
from memorywam_ros.runtime.node_stats import RateMeter, RollingStats
from memorywam_ros.runtime.periodic import PeriodicThread
from memorywam_ros.runtime.robot_config import RobotConfig
from memorywam_ros.runtime.safety import JointLimits, SafetyFilter, stale_inputs

__all__ = ["PolicyNode", "main"]


@dataclass
class _Sample:
    frames: dict[str, Frame]
    joints: np.ndarray
    stamp: Any  # builtin_interfaces/Time of the control tick


@dataclass
class _Request:
    generation: int
    samples: list[_Sample]
    first: bool
    instruction: str | None  # reset the policy with this instruction before observing


def load_policy(params: Any) -> Any:
    import torch

    from memorywam_ros.runtime.policy import Policy

    device = params["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = None if params["dtype"] == "auto" else getattr(torch, params["dtype"], None)
    if params["dtype"] != "auto" and not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype {params['dtype']!r} is not a torch dtype (float32, bfloat16, float16)")
    if not params["model_path"]:
        raise ValueError("parameter model_path is required (a checkpoint directory)")
    return Policy.from_pretrained(
        params["model_path"], device=device, dtype=dtype, num_steps=params["num_steps"] or None, seed=params["seed"]
    )


class PolicyNode(Node):
    def __init__(self, policy: Any = None, **kwargs: Any) -> None:
        super().__init__("memorywam_policy", **kwargs)
        self.params = p = declare_parameters(self)
        self.robot = RobotConfig.from_yaml(resolve_robot_config(p["robot_config"]))
        if p["torch_threads"] > 0:
            import torch

            torch.set_num_threads(p["torch_threads"])
        self.policy = policy if policy is not None else load_policy(p)
        self.chunk_size = int(self.policy.chunk_size)
        if int(self.policy.action_dim) != self.robot.num_joints:
            raise ValueError(
                f"checkpoint predicts {self.policy.action_dim} joints, robot config "
                f"{self.robot.name} has {self.robot.num_joints}"
            )
        self.step_s = 1.0 / p["control_rate_hz"]
        substeps = round(p["command_rate_hz"] / p["control_rate_hz"])
        if substeps < 1 or not math.isclose(substeps * p["control_rate_hz"], p["command_rate_hz"], rel_tol=1e-6):
            raise ValueError("command_rate_hz must be an integer multiple of control_rate_hz")
        self.command_dt = self.step_s / substeps
        self.safety = SafetyFilter(JointLimits.from_robot(self.robot), self.command_dt)
        self.executor_grid = ChunkExecutor(self.chunk_size, substeps)
        self.timeouts = {"camera": p["camera_timeout_s"], "joint": p["joint_timeout_s"]}

        self._policy_lock = threading.Lock()
        self._lock = threading.RLock()
        self._log_queue: collections.deque[str] = collections.deque(maxlen=100)
        self._result_lock = threading.Lock()
        self._generation = 0
        self._enabled = False
        self._autostart_pending = bool(p["autostart"])
        self._stalled = False
        self._last_cmd: np.ndarray | None = None
        self._samples: list[_Sample] = []
        self._result: JobResult | None = None
        self._pending_instruction: str | None = None
        self.state, self.reason = "disabled", "waiting for ~/enable"
        self.stats = {
            "latency": RollingStats(),
            "model": RollingStats(),
            "mosaic": RollingStats(),
            "gap": RollingStats(),
        }
        self.command_meter = RateMeter()
        self.counters = {"chunks": 0, "rejected": 0, "errors": 0}
        self.cache_bytes = int(getattr(self.policy, "cache_bytes", 0))
        self.last_latency: dict[str, float] = {}

        self.instruction = self._initial_instruction(p["instruction"])
        if p["warmup"]:
            self._warmup()
        self.policy.reset(self.instruction)
        self.executor_grid.restart_episode()

        # callback groups: control alone, inputs reentrant, everything else serialised
        self._cb_control = MutuallyExclusiveCallbackGroup()
        self._cb_inputs = ReentrantCallbackGroup()
        self._cb_misc = MutuallyExclusiveCallbackGroup()

        self.cameras = {
            name: CameraInput(self, name, p[f"cameras.{name}.topic"], p[f"cameras.{name}.transport"], self.now_s)
            for name in CAMERA_NAMES
        }
        self.realsense = None
        if p["camera_source"] == "realsense":
            from memorywam_ros.ros.realsense_source import RealSenseSource

            serials = {name: p[f"cameras.{name}.serial"] for name in CAMERA_NAMES}
            self.realsense = RealSenseSource(
                serials, p["realsense.width"], p["realsense.height"], p["realsense.fps"],
                on_frame=lambda name, rgb, stamp: self.cameras[name].update(rgb, stamp),
                log=self.get_logger(),
            )
            self.realsense.start()
        else:
            for cam in self.cameras.values():
                cam.subscribe(self._cb_inputs)
        self.joints = JointInputs(self, self.robot.state, self.robot.num_joints, self.now_s)
        self.joints.subscribe(self._cb_inputs)

        self._writers = [conversions.CommandWriter(s) for s in self.robot.command]
        self._command_pubs = [self.create_publisher(w.msg_type, w.spec.topic, 10) for w in self._writers]
        from trajectory_msgs.msg import JointTrajectory

        self._traj_pub = self.create_publisher(JointTrajectory, "~/action_chunk", 10)
        from diagnostic_msgs.msg import DiagnosticArray

        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(SetBool, "~/enable", self._srv_enable, callback_group=self._cb_misc)
        self.create_service(Trigger, "~/reset", self._srv_reset, callback_group=self._cb_misc)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._worker = InferenceWorker(self._infer, self._on_result)
        # the command stream runs on its own thread at absolute deadlines (runtime/periodic.py says why);
        # it is started by ~/enable: nothing is commanded before that
        self._control_loop = PeriodicThread(self.command_dt, self._on_control_tick, self._on_tick_error,
                                            name="memorywam_control")
        self.create_timer(p["diagnostics_period_s"], self._on_diagnostics, self._cb_misc)
        # torch, diffusers, the model and the message modules leave ~4e5 long-lived Python objects;
        # a full (gen 2) garbage collection walks all of them holding the GIL: measured 0.1-0.4 s on
        # the 2-core build machine, i.e. missed command ticks. Frozen after start-up, later
        # collections only walk objects created since (measured: microseconds).
        gc.collect()
        gc.freeze()
        self.get_logger().info(
            f"ready: robot {self.robot.name} ({self.robot.num_joints} joints), instruction "
            f"{self.instruction!r}, commands at {1 / self.command_dt:.0f} Hz on "
            f"{[s.topic for s in self.robot.command]}; call ~/enable to start"
        )

    # -- helpers -----------------------------------------------------------------------------
    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _initial_instruction(self, value: str) -> str:
        known = list(self.policy.instructions)
        if not value:
            if not known:
                return ""
            self.get_logger().info(f"instruction not set: using the checkpoint's first, {known[0]!r}")
            return known[0]
        if value not in known:
            raise ValueError(f"instruction {value!r} is not in the checkpoint; known: {known}")
        return value

    def _warmup(self) -> None:
        h, w = self.policy.image_size
        t0 = time.perf_counter()
        self.policy.reset(self.instruction)
        for n in (1, 4):  # both observation shapes: the first frame alone, then four
            self.policy.observe(np.zeros((n, h, w, 3), np.uint8), np.zeros(self.robot.num_joints))
            self.policy.act()
        self.get_logger().info(f"warm-up inference done in {time.perf_counter() - t0:.2f} s")

    def _set_state(self, state: str, reason: str) -> None:
        if (state, reason) != (self.state, self.reason) and state in ("holding", "error"):
            # logged from the diagnostics timer, not here: an rclpy log call (rosout publisher, log
            # file) measured 0.4-2 s on the 2-core test machine, far longer than a command period
            self._log_queue.append(f"{state}: {reason}")
        self.state, self.reason = state, reason

    def _flush_log(self) -> None:
        while self._log_queue:
            self.get_logger().warning(self._log_queue.popleft(), throttle_duration_sec=2.0)

    def input_ages(self, now: float) -> dict[str, float | None]:
        ages = {name: cam.age(now) for name, cam in self.cameras.items()}
        ages.update(self.joints.ages(now))
        return ages

    def _stale(self, now: float) -> list[str]:
        ages = self.input_ages(now)
        timeouts = {k: self.timeouts["joint" if k.startswith("joints:") else "camera"] for k in ages}
        return stale_inputs(ages, timeouts)

    def _hold_target(self) -> np.ndarray | None:
        return self._last_cmd if self._last_cmd is not None else self.joints.vector()

    def _publish_command(self, target: np.ndarray) -> None:
        """Clamp (position, then velocity w.r.t. the last command) and stream. Caller holds _lock."""
        last = self._last_cmd if self._last_cmd is not None else self.joints.vector()
        if last is None:
            return
        cmd = self.safety.clamp(target, last)
        stamp = self.get_clock().now().to_msg()
        for writer, pub in zip(self._writers, self._command_pubs):
            pub.publish(writer.build(cmd, stamp))
        self._last_cmd = cmd
        self.command_meter.tick(self.now_s())

    # -- the control loop --------------------------------------------------------------------
    def _on_control_tick(self) -> None:
        with self._lock:
            if not self._enabled:
                return
            now = self.now_s()
            stale = self._stale(now)
            if stale:
                if not self._stalled:
                    self._stalled = True
                    self._abort_cycle()
                self._set_state("holding", f"stale input: {', '.join(stale)}")
                self._publish_command(self._hold_target())
                return
            if self._stalled:
                self._stalled = False
                self.executor_grid.resume(self._hold_target())
                self._set_state("running", "inputs back; holding for one chunk of fresh observations")
            self._take_result()
            tick = self.executor_grid.tick(now)
            if tick.gap is not None:
                self.stats["gap"].add(tick.gap)
            if tick.sample:
                self._samples.append(self._capture())
            if tick.submit:
                instr, self._pending_instruction = self._pending_instruction, None
                req = _Request(self._generation, self._samples, tick.first, instr)
                self._samples = []
                self._worker.submit(Job(self._generation, req))
            self._publish_command(tick.target if tick.target is not None else self._hold_target())

    def _on_tick_error(self, err: BaseException) -> None:
        """An exception in the command loop: hold and report (the loop keeps running)."""
        with self._lock:
            self._set_state("error", f"control tick failed: {type(err).__name__}: {err}")
            hold = self._hold_target()
            if self._enabled and hold is not None:
                self._publish_command(hold)

    def _abort_cycle(self) -> None:
        """Drop the running chunk, the partial observation and any inference in flight."""
        self.executor_grid.stall()
        self._generation += 1
        self._samples = []

    def _capture(self) -> _Sample:
        frames = {name: cam.latest for name, cam in self.cameras.items()}
        joints = self.joints.vector()
        assert joints is not None and all(f is not None for f in frames.values())  # not stale
        return _Sample(frames, joints, self.get_clock().now().to_msg())  # type: ignore[arg-type]

    def _take_result(self) -> None:
        with self._result_lock:
            res, self._result = self._result, None
        if res is None or res.generation != self._generation or (res.error is None and res.value is None):
            return
        hold = self._hold_target()
        if res.error is not None:
            self.counters["errors"] += 1
            self._set_state("error", f"inference failed: {type(res.error).__name__}: {res.error}")
            self.executor_grid.deliver_hold(hold)
            return
        chunk, stamp = res.value
        verdict = self.safety.check_chunk(chunk, self.joints.vector(), self.chunk_size)
        if not verdict.ok:
            self.counters["rejected"] += 1
            self._set_state("holding", f"chunk not executed: {verdict.reason}")
            self.executor_grid.deliver_hold(hold)
            return
        chunk = self.safety.clamp_position(np.asarray(chunk, dtype=np.float64))
        self.executor_grid.deliver(chunk, start_pose=self._last_cmd if self._last_cmd is not None else hold)
        self._traj_pub.publish(conversions.chunk_to_trajectory(chunk, self.robot.joint_names, stamp, self.step_s))
        self.counters["chunks"] += 1
        self._set_state("running", "")

    # -- inference thread ----------------------------------------------------------------------
    def _infer(self, req: _Request) -> Any:
        from memorywam_ros.runtime.mosaic import compose_mosaic

        t0 = time.perf_counter()
        h, w = self.policy.image_size
        mosaics = np.stack([
            compose_mosaic(s.frames["head"].image(), s.frames["left_wrist"].image(), s.frames["right_wrist"].image(),
                           h, w)
            for s in req.samples
        ])
        t1 = time.perf_counter()
        with self._policy_lock:
            if req.generation != self._generation:  # reset or aborted since it was queued: stale job
                return None
            if req.instruction is not None:
                self.policy.reset(req.instruction)
            self.policy.observe(mosaics, req.samples[-1].joints)
            chunk = self.policy.act()
            self.cache_bytes = int(self.policy.cache_bytes)
            self.last_latency = dict(getattr(self.policy, "last_latency", {}) or {})
        t2 = time.perf_counter()
        self.stats["mosaic"].add(t1 - t0)
        self.stats["model"].add(t2 - t1)
        self.stats["latency"].add(t2 - t0)
        return np.asarray(chunk), req.samples[-1].stamp

    def _on_result(self, res: JobResult) -> None:
        with self._result_lock:
            self._result = res

    # -- services and parameters ---------------------------------------------------------------
    def _srv_enable(self, req: Any, resp: Any) -> Any:
        resp.success, resp.message = self.enable() if req.data else self.disable("disabled by ~/enable")
        return resp

    def enable(self) -> tuple[bool, str]:
        with self._lock:
            if self._enabled:
                return True, "already enabled"
            measured = self.joints.vector()
            stale_j = [k for k in self._stale(self.now_s()) if k.startswith("joints:")]
            if measured is None or stale_j:
                return False, f"no fresh joint state ({stale_j or 'never received'}); not enabled"
            self._last_cmd = measured  # hold where the robot is: the first command is no jump
            self._enabled, self._stalled = True, False
            self.executor_grid.resume(measured)
            self._set_state("running", "enabled")
            self._control_loop.start()
        self.get_logger().info("enabled")
        return True, "enabled"

    def disable(self, reason: str) -> tuple[bool, str]:
        with self._lock:
            if not self._enabled:
                return True, "already disabled"
            self._enabled = False
            # rosetta's ordering: stop the stream FIRST, then the hold is the last command sent
            self._control_loop.pause()
            self._abort_cycle()
            hold = self._hold_target()
            if hold is not None:
                self._publish_command(hold)
            self._set_state("disabled", reason)
        self.get_logger().info(f"disabled ({reason}); hold published")
        return True, "disabled; hold published"

    def _srv_reset(self, req: Any, resp: Any) -> Any:
        resp.success, resp.message = self.reset_episode()
        return resp

    def reset_episode(self, instruction: str | None = None) -> tuple[bool, str]:
        """New episode: clear the memory and the VAE stream; waits for a running inference to end."""
        with self._policy_lock:
            with self._lock:
                self._abort_cycle()
                self._pending_instruction = None
                if instruction is not None:
                    self.instruction = instruction
                self.executor_grid.restart_episode()
                if self._enabled:
                    self._set_state("running", "new episode")
            self.policy.reset(self.instruction)
            self.cache_bytes = int(self.policy.cache_bytes)
        return True, f"new episode, instruction {self.instruction!r}, cache_bytes {self.cache_bytes}"

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        for prm in params:
            if prm.name == "instruction":
                known = list(self.policy.instructions)
                if prm.value not in known:
                    return SetParametersResult(
                        successful=False, reason=f"unknown instruction {prm.value!r}; the checkpoint has {known}"
                    )
        for prm in params:
            if prm.name == "instruction" and prm.value != self.instruction:
                # applied in the inference thread before the next observation: no blocking here
                with self._lock:
                    self._abort_cycle()
                    self.instruction = self._pending_instruction = prm.value
                    self.executor_grid.restart_episode()
            elif prm.name == "camera_timeout_s":
                self.timeouts["camera"] = float(prm.value)
            elif prm.name == "joint_timeout_s":
                self.timeouts["joint"] = float(prm.value)
        return SetParametersResult(successful=True)

    def _on_diagnostics(self) -> None:
        self._flush_log()
        if self._autostart_pending and self.enable()[0]:
            self._autostart_pending = False
        publish_diagnostics(self)

    def shutdown(self) -> None:
        """Disable (timer first, hold last), let the hold reach subscribers, stop the threads."""
        self.disable("shutdown")
        for pub in self._command_pubs:
            # best effort: the hold was published; an old rmw may not support acks
            with contextlib.suppress(Exception):
                pub.wait_for_all_acked(Duration(seconds=0.5))
        self._control_loop.close()
        self._worker.stop(timeout=30.0)  # let a running model call finish
        if self.realsense is not None:
            self.realsense.stop()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(args: list[str] | None = None) -> None:
    # our own SIGINT/SIGTERM handling: rclpy's handler would shut the context down before we can
    # publish the hold command
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    node = None
    try:
        node = PolicyNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
