"""`AlohaSim`: the gym-aloha bimanual ViperX scene driven by absolute joint targets. ROS-free.

Why not `gym.make("gym_aloha/...")`: its `step` renders three 480x640 cameras every 20 ms
(~230 ms/step measured, eval-anchors §3) whether anyone looks or not. We keep gym-aloha's own
model XML, task classes (`TransferCubeTask.before_step` for the gripper mapping, `get_qpos`,
`get_reward` for success) and pose samplers, but step `physics` ourselves and render the three
cameras a robot has (`top` = head, `left_wrist`, `right_wrist`) only when asked, at mosaic size,
with shadows and reflections off, through one `mujoco.Renderer` per image size.

Rates: MuJoCo integrates at 2 ms (the XML's default timestep); gym-aloha's control period (and the
period at which it evaluates the reward) is 20 ms (50 Hz). `step(targets, dt)` holds `targets`
(zero-order hold, like a position-controlled arm receiving a streamed command) for `dt` seconds
rounded to whole 2 ms physics steps, evaluating the reward at every 20 ms boundary. Our policy
commands at 10 Hz (dt=0.1) or faster when its stream is interpolated; the caller picks dt.

Joint order (14): left waist, shoulder, elbow, forearm_roll, wrist_angle, wrist_rotate, left
gripper, then the same for the right arm. Arm joints are radians; grippers are gym-aloha's
normalised finger position (0 closed ... 1 open), the same unit in `qpos` and in targets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

# Headless rendering needs EGL; set before MuJoCo / dm_control pick a GL backend. An explicit user
# setting (e.g. osmesa, glfw on a desktop) wins.
os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
from dm_control import mujoco as dm_mujoco
from gym_aloha import constants as aloha_constants
from gym_aloha.tasks import sim as aloha_tasks
from gym_aloha.utils import sample_box_pose, sample_insertion_pose

from memorywam_ros.sim.sim_setup import HEAD_FOVY_RANGE_DEG
from memorywam_ros.sim.stages import MAX_REWARD, REWARD_STAGES  # noqa: F401 - re-exported

JOINT_NAMES: tuple[str, ...] = tuple(aloha_constants.JOINTS)
"""The 14 joint names (gym-aloha's), in our joint order."""

CAMERAS: tuple[str, ...] = ("top", "left_wrist", "right_wrist")
"""Rendered cameras (MJCF names). `top` plays the head camera."""

CAMERA_ROLES: dict[str, str] = {"head": "top", "left_wrist": "left_wrist", "right_wrist": "right_wrist"}
"""Mosaic role -> MJCF camera name."""

DEFAULT_CAMERA_SIZES: dict[str, tuple[int, int]] = {
    "top": (256, 320),
    "left_wrist": (128, 160),
    "right_wrist": (128, 160),
}
"""(height, width) per camera: exactly the mosaic tiles (DESIGN §1), so the mosaic never resizes."""

GYM_ALOHA_HEAD_FOVY_DEG = 78.0
"""gym-aloha's `top` camera: 0.8 m above the table looking straight down, 78° vertical field of view:
the whole table and ~40 % black floor; the 4 cm cube is ~8x8 px in the 256x320 head tile (half a
latent pixel of the 16x VAE)."""

WORKSPACE_HEAD_FOVY_DEG = 50.0
"""Our head framing of the workspace (same camera position and aim, narrower field of view): the
cube's sampling region and both grippers at home stay in view, no floor, and the cube is ~14x14 px
(`bench/sim_diagnosis.py probe` measures what each framing lets a linear probe read)."""

TASKS: dict[str, tuple[str, type]] = {
    "transfer_cube": ("bimanual_viperx_transfer_cube.xml", aloha_tasks.TransferCubeTask),
    "insertion": ("bimanual_viperx_insertion.xml", aloha_tasks.InsertionTask),
}

INSTRUCTIONS: dict[str, str] = {
    "transfer_cube": "pick up the red cube with the right arm and hand it over to the left arm",
    "insertion": "pick up the peg and the socket and insert the peg into the socket",
}
"""Language instruction recorded with each task's demos (the policy conditions on it)."""

CONTROL_DT = float(aloha_constants.DT)  # 0.02 s: gym-aloha's control / reward period


# Gripper index in each 7-joint arm block and the MJCF prefix of each arm.
_ARM_PREFIXES = ("vx300s_left/", "vx300s_right/")
_ARM_JOINTS = ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")


def _home_pose() -> np.ndarray:
    """gym-aloha's START_ARM_POSE (16 physics qpos, two fingers per arm) in our 14-joint units."""
    start = np.asarray(aloha_constants.START_ARM_POSE, dtype=np.float64)
    grip = aloha_constants.normalize_puppet_gripper_position
    return np.concatenate([start[0:6], [grip(start[6])], start[8:14], [grip(start[14])]])


@dataclass
class Observation:
    """What the robot would sense: camera images (only those rendered), joint positions, sim time."""

    images: dict[str, np.ndarray]  # camera name -> uint8 (H, W, 3) RGB
    qpos: np.ndarray  # (14,) float64, our joint order
    time_s: float  # simulated seconds since reset
    reward: int = 0  # the task's reward at the last evaluation (0..4)
    extras: dict[str, np.ndarray] = field(default_factory=dict)


class AlohaSim:
    """Bimanual ViperX (gym-aloha) with joint-position control and on-demand three-camera rendering."""

    def __init__(
        self,
        task: str = "transfer_cube",
        camera_sizes: Mapping[str, tuple[int, int]] | None = None,
        fast_render: bool = True,
        head_fovy_deg: float = GYM_ALOHA_HEAD_FOVY_DEG,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
        xml_name, task_cls = TASKS[task]
        self.task_name = task
        self.instruction = INSTRUCTIONS[task]
        self.physics = self._make_physics(xml_name)
        self._task = task_cls()
        self._model = self.physics.model.ptr
        self._data = self.physics.data.ptr
        self.physics_dt = float(self._model.opt.timestep)
        lo, hi = HEAD_FOVY_RANGE_DEG
        if not lo <= head_fovy_deg <= hi:
            raise ValueError(f"head_fovy_deg {head_fovy_deg} outside {lo:g}..{hi:g} degrees")
        self.head_fovy_deg = float(head_fovy_deg)
        self._model.cam_fovy[mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_CAMERA, "top")] = self.head_fovy_deg
        self._steps_per_control = round(CONTROL_DT / self.physics_dt)

        self.camera_sizes: dict[str, tuple[int, int]] = dict(DEFAULT_CAMERA_SIZES)
        if camera_sizes:
            unknown = set(camera_sizes) - set(CAMERAS)
            if unknown:
                raise ValueError(f"unknown cameras {sorted(unknown)}; known: {CAMERAS}")
            self.camera_sizes.update({k: (int(v[0]), int(v[1])) for k, v in camera_sizes.items()})
        self._fast_render = fast_render
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}

        self.joint_names: tuple[str, ...] = JOINT_NAMES
        self.joint_limits = self._limits_from_model()
        self.home = _home_pose()

        self._targets = self.home.copy()
        self._step_count = 0  # physics steps since reset
        self._reward = 0
        self._max_reward = 0
        self.seed: int | None = None
        self._rng = np.random.default_rng()

    # ------------------------------------------------------------------ model facts
    def _make_physics(self, xml_name: str) -> dm_mujoco.Physics:
        """Compile the scene: gym-aloha's XML as shipped (a subclass adds geoms here, e.g. look_and_press)."""
        return dm_mujoco.Physics.from_xml_path(str(aloha_constants.ASSETS_DIR / xml_name))

    def _limits_from_model(self) -> np.ndarray:
        """(14, 2) [lower, upper] from the MJCF joint ranges; grippers in normalised units."""
        limits = np.zeros((14, 2))
        for arm, prefix in enumerate(_ARM_PREFIXES):
            for j, name in enumerate(_ARM_JOINTS):
                limits[7 * arm + j] = self._model.joint(prefix + name).range
            finger = self._model.joint(prefix + "left_finger").range
            limits[7 * arm + 6] = aloha_constants.normalize_puppet_gripper_position(np.asarray(finger))
        return limits

    @property
    def model(self) -> mujoco.MjModel:
        return self._model

    @property
    def time_s(self) -> float:
        return self._step_count * self.physics_dt

    @property
    def qpos(self) -> np.ndarray:
        """(14,) joint positions in our order (grippers normalised)."""
        return np.asarray(self._task.get_qpos(self.physics), dtype=np.float64)

    @property
    def qvel(self) -> np.ndarray:
        return np.asarray(self._task.get_qvel(self.physics), dtype=np.float64)

    @property
    def env_state(self) -> np.ndarray:
        """Object poses (TransferCube: cube xyz + quat wxyz, 7 values)."""
        return np.asarray(self.physics.data.qpos[16:], dtype=np.float64).copy()

    @property
    def targets(self) -> np.ndarray:
        return self._targets.copy()

    @property
    def reward(self) -> int:
        """The task reward at its last evaluation (every 20 ms of sim time)."""
        return self._reward

    @property
    def max_reward(self) -> int:
        """Highest reward since reset (REWARD_STAGES says what it means)."""
        return self._max_reward

    @property
    def success(self) -> bool:
        """True once the episode reached reward 4 (gym-aloha terminates there with is_success)."""
        return self._max_reward >= MAX_REWARD

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None, render: bool = True) -> Observation:
        """New episode: arms at home, objects at gym-aloha's seeded pose sampler's pose."""
        if seed is None:
            seed = int(self._rng.integers(0, 2**31 - 1))
        self.seed = int(seed)
        # gym-aloha's tasks read the object pose from a module-level global during
        # initialize_episode (that is their API); set it right before the call.
        if self.task_name == "transfer_cube":
            aloha_tasks.BOX_POSE[0] = sample_box_pose(self.seed)
        elif self.task_name == "insertion":
            aloha_tasks.BOX_POSE[0] = np.concatenate(sample_insertion_pose(self.seed))
        self._task.random.seed(self.seed)
        self._task.initialize_episode(self.physics)
        self._targets = self.home.copy()
        self._step_count = 0
        self._reward = 0
        self._max_reward = 0
        return self.observe(render=render)

    def engage(self) -> None:
        """Called by the simulator node at the first command after a reset. Nothing here; a task
        whose events are timed from the robot's start overrides it (look_and_press.LookAndPressSim)."""

    def clip_targets(self, targets: np.ndarray) -> np.ndarray:
        """Clamp to the joint position limits (the actuators' ctrlrange equals these ranges)."""
        return np.clip(targets, self.joint_limits[:, 0], self.joint_limits[:, 1])

    def set_targets(self, targets: Sequence[float] | np.ndarray) -> np.ndarray:
        """Set the held joint targets (14,), clamped to the limits; returns what was set."""
        t = np.asarray(targets, dtype=np.float64).reshape(-1)
        if t.shape != (14,):
            raise ValueError(f"targets must have 14 values, got {t.shape}")
        if not np.all(np.isfinite(t)):
            raise ValueError("targets must be finite")
        self._targets = self.clip_targets(t)
        return self._targets.copy()

    def step(self, targets: Sequence[float] | np.ndarray | None, dt: float = 0.1, render: bool = True) -> Observation:
        """Hold `targets` (14,; None = keep the last ones) for `dt` s of sim time, then observe.

        dt is rounded to whole physics steps (2 ms); dt <= 0 only observes. Non-finite targets are
        rejected (ValueError) rather than handed to MuJoCo.
        """
        if targets is not None:
            self.set_targets(targets)
        self.advance(dt)
        return self.observe(render=render)

    def advance(self, dt: float) -> None:
        """Integrate `dt` seconds with the current targets; reward evaluated on the 20 ms grid."""
        n = round(dt / self.physics_dt) if dt > 0 else 0
        # Gripper mapping (normalised -> finger ctrl pair) is gym-aloha's own before_step.
        self._task.before_step(self._targets, self.physics)
        while n > 0:
            to_boundary = self._steps_per_control - self._step_count % self._steps_per_control
            k = min(n, to_boundary)
            self.physics.step(k)
            self._step_count += k
            n -= k
            if self._step_count % self._steps_per_control == 0:
                self._evaluate_reward()

    def _evaluate_reward(self) -> None:
        self._reward = int(self._task.get_reward(self.physics))
        self._max_reward = max(self._max_reward, self._reward)

    def observe(self, render: bool = True) -> Observation:
        images = self.render() if render else {}
        return Observation(images=images, qpos=self.qpos, time_s=self.time_s, reward=self._reward)

    # ------------------------------------------------------------------ rendering
    def _renderer(self, size: tuple[int, int]) -> mujoco.Renderer:
        r = self._renderers.get(size)
        if r is None:
            h, w = size
            if h > self._model.vis.global_.offheight or w > self._model.vis.global_.offwidth:
                # The offscreen buffer is sized from the model (640x480 here); grow it on demand.
                self._model.vis.global_.offheight = max(h, self._model.vis.global_.offheight)
                self._model.vis.global_.offwidth = max(w, self._model.vis.global_.offwidth)
            r = mujoco.Renderer(self._model, height=h, width=w)
            if self._fast_render:
                # Measured: shadows + reflections are most of the cost on llvmpipe (65-115 ms -> ~17 ms
                # for 256x320); the policy does not need them.
                r.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
                r.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
            self._renderers[size] = r
        return r

    def snapshot(self, into: mujoco.MjData | None = None) -> mujoco.MjData:
        """Copy of the simulation state (for rendering it elsewhere while physics goes on)."""
        if into is None:
            into = mujoco.MjData(self._model)
        mujoco.mj_copyData(into, self._model, self._data)
        return into

    def render(self, cameras: Sequence[str] = CAMERAS, data: mujoco.MjData | None = None) -> dict[str, np.ndarray]:
        """Render the named cameras at their configured sizes -> {name: uint8 (H, W, 3)}.

        `data`: a `snapshot()` to render instead of the live state. The GL contexts are created
        by (and bound to) the thread that renders first: render from one thread only (another
        thread gets EGL_BAD_ACCESS, measured), and `close()` from that thread.
        """
        out: dict[str, np.ndarray] = {}
        for cam in cameras:
            r = self._renderer(self.camera_sizes[cam])
            r.update_scene(self._data if data is None else data, camera=cam)
            out[cam] = r.render().copy()
        return out

    def close(self) -> None:
        """Free GL contexts now (letting them go at interpreter exit prints EGL errors)."""
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()

    def __enter__(self) -> AlohaSim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
