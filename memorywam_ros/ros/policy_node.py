"""`memorywam_policy`: cameras + joint state in, safe 16-step chunks out at 10 Hz.

Threads and locks (why): the command stream runs on its own thread at absolute deadlines
(runtime/periodic.py), the model on one plain background thread (runtime/inference_worker.py), so a
slow chunk never delays a command. Everything else (camera/joint callbacks, services, parameters,
diagnostics) is short and runs on a SingleThreadedExecutor: rclpy's MultiThreadedExecutor busy-spins
holding the GIL while a mutually exclusive group is busy (measured: the 10 Hz stream stalled for up
to 0.8 s in-process), and nothing here needs parallel callbacks. `~/reset` waits for a running model
call (up to one inference, or until a signal stops the process) while the stream keeps holding on
its own thread; requests arriving meanwhile wait in a deep service queue (SERVICE_QUEUE_DEPTH), none
is dropped. Lock order, never reversed:
`_policy_lock` (model calls, reset) → `_lock` (node state, publishing commands) → `_result_lock`.

Start-up and shutdown (`main`): any start-up failure is one log line naming the file/part/parameter
(exit 1). SIGINT/SIGTERM only set a flag (process_control.SignalFlag says why); the spin loop sees it within 0.1 s,
then `shutdown` publishes the hold and the process exits within SHUTDOWN_BUDGET_S, model call or not.

Test seam: `PolicyNode(policy=...)` takes an already loaded Policy (tests share one and may wrap
its `act`, e.g. to return NaN); `node.policy` is that object.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import math
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from std_srvs.srv import SetBool, Trigger

from memorywam_ros.ros import conversions
from memorywam_ros.ros.diagnostics import publish_diagnostics
from memorywam_ros.ros.inputs import CameraInput, Frame, JointInputs
from memorywam_ros.ros.launch_utils import dds_environment
from memorywam_ros.ros.params import CAMERA_NAMES, declare_parameters, resolve_robot_config
from memorywam_ros.ros.process_control import SignalFlag, force_exit_after, startup_error_line
from memorywam_ros.runtime.checkpoint import manifest_conflicts, manifest_lead
from memorywam_ros.runtime.chunk_executor import ChunkExecutor, check_lead
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
    committed: np.ndarray | None = None  # a committed-prefix model's input: the commands still to run


SHUTDOWN_BUDGET_S = 5.0  # the shutdown after SIGINT/SIGTERM ends within this, whatever still runs
SERVICE_QUEUE_DEPTH = 1000  # ~/enable and ~/reset requests kept while the executor is busy
MODEL_DTYPES = ("auto", "float32", "bfloat16", "float16")


def load_policy(params: Any) -> Any:
    import torch

    from memorywam_ros.runtime.policy import Policy

    device = params["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if params["dtype"] not in MODEL_DTYPES:
        raise ValueError(f"parameter dtype: {params['dtype']!r} is not one of {', '.join(MODEL_DTYPES)}")
    dtype = None if params["dtype"] == "auto" else getattr(torch, params["dtype"])
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
        self.lead = self._check_manifest(p)
        self.committed_prefix = int(getattr(self.policy, "committed_prefix", 0))  # = lead when > 0 (checked)
        self.executor_grid = ChunkExecutor(self.chunk_size, substeps, self.lead)
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
            "hold_ticks": RollingStats(),  # per chunk with a deadline (ticks held past its due tick)
        }
        self.command_meter = RateMeter()
        # deadline_chunks: chunks that had a deadline (not a segment's first); hold_ticks: their holds summed
        self.counters = {"chunks": 0, "rejected": 0, "errors": 0, "deadline_misses": 0, "deadline_chunks": 0,
                         "hold_ticks": 0, "stalls": 0}
        self._lead_warned = False
        self._stopping = False  # set from the signal handler (request_stop): callbacks stop waiting
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
            name: CameraInput(self, name, p[f"cameras.{name}.topic"], p[f"cameras.{name}.transport"], self.now_s,
                              p["camera_max_clock_offset_s"])
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
        # requests wait in the DDS history while the executor is busy (a ~/reset waits for a running
        # model call): the default depth of 10 (KEEP_LAST) silently dropped all but the last 10 of a
        # burst of 20 calls; SERVICE_QUEUE_DEPTH keeps every caller's request until it is answered
        srv_qos = QoSProfile(depth=SERVICE_QUEUE_DEPTH, reliability=ReliabilityPolicy.RELIABLE,
                             history=HistoryPolicy.KEEP_LAST)
        self.create_service(SetBool, "~/enable", self._srv_enable, qos_profile=srv_qos,
                            callback_group=self._cb_misc)
        self.create_service(Trigger, "~/reset", self._srv_reset, qos_profile=srv_qos, callback_group=self._cb_misc)
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

    def _check_manifest(self, p: Any) -> int:
        """The observation lead, after refusing a checkpoint whose manifest the parameters contradict
        (control rate, lead, cameras, joints, chunk size): its model only means anything on the
        grid it was trained on."""
        manifest = getattr(self.policy, "manifest", None)
        if manifest is None:  # an injected policy without a checkpoint directory (tests)
            return check_lead(max(0, p["observation_lead"]), self.chunk_size)
        lead = manifest_lead(manifest) if p["observation_lead"] < 0 else p["observation_lead"]
        problems = manifest_conflicts(manifest, {
            "control_rate_hz": p["control_rate_hz"],
            "observation_lead": lead,
            "cameras": list(CAMERA_NAMES),
            "action_dim": self.robot.num_joints,
            "chunk_size": self.chunk_size,
        })
        prefix = int(getattr(self.policy, "committed_prefix", 0))
        if prefix and prefix != lead:
            problems.append(f"its model takes the last {prefix} committed commands of the running chunk, which "
                            f"only exist with observation_lead {prefix} (not {lead})")
        if problems:
            where = getattr(self.policy, "directory", None) or p["model_path"]
            raise ValueError(
                f"checkpoint {where}/memorywam.json does not fit the node's parameters (control_rate_hz, "
                f"observation_lead, robot_config {self.robot.name}): " + "; ".join(problems)
            )
        return check_lead(lead, self.chunk_size)

    def _warn_if_lead_too_short(self) -> None:
        """Once: p99 inference latency longer than the lead means chunks start late (hold ticks)."""
        lat = self.stats["latency"]
        p99 = lat.percentile(99)
        if self._lead_warned or lat.count < 10 or p99 is None or p99 <= self.lead * self.step_s:
            return
        self._lead_warned = True
        fit = math.ceil(p99 / self.step_s - 1e-9)
        advice = (f"a checkpoint trained with observation_lead {fit} (memorywam-precompute --observation-lead "
                  f"{fit}) would fit" if fit < self.chunk_size else "no lead fits: inference takes longer than a chunk")
        self.get_logger().warning(
            f"p99 inference latency {p99 * 1e3:.0f} ms exceeds the observation lead {self.lead} "
            f"({self.lead * self.step_s * 1e3:.0f} ms): chunks start late and the arm holds; {advice}"
        )

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
        # a committed-prefix model is called as the control loop calls it: with its P commands
        committed = np.zeros((self.committed_prefix, self.robot.num_joints)) if self.committed_prefix else None
        for n in (1, 4):  # both observation shapes: the first frame alone, then four
            self.policy.observe(np.zeros((n, h, w, 3), np.uint8), np.zeros(self.robot.num_joints))
            self._act(committed)
        self.get_logger().info(f"warm-up inference done in {time.perf_counter() - t0:.2f} s")

    def _act(self, committed: np.ndarray | None) -> np.ndarray:
        """One model call; `committed` only for a committed-prefix model (injected policies without
        a prefix may take no argument)."""
        return self.policy.act() if committed is None else self.policy.act(committed=committed)

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
            # a measured pose far outside the limits (bad encoder word, driver bug): hold like a stale input
            pose = self.safety.check_measured(self.joints.vector()) if not stale else None
            if stale or not pose.ok:
                if not self._stalled:
                    self._stalled = True
                    self.counters["stalls"] += 1
                    self._abort_cycle()
                self._set_state("holding", f"stale input: {', '.join(stale)}" if stale
                                else f"untrusted joint state: {pose.reason}")
                self._publish_command(self._hold_target())
                return
            if self._stalled:
                self._stalled = False
                self.executor_grid.resume(self._hold_target())
                self._set_state("running", "inputs back; holding for one chunk of fresh observations")
            if self.executor_grid.needs_chunk:  # checked against the joints it really starts from
                self._take_result()
            tick = self.executor_grid.tick(now)
            if tick.gap is not None:
                self.stats["gap"].add(tick.gap)
            if tick.hold_ticks is not None:
                self.stats["hold_ticks"].add(tick.hold_ticks)
                self.counters["deadline_misses"] += int(tick.hold_ticks > 0)
                self.counters["deadline_chunks"] += 1
                self.counters["hold_ticks"] += tick.hold_ticks
            sample = self._capture() if tick.sample else None
            self._samples.extend([sample] * tick.sample)
            if tick.submit:
                instr, self._pending_instruction = self._pending_instruction, None
                committed = None
                if self.committed_prefix:  # the commands that run while this frame's chunk is computed
                    committed = (tick.committed if tick.committed is not None
                                 else np.tile(self._hold_target(), (self.committed_prefix, 1)))
                req = _Request(self._generation, self._samples, tick.first, instr, committed)
                self._samples = [sample] * tick.carry  # rows before the first repeat it
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
            chunk = self._act(req.committed)
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
            pose = self.safety.check_measured(measured)
            if not pose.ok:
                return False, f"{pose.reason}; not enabled"
            # hold where the robot is, clipped into the limits (a pose in the tolerance band steps
            # back by at most position_tolerance): never a command outside the limits, never a jump
            self._last_cmd = self.safety.clamp_position(measured)
            self._enabled, self._stalled = True, False
            self.executor_grid.resume(self._last_cmd)
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

    def request_stop(self) -> None:
        """The process is shutting down (called in the signal handler: sets a flag, nothing else)."""
        self._stopping = True

    def reset_episode(self, instruction: str | None = None) -> tuple[bool, str]:
        """New episode: clear the memory and the VAE stream; waits for a running inference to end.

        The wait runs on the executor thread, so it gives up once a signal asked the process to stop:
        otherwise the shutdown (the hold included) would wait for the model call, however long."""
        while not self._policy_lock.acquire(timeout=0.1):
            if self._stopping:
                return False, "shutting down: episode not reset"
        try:
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
        finally:
            self._policy_lock.release()
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
        self._warn_if_lead_too_short()
        if self._autostart_pending and self.enable()[0]:
            self._autostart_pending = False
        publish_diagnostics(self)

    def shutdown(self) -> None:
        """Disable (timer first, hold last), let the hold reach subscribers, stop the threads.

        Bounded (about 2 s): a running model call is not waited for (the inference thread is a
        daemon and its result is dropped: the generation changed with the hold).
        """
        self.disable("shutdown")
        for pub in self._command_pubs:
            # best effort: the hold was published; an old rmw may not support acks
            with contextlib.suppress(Exception):
                pub.wait_for_all_acked(Duration(seconds=0.5))
        self._control_loop.close(timeout=1.0)
        self._worker.stop(timeout=0.2)
        if self.realsense is not None:
            self.realsense.stop()


def main(args: list[str] | None = None) -> int:
    signals = SignalFlag(SHUTDOWN_BUDGET_S)
    signals.install()
    logger = rclpy.logging.get_logger("memorywam_policy")
    node = None
    os.environ.update(dds_environment())  # large camera images (config/fastdds_profile.xml says why)
    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        node = PolicyNode()
        signals.on_stop = node.request_stop
        signals.spinning = True  # from here a signal stops the spin loop: hold, then exit
    except KeyboardInterrupt:
        logger.info("interrupted during start-up")
        rclpy.try_shutdown()
        return 0
    except Exception as err:
        logger.fatal(startup_error_line(err))
        logger.debug(traceback.format_exc())
        rclpy.try_shutdown()
        return 1
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    code = 0
    try:
        while not signals.stop_requested and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)  # the timeout bounds the reaction to a signal
    except ExternalShutdownException:
        pass
    except Exception as err:  # a callback raised: hold and exit non-zero, one line
        logger.error(f"stopping: {type(err).__name__}: {err}")
        logger.debug(traceback.format_exc())
        code = 1
    signals.stop_requested = True
    watchdog = force_exit_after(SHUTDOWN_BUDGET_S, logger)
    node.shutdown()
    busy = node._worker.alive
    executor.shutdown(timeout_sec=1.0)
    node.destroy_node()
    rclpy.try_shutdown()
    watchdog.cancel()
    if busy:
        # a model call is still running on the daemon inference thread: interpreter finalisation
        # would wait on / tear down torch under it; the hold is out and everything ROS is closed
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
