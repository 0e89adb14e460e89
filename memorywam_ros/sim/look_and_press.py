"""Look-and-Press: a cue-memory task on the simulated ALOHA dual arm (issue 15 item 2). ROS-free.

Scene: gym-aloha's bimanual ViperX table (TransferCube's XML without the cube) plus

* a **signal panel**: a flat slab on the far part of the table and beyond it (y 0.77-1.45 m, where
  no arm goes): the top 37 % of gym-aloha's `top` (head) image at its 78 deg field of view, 27 % at
  our 50 deg workspace framing, ~1 % of each wrist image (measured at 256x320 / 128x160). It shows
  one of two cue colours, orange or blue, tuned to the same rendered luminance (so brightness alone
  does not give the cue away), during the cue period and is dark otherwise. The colour is switched
  at render time through the model's `geom_rgba`, from the time of the state rendered (`cue_lit`),
  so a snapshot rendered later still shows the panel as it was.
* two **buttons**: flat 8x8x2 cm boxes at x 0.15 m, y 0.35 m (blue) and 0.65 m (orange), 30 cm
  apart, both in the right arm's reach and in the head camera's view, tinted like their cue. They
  do not collide (a press is geometric, see below), so no contact physics can knock anything over.

Episode (time scale of the robot runtime, `memory_transfer`: control rows at 10 Hz, 16-row chunks,
row t > 0 belongs to latent frame ceil(t / 16), one latent frame = 1.6 s): the panel shows the cue
in latent frames `cue_start` .. `cue_start + cue_frames - 1` (e.g. 0-1, during the anchor frames, or
3-4, after them) and is dark before and after; the arms hold home; from chunk `cue_start +
cue_frames + delay_chunks` on the scripted right arm (`ScriptedLookAndPress`, `scripted.py`'s IK)
moves its tool point onto the cued button, holds it there 1 s and goes back home. The cue is drawn
from the episode seed (`cue_of_seed`); it is the only thing a seed changes (no object is placed at
random), so every episode is one of two: what varies is what the policy must remember.

Success (evaluated by the sim at gym-aloha's 20 ms control period, `_evaluate_reward`): a button is
*touched* while a tool point (either arm, `scripted.TCP_OFFSET`) is above its top face (within its
footprint + 1 cm) and at most `PRESS_HEIGHT_M` above it (or 1 cm into it); it is *pressed* once it
stays touched for `PRESS_HOLD_S` = 0.3 s. Success = the cued button pressed and the other one never
touched, even briefly. Reward levels (`stages.REWARD_STAGES["look_and_press"]`), from latched
flags, so `max_reward` is the episode's outcome: 4 success, 3 cued pressed but the other touched,
2 cued touched only, 1 only the wrong one touched, 0 nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
from dm_control import mujoco as dm_mujoco
from gym_aloha import constants as aloha_constants
from gym_aloha.tasks import sim as aloha_tasks

from memorywam_ros.sim.aloha import CAMERAS, GYM_ALOHA_HEAD_FOVY_DEG, AlohaSim, Observation
from memorywam_ros.sim.rows import CHUNK, frame_of_row
from memorywam_ros.sim.scripted import (
    CONTROL_HZ,
    GRIPPER_CLOSED,
    PICK_PITCH,
    TCP_OFFSET,
    ArmIK,
    Waypoint,
    dart_noise,
    interp_waypoints,
    tool_rotation,
)
from memorywam_ros.sim.stages import LOOK_AND_PRESS_TIMING

__all__ = [
    "BUTTON_XY",
    "CUES",
    "CUE_RGBA",
    "DARK_RGBA",
    "INSTRUCTION",
    "PRESS_HEIGHT_M",
    "PRESS_HOLD_S",
    "LookAndPressResult",
    "LookAndPressSim",
    "ScriptedLookAndPress",
    "cue_of_seed",
    "run_scripted_episode",
    "scene_xml",
]

CUES: tuple[str, ...] = ("orange", "blue")
"""Cue index -> name; cue i asks for button i."""

CUE_RGBA: dict[str, tuple[float, float, float, float]] = {
    "orange": (0.72, 0.30, 0.0, 1.0),
    "blue": (0.0, 0.523, 0.72, 1.0),
}
"""Panel colours; blue's green channel is tuned so both render at the same mean luminance (Rec. 601)
on the head camera (measured in test/test_sim_look_and_press.py). Channels stay below ~0.75 so the
lights (ambient + 4 diffuse, ~1.3x on a flat face) do not saturate them."""

DARK_RGBA = (0.02, 0.02, 0.02, 1.0)
BUTTON_XY: dict[str, tuple[float, float]] = {"orange": (0.15, 0.65), "blue": (0.15, 0.35)}
BUTTON_HALF = (0.04, 0.04, 0.01)  # box half sizes (m): 8x8 cm, 2 cm high, resting on the table (z = 0)
PANEL_CENTRE = (0.0, 1.11, 0.002)
PANEL_HALF = (1.0, 0.34, 0.002)  # y 0.77 .. 1.45: the far table part and the floor behind it
PRESS_HEIGHT_M = 0.04  # tool point at most this far above a button's top face
PRESS_DEPTH_M = 0.01  # ... or this far into it
PRESS_XY_MARGIN_M = 0.01  # ... and within its footprint grown by this
PRESS_HOLD_S = 0.3
PRESS_CLEARANCE_M = 0.025  # scripted press: tool point this far above the top (fingertips ~at the top)
CUE_START = LOOK_AND_PRESS_TIMING["cue_start"]
CUE_FRAMES = LOOK_AND_PRESS_TIMING["cue_frames"]
DELAY_CHUNKS = LOOK_AND_PRESS_TIMING["delay_chunks"]
INSTRUCTION = "look at the signal panel and press the button of the colour it showed with the right arm"

_PREFIXES = ("vx300s_left/", "vx300s_right/")
_EPS = 1e-6


def cue_of_seed(seed: int) -> int:
    """The episode's cue (index into CUES), drawn from its seed alone (independent of everything else)."""
    return int(np.random.default_rng([int(seed), 15_2]).integers(len(CUES)))


def scene_xml() -> str:
    """gym-aloha's TransferCube XML with the cube (and its keyframe) removed, the panel and buttons added."""
    xml = (Path(aloha_constants.ASSETS_DIR) / "bimanual_viperx_transfer_cube.xml").read_text()
    xml, n_box = re.subn(r'\s*<body name="box".*?</body>', "", xml, count=1, flags=re.S)
    xml, n_key = re.subn(r"\s*<keyframe>.*?</keyframe>", "", xml, count=1, flags=re.S)
    if n_box != 1 or n_key != 1:
        raise RuntimeError("gym-aloha's transfer-cube XML changed: no cube body / keyframe to remove")
    v = lambda xs: " ".join(f"{x:g}" for x in xs)  # noqa: E731
    # No specular / reflectance: a highlight would make the panel's brightness depend on the view.
    geoms = ['<material name="lp_matte" specular="0" shininess="0" reflectance="0"/>']
    body = [f'<body name="lp_panel" pos="{v(PANEL_CENTRE)}"><geom name="lp_panel" type="box" '
            f'size="{v(PANEL_HALF)}" rgba="{v(DARK_RGBA)}" material="lp_matte" contype="0" conaffinity="0"/></body>']
    for name, (x, y) in BUTTON_XY.items():
        rgba = (*(0.35 + 0.4 * c for c in CUE_RGBA[name][:3]), 1.0)
        body.append(f'<body name="lp_button_{name}" pos="{x:g} {y:g} {BUTTON_HALF[2]:g}"><geom name="lp_button_{name}" '
                    f'type="box" size="{v(BUTTON_HALF)}" rgba="{v(rgba)}" material="lp_matte" '
                    'contype="0" conaffinity="0"/></body>')
    xml = xml.replace("<worldbody>", "<asset>" + "".join(geoms) + "</asset>\n<worldbody>", 1)
    return xml.replace("</worldbody>", "\n".join(body) + "\n</worldbody>", 1)


def _assets() -> dict[str, bytes]:
    """gym-aloha's asset files (included XMLs, meshes) for compiling the edited XML from a string."""
    return {p.name: p.read_bytes() for p in Path(aloha_constants.ASSETS_DIR).iterdir() if p.is_file()}


class _LookAndPressGymTask(aloha_tasks.BimanualViperXTask):
    """gym-aloha's task API (gripper mapping, qpos) for the cube-less scene: arms at home, no reward of its own."""

    def initialize_episode(self, physics: dm_mujoco.Physics) -> None:
        with physics.reset_context():
            physics.named.data.qpos[:16] = aloha_constants.START_ARM_POSE
            np.copyto(physics.data.ctrl, aloha_constants.START_ARM_POSE)
        super().initialize_episode(physics)

    def get_reward(self, physics: dm_mujoco.Physics) -> int:
        return 0  # LookAndPressSim scores the presses itself


class LookAndPressSim(AlohaSim):
    """AlohaSim with the signal panel and two buttons; `reset(seed)` draws the cue, the sim scores presses.

    Built as `AlohaSim("transfer_cube")` with its own compiled scene (`_make_physics`) and gym task, so
    stepping, rendering, joint order and limits are AlohaSim's unchanged; `task_name` is
    "look_and_press". The cue timing is in latent frames (`cue_start`, `cue_frames`, 16 rows of 0.1 s).
    """

    def __init__(self, camera_sizes: Mapping[str, tuple[int, int]] | None = None, fast_render: bool = True,
                 head_fovy_deg: float = GYM_ALOHA_HEAD_FOVY_DEG, cue_start: int = CUE_START,
                 cue_frames: int = CUE_FRAMES, delay_chunks: int = DELAY_CHUNKS,
                 clock_on_engage: bool = False) -> None:
        if cue_start < 0 or cue_frames < 1 or delay_chunks < 0:
            raise ValueError(f"need cue_start >= 0, cue_frames >= 1, delay_chunks >= 0; got {cue_start}, "
                             f"{cue_frames}, {delay_chunks}")
        super().__init__("transfer_cube", camera_sizes=camera_sizes, fast_render=fast_render,
                         head_fovy_deg=head_fovy_deg)
        self.task_name = "look_and_press"
        self.instruction = INSTRUCTION
        self._task = _LookAndPressGymTask()
        self.cue_start = int(cue_start)
        self.cue_frames = int(cue_frames)
        self.delay_chunks = int(delay_chunks)
        self.row_dt = 1.0 / CONTROL_HZ
        self.clock_on_engage = bool(clock_on_engage)
        self._t0: float | None = 0.0  # sim time of the episode's row 0 (None: not engaged yet)
        m = self._model
        self._panel = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "lp_panel")
        self._gripper = [m.body(p + "gripper_link").id for p in _PREFIXES]
        self.cue = 0
        self._reset_presses()

    def _make_physics(self, xml_name: str) -> dm_mujoco.Physics:
        return dm_mujoco.Physics.from_xml_string(scene_xml(), assets=_assets())

    # ------------------------------------------------------------------ cue
    @property
    def cue_name(self) -> str:
        return CUES[self.cue]

    @property
    def press_start_row(self) -> int:
        """First control row of the chunk where the arm may start to move (after cue and delay)."""
        return CHUNK * (self.cue_start + self.cue_frames + self.delay_chunks)

    def cue_lit_row(self, row: int) -> bool:
        """Is the panel lit in the observation of control row `row` (its latent frame is a cue frame)?"""
        return self.cue_start <= frame_of_row(row) < self.cue_start + self.cue_frames

    def cue_lit(self, time_s: float | None = None) -> bool:
        """Panel lit at sim time `time_s` (default now): a time in (row t-1, row t] after the episode's
        row 0 belongs to row t; before the clock started (`engage`) it is row 0. Why row 0: the policy
        takes its first observation (row 0, latent frame 0 alone) *before* its first command, which
        starts the clock; in the demonstrations row 0 is the reset, so the panel must show there what
        row 0 shows (lit when the cue starts at frame 0, during the anchors; dark otherwise). Dark
        before the clock made a frame-0 cue invisible to the policy (measured: hybrid 4/10 closed loop,
        every blue cue answered orange, where it decided 50/50 open loop)."""
        t = self.time_s if time_s is None else time_s
        if self._t0 is None or t < self._t0 - _EPS:
            return self.cue_lit_row(0)
        return self.cue_lit_row(max(0, math.ceil((t - self._t0) / self.row_dt - _EPS)))

    def engage(self) -> None:
        """The robot took its first command of the episode. With `clock_on_engage` (the simulator node)
        the cue clock starts now, so the panel's timing is relative to the policy's own first
        observation, as in the demonstrations (whose row 0 is the reset), whatever the delay between a
        reset and the policy being enabled; otherwise (scripted runs) it started at the reset."""
        if self._t0 is None:
            self._t0 = self.time_s

    def _apply_panel(self, time_s: float) -> None:
        self._model.geom_rgba[self._panel] = CUE_RGBA[self.cue_name] if self.cue_lit(time_s) else DARK_RGBA

    def render(self, cameras: Sequence[str] = CAMERAS,
               data: mujoco.MjData | None = None) -> dict[str, np.ndarray]:
        """AlohaSim.render with the panel coloured for the rendered state's time (a snapshot's own)."""
        self._apply_panel(self.time_s if data is None else float(data.time))
        return super().render(cameras, data)

    # ------------------------------------------------------------------ episode
    def reset(self, seed: int | None = None, render: bool = True, cue: int | None = None) -> Observation:
        """New episode; the cue is `cue_of_seed(seed)` unless `cue` forces it (tests, balanced sets)."""
        if seed is None:
            seed = int(self._rng.integers(0, 2**31 - 1))
        self.cue = cue_of_seed(seed) if cue is None else int(cue)
        if self.cue not in range(len(CUES)):
            raise ValueError(f"cue {cue} not in 0..{len(CUES) - 1}")
        self._reset_presses()
        self._t0 = None if self.clock_on_engage else 0.0
        obs = super().reset(seed, render=render)
        self.physics.forward()  # body poses of the reset state (the press test reads them)
        return obs

    def _reset_presses(self) -> None:
        self.touched = dict.fromkeys(CUES, False)  # ever touched (any 20 ms sample)
        self.pressed = dict.fromkeys(CUES, False)  # touched continuously for PRESS_HOLD_S
        self._touch_since: dict[str, float | None] = dict.fromkeys(CUES, None)

    # ------------------------------------------------------------------ presses
    def tool_positions(self) -> np.ndarray:
        """(2, 3) world positions of the left and right tool points (between the finger pads)."""
        d = self.physics.data
        return np.stack([np.asarray(d.xpos[b]) + np.asarray(d.xmat[b]).reshape(3, 3) @ TCP_OFFSET
                         for b in self._gripper])

    def button_top(self, name: str) -> np.ndarray:
        """Centre of a button's top face (world, m)."""
        x, y = BUTTON_XY[name]
        return np.array([x, y, 2 * BUTTON_HALF[2]])

    def touching(self, name: str, tools: np.ndarray | None = None) -> bool:
        """Is a tool point on button `name` now (footprint + margin, height within the press band)?"""
        tools = self.tool_positions() if tools is None else tools
        d = tools - self.button_top(name)
        inside = np.all(np.abs(d[:, :2]) <= np.array(BUTTON_HALF[:2]) + PRESS_XY_MARGIN_M, axis=1)
        return bool(np.any(inside & (d[:, 2] <= PRESS_HEIGHT_M) & (d[:, 2] >= -PRESS_DEPTH_M)))

    def _evaluate_reward(self) -> None:
        """Called by AlohaSim.advance every 20 ms of sim time: update the touch / press flags and the reward."""
        tools = self.tool_positions()
        for name in CUES:
            if self.touching(name, tools):
                self.touched[name] = True
                since = self._touch_since[name]
                if since is None:
                    self._touch_since[name] = since = self.time_s
                if self.time_s - since >= PRESS_HOLD_S - _EPS:
                    self.pressed[name] = True
            else:
                self._touch_since[name] = None
        self._reward = self._max_reward = self.outcome_level()

    def outcome_level(self) -> int:
        """4 success, 3 cued pressed + other touched, 2 cued touched only, 1 only the wrong one touched, 0 none."""
        cued, other = CUES[self.cue], CUES[1 - self.cue]
        if self.pressed[cued]:
            return 3 if self.touched[other] else 4
        if self.touched[cued] and not self.touched[other]:
            return 2
        return 1 if self.touched[other] else 0


# ------------------------------------------------------------------------------------ scripted policy
class ScriptedLookAndPress:
    """Right arm: hold home until `sim.press_start_row`, then tool point above the button, down onto it,
    hold 1 s, up, back home; the left arm holds home. Joint targets (14,) at 10 Hz through `ArmIK`.

    `aim` (a CUES name) overrides the cued button: a wrong-button run for the failure test.
    """

    REACH_S, DOWN_S, HOLD_S, UP_S, HOME_S = 1.5, 0.8, 1.0, 0.6, 1.4
    ABOVE_M = 0.10

    def __init__(self, hz: float = CONTROL_HZ, tail_s: float = 1.0, aim: str | None = None) -> None:
        if aim is not None and aim not in CUES:
            raise ValueError(f"aim {aim!r} not in {CUES}")
        self.hz = hz
        self.tail_s = tail_s
        self.aim = aim
        self._start_row = 0

    @property
    def press_s(self) -> float:
        return self.REACH_S + self.DOWN_S + self.HOLD_S + self.UP_S + self.HOME_S

    @property
    def num_steps(self) -> int:
        return self._start_row + round((self.press_s + self.tail_s) * self.hz)

    def reset(self, sim: LookAndPressSim) -> None:
        if sim.task_name != "look_and_press":
            raise ValueError("ScriptedLookAndPress needs a LookAndPressSim")
        self._ik = ArmIK(sim.model, 1)
        q = sim.qpos
        self._home = q.copy()
        self._q_arm = q[7:13].copy()
        self._start_row = sim.press_start_row
        home_tool = self._ik.tool_pose(self._q_arm)[0]
        top = sim.button_top(self.aim or sim.cue_name) + np.array([0.0, 0.0, PRESS_CLEARANCE_M])
        above = top + np.array([0.0, 0.0, self.ABOVE_M])
        t0 = self._start_row / self.hz
        times = np.cumsum([t0, self.REACH_S, self.DOWN_S, self.HOLD_S, self.UP_S, self.HOME_S])
        pitch = [0.0, PICK_PITCH, PICK_PITCH, PICK_PITCH, PICK_PITCH, 0.0]
        poses = [home_tool, above, top, top, above, home_tool]
        grip = [q[13], GRIPPER_CLOSED, GRIPPER_CLOSED, GRIPPER_CLOSED, GRIPPER_CLOSED, q[13]]
        self._plan = [Waypoint(float(t), p, a, g) for t, p, a, g in zip(times, poses, pitch, grip, strict=True)]
        self._i = 0

    def act(self, sim: LookAndPressSim) -> np.ndarray:
        """Next joint targets (14,): home until the start row, then the waypoint path through IK."""
        out = self._home.copy()
        if self._i > self._start_row:  # the start row holds where the arm is: no jump
            pos, pitch, roll, grip = interp_waypoints(self._plan, self._i / self.hz)
            rot = tool_rotation(1, pitch, self._ik.yaw_to(pos), roll)
            self._q_arm, _ = self._ik.solve(pos, rot, self._q_arm)
            out[13] = grip
        out[7:13] = self._q_arm
        self._i += 1
        return out


@dataclass
class LookAndPressResult:
    seed: int
    cue: str
    success: bool
    level: int  # LookAndPressSim.outcome_level at the end
    touched: dict[str, bool]
    pressed: dict[str, bool]
    lit_rows: list[int]  # control rows whose observation had the panel lit
    targets: np.ndarray  # (T, 14) at 10 Hz


def run_scripted_episode(sim: LookAndPressSim, seed: int, aim: str | None = None, hz: float = CONTROL_HZ,
                         dart: float = 0.0) -> LookAndPressResult:
    """One scripted episode without rendering (success check); `aim` presses that button instead of the
    cued one; `dart`: std (rad) of `scripted.dart_noise` on the executed arm targets (`targets` stay clean)."""
    sim.reset(seed, render=False)
    policy = ScriptedLookAndPress(hz, aim=aim)
    policy.reset(sim)
    noise = dart_noise(seed, policy.num_steps, dart)
    targets, lit = [], []
    for row in range(policy.num_steps):
        if sim.cue_lit():
            lit.append(row)
        q = policy.act(sim)
        targets.append(q)
        sim.step(q + noise[row], 1.0 / hz, render=False)
    return LookAndPressResult(seed, sim.cue_name, sim.success, sim.outcome_level(), dict(sim.touched),
                              dict(sim.pressed), lit, np.array(targets))
