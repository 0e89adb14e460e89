"""Scripted TransferCube demonstrator: end-effector waypoints from the cube pose -> joint targets at 10 Hz.

Recipe (the ACT one, written here from scratch): the right arm reaches above the cube, descends,
closes, lifts the cube to a meeting point in the middle; the left arm comes in from the side,
closes on the cube, the right gripper opens and backs off. Waypoints are tool-point poses; each
10 Hz sample is converted to joints by damped-least-squares IK on a private `MjData` of the sim's
own model (joint model, no mocap), warm-started from the previous sample. The plan is open loop
from the initial cube position (privileged state), and the env's reward decides success.

The output is what a teleoperator's command stream would be: absolute joint targets (14,) at
10 Hz, held (zero-order) by the arm between samples — the same way `AlohaSim.step(targets, 0.1)`
and the ROS sim node execute the policy's stream, so the demos' actions are executable as is.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import mujoco
import numpy as np

from memorywam_ros.sim.aloha import AlohaSim

CONTROL_HZ = 10.0
# Tool point in the gripper_link frame: between the finger pads (the finger meshes sit at
# x ≈ 0.09-0.14 m, measured from the model's geom boxes).
TCP_OFFSET = np.array([0.115, 0.0, 0.0])
GRIPPER_OPEN = 1.0
GRIPPER_CLOSED = 0.0  # below the joint limit on purpose: the fingers squeeze until contact

_PREFIX = ("vx300s_left/", "vx300s_right/")


@dataclass
class Waypoint:
    """Tool pose of one arm at time t (s): position (world, m), pitch down, roll (rad), gripper (0..1)."""

    t: float
    pos: np.ndarray
    pitch: float
    gripper: float
    roll: float = 0.0


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def tool_rotation(arm: int, pitch: float, yaw: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """World rotation of gripper_link: yawed by `yaw` from facing the other arm, pitched down by `pitch`,
    rolled about the approach axis by `roll`.

    The right arm's base is yawed by pi in the MJCF, so its "forward" is world -x. No roll: with the
    yaw pointing from the arm's base to the target, the waist provides it and forearm roll / wrist
    rotate stay near zero (demanding yaw 0 for an off-axis target makes the IK spin those two
    nearly collinear joints, measured up to 12 rad/s).
    """
    base = np.eye(3) if arm == 0 else _rot_z(np.pi)
    return base @ _rot_z(yaw) @ _rot_y(pitch) @ _rot_x(roll)


class ArmIK:
    """Damped least squares IK for one arm's 6 joints (position + orientation of the tool point)."""

    def __init__(self, model: mujoco.MjModel, arm: int) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.body = model.body(_PREFIX[arm] + "gripper_link").id
        joints = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate"]
        self.qadr = np.array([model.joint(_PREFIX[arm] + j).qposadr[0] for j in joints])
        self.dadr = np.array([model.joint(_PREFIX[arm] + j).dofadr[0] for j in joints])
        self.lo = np.array([model.joint(_PREFIX[arm] + j).range[0] for j in joints])
        self.hi = np.array([model.joint(_PREFIX[arm] + j).range[1] for j in joints])
        self.base_xy = model.body(_PREFIX[arm].rstrip("/")).pos[:2].copy()
        self.forward = 1.0 if arm == 0 else -1.0  # world x direction the arm faces at yaw 0
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def yaw_to(self, pos: np.ndarray) -> float:
        """Yaw (in the arm's own frame) that points the arm from its base at `pos`."""
        d = pos[:2] - self.base_xy
        return float(np.arctan2(self.forward * d[1], self.forward * d[0]))

    def tool_pose(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.data.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        rot = self.data.xmat[self.body].reshape(3, 3).copy()
        return self.data.xpos[self.body] + rot @ TCP_OFFSET, rot

    def solve(
        self, pos: np.ndarray, rot: np.ndarray, q0: np.ndarray, iters: int = 60, damping: float = 0.03
    ) -> tuple[np.ndarray, float]:
        """Joints reaching (pos, rot) starting from q0 -> (q, final position error in m)."""
        q = q0.copy()
        err_p = np.inf
        for _ in range(iters):
            p, r = self.tool_pose(q)
            err_p_vec = pos - p
            # Orientation error as a rotation vector (small-angle: 0.5 * sum of column crosses).
            err_r = 0.5 * (np.cross(r[:, 0], rot[:, 0]) + np.cross(r[:, 1], rot[:, 1]) + np.cross(r[:, 2], rot[:, 2]))
            err_p = float(np.linalg.norm(err_p_vec))
            if err_p < 1e-4 and np.linalg.norm(err_r) < 1e-3:
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jac(self.model, self.data, self._jacp, self._jacr, p, self.body)
            jac = np.vstack([self._jacp[:, self.dadr], self._jacr[:, self.dadr]])
            # Orientation weighted lower than position: the grasp needs the point more than the angle.
            e = np.concatenate([err_p_vec, 0.5 * err_r])
            w = np.diag([1, 1, 1, 0.5, 0.5, 0.5])
            jw = w @ jac
            dq = jw.T @ np.linalg.solve(jw @ jw.T + damping**2 * np.eye(6), w @ e)
            q = np.clip(q + dq, self.lo, self.hi)
        return q, err_p


# Hand-over geometry (m, rad). The right fingers (pitched 60 deg) pinch the cube's two y faces over
# almost its whole length, so left fingers closing along y wedge against them (measured: 30 % of
# seeds dropped the cube). The left gripper is therefore rolled 90 deg and pinches the cube's top
# and bottom faces on its free (-x) half, where no right finger is. The right arm grasps slightly
# off-centre towards itself to leave that half free.
MEET = np.array([0.0, 0.5, 0.25])
RIGHT_GRASP_OFFSET = np.array([0.012, 0.0, 0.0])
LEFT_GRASP_OFFSET = np.array([-0.025, 0.0, 0.0])
PICK_PITCH = np.deg2rad(60.0)
LEFT_ROLL = np.deg2rad(90.0)


def pick_waypoints(cube_xyz: np.ndarray, start_tools: list[np.ndarray]) -> list[list[Waypoint]]:
    """Phase 1 (0-5.5 s): right arm picks the cube and lifts it to MEET; left arm waits beside MEET."""
    c = np.array([cube_xyz[0], cube_xyz[1], 0.02]) + RIGHT_GRASP_OFFSET  # cube rests at z=0.02
    down = PICK_PITCH
    right = [
        Waypoint(0.0, start_tools[1], 0.0, 0.1),
        Waypoint(1.5, c + np.array([0, 0, 0.10]), down, GRIPPER_OPEN),
        Waypoint(2.4, c, down, GRIPPER_OPEN),
        Waypoint(3.0, c, down, GRIPPER_CLOSED),
        Waypoint(3.3, c, down, GRIPPER_CLOSED),
        Waypoint(5.0, MEET + RIGHT_GRASP_OFFSET, down, GRIPPER_CLOSED),
        Waypoint(5.5, MEET + RIGHT_GRASP_OFFSET, down, GRIPPER_CLOSED),
    ]
    wait = MEET + LEFT_GRASP_OFFSET + np.array([-0.12, 0, 0])
    left = [
        Waypoint(0.0, start_tools[0], 0.0, 0.1),
        Waypoint(3.5, wait, 0.0, GRIPPER_OPEN, LEFT_ROLL),
        Waypoint(5.5, wait, 0.0, GRIPPER_OPEN, LEFT_ROLL),
    ]
    return [left, right]


def handover_waypoints(cube_xyz: np.ndarray, tools: list[np.ndarray], t0: float) -> list[list[Waypoint]]:
    """Phase 2 (from t0): left arm closes on the cube where it actually is, right arm lets go."""
    target = np.asarray(cube_xyz, float) + LEFT_GRASP_OFFSET
    pre = target + np.array([-0.12, 0, 0])
    down = PICK_PITCH
    roll = LEFT_ROLL
    left = [
        Waypoint(t0, tools[0], 0.0, GRIPPER_OPEN, roll),
        Waypoint(t0 + 0.3, pre, 0.0, GRIPPER_OPEN, roll),
        Waypoint(t0 + 1.0, target, 0.0, GRIPPER_OPEN, roll),
        Waypoint(t0 + 1.4, target, 0.0, GRIPPER_CLOSED, roll),
        Waypoint(t0 + 1.8, target, 0.0, GRIPPER_CLOSED, roll),
        Waypoint(t0 + 2.8, target + np.array([-0.08, 0, 0.0]), 0.0, GRIPPER_CLOSED, roll),
    ]
    right = [
        Waypoint(t0, tools[1], down, GRIPPER_CLOSED),
        Waypoint(t0 + 1.5, tools[1], down, GRIPPER_CLOSED),
        Waypoint(t0 + 1.9, tools[1], down, GRIPPER_OPEN),
        Waypoint(t0 + 2.8, tools[1] + np.array([0.10, 0, 0.05]), down, GRIPPER_OPEN),
    ]
    return [left, right]


def interp_waypoints(wps: list[Waypoint], t: float) -> tuple[np.ndarray, float, float, float]:
    """(position, pitch, roll, gripper) at time t, eased between waypoints."""
    if t <= wps[0].t:
        w = wps[0]
        return np.asarray(w.pos, float), w.pitch, w.roll, w.gripper
    for a, b in itertools.pairwise(wps):
        if t <= b.t:
            s = (t - a.t) / (b.t - a.t)
            s = 0.5 - 0.5 * np.cos(np.pi * s)  # ease in/out: no velocity step at waypoints
            pos = (1 - s) * np.asarray(a.pos, float) + s * np.asarray(b.pos, float)
            lerp = lambda x, y: (1 - s) * x + s * y  # noqa: E731, B023
            return pos, lerp(a.pitch, b.pitch), lerp(a.roll, b.roll), lerp(a.gripper, b.gripper)
    w = wps[-1]
    return np.asarray(w.pos, float), w.pitch, w.roll, w.gripper


class WaypointDemonstrator:
    """Two-phase waypoint demonstrator; call `reset(sim)` then `act(sim)` once per control period.

    Phase 1 is planned at reset from the initial object poses (`plan_phase1`); phase 2 once phase 1's
    last waypoint is reached, from where the objects actually are then (`plan_phase2`). Each sample
    goes through the arms' IK, warm-started from the previous one. A task subclasses it.
    """

    task = ""  # the AlohaSim task it drives
    phase1_s = 0.0  # when phase 2 is planned (s after reset)
    phase2_s = 0.0  # phase 2's length

    def __init__(self, hz: float = CONTROL_HZ, tail_s: float = 1.0) -> None:
        self.hz = hz
        self.tail_s = tail_s

    def plan_phase1(self, sim: AlohaSim, tools: list[np.ndarray]) -> list[list[Waypoint]]:
        raise NotImplementedError

    def plan_phase2(self, sim: AlohaSim, tools: list[np.ndarray], t0: float) -> list[list[Waypoint]]:
        raise NotImplementedError

    @property
    def duration_s(self) -> float:
        return self.phase1_s + self.phase2_s + self.tail_s

    @property
    def num_steps(self) -> int:
        return round(self.duration_s * self.hz)

    def _tools(self) -> list[np.ndarray]:
        return [self._iks[a].tool_pose(self._q_arm[a])[0] for a in range(2)]

    def reset(self, sim: AlohaSim) -> None:
        if sim.task_name != self.task:
            raise ValueError(f"{type(self).__name__} drives the {self.task} task only, not {sim.task_name}")
        self._iks = [ArmIK(sim.model, 0), ArmIK(sim.model, 1)]
        q = sim.qpos
        self._q_arm = [q[0:6].copy(), q[7:13].copy()]
        self._plans = self.plan_phase1(sim, self._tools())
        self._phase = 1
        self._i = 0

    def act(self, sim: AlohaSim) -> np.ndarray:
        """Next joint targets (14,): the waypoint path at sample i / hz, through IK."""
        t = self._i / self.hz
        if self._phase == 1 and t >= self.phase1_s:
            self._plans = self.plan_phase2(sim, self._tools(), t)
            self._phase = 2
        out = np.zeros(14)
        for arm in range(2):
            pos, pitch, roll, grip = interp_waypoints(self._plans[arm], t)
            if self._i > 0:  # sample 0 holds where the arm is: no jump at the start
                rot = tool_rotation(arm, pitch, self._iks[arm].yaw_to(pos), roll)
                self._q_arm[arm], _ = self._iks[arm].solve(pos, rot, self._q_arm[arm])
            out[7 * arm : 7 * arm + 6] = self._q_arm[arm]
            out[7 * arm + 6] = grip
        self._i += 1
        return out


class ScriptedTransferCube(WaypointDemonstrator):
    """TransferCube: phase 1 is planned from the initial cube pose; phase 2 (the hand-over) once the
    cube is up, from where it actually sits in the right gripper (it slips a few mm on the grasp)."""

    task = "transfer_cube"
    phase1_s = 5.5
    phase2_s = 2.8

    def plan_phase1(self, sim: AlohaSim, tools: list[np.ndarray]) -> list[list[Waypoint]]:
        return pick_waypoints(sim.env_state[:3], tools)

    def plan_phase2(self, sim: AlohaSim, tools: list[np.ndarray], t0: float) -> list[list[Waypoint]]:
        return handover_waypoints(sim.env_state[:3], tools, t0)


@dataclass
class EpisodeResult:
    seed: int
    success: bool
    max_reward: int
    targets: np.ndarray  # (T, 14) at 10 Hz


ARM_JOINTS = np.r_[0:6, 7:13]


def dart_noise(seed: int, steps: int, sigma: float) -> np.ndarray:
    """(steps, 14) perturbation of the *executed* targets for DART-style demonstrations (Laskey et
    al. 2017): Gaussian with std `sigma` rad on the 12 arm joints, none on the grippers or on row 0.

    The label stays the demonstrator's clean target, so the demos show the arm pushed off the
    path and the command that brings it back: the recoveries a cloned policy needs once its own
    errors push it off. Deterministic per seed, so the dry run and the recording of a seed agree."""
    out = np.zeros((steps, 14))
    if sigma > 0:
        out[1:, ARM_JOINTS] = np.random.default_rng([seed, 7919]).normal(0.0, sigma, (steps - 1, ARM_JOINTS.size))
    return out


def run_scripted_episode(sim: AlohaSim, seed: int, hz: float = CONTROL_HZ, dart: float = 0.0,
                         demonstrator: type[WaypointDemonstrator] = ScriptedTransferCube) -> EpisodeResult:
    """Run one scripted episode in `sim` without rendering (success check / planning only); `dart`:
    the std (rad) of the noise added to the executed arm targets (`dart_noise`); `targets` are the
    clean labels."""
    sim.reset(seed, render=False)
    policy = demonstrator(hz)
    policy.reset(sim)
    noise = dart_noise(seed, policy.num_steps, dart)
    best = 0
    targets = []
    for i in range(policy.num_steps):
        q = policy.act(sim)
        targets.append(q)
        sim.step(q + noise[i], 1.0 / hz, render=False)
        best = max(best, sim.reward)
    return EpisodeResult(seed=seed, success=sim.success, max_reward=best, targets=np.array(targets))


@dataclass
class ScriptedRows:
    """A scripted episode on the control grid, with what the robot would sense at each row.

    Row r: `images[r]` and `qpos[r]` are observed after r commands (the observation of row r,
    before its command), `targets[r]` is row r's command, held for 1/hz s. The same grid as the
    recorded demos and the node (runtime/chunk_executor.py)."""

    seed: int
    cube_xyz: np.ndarray  # (3,) initial cube position
    images: list[dict[str, np.ndarray]]  # per row: camera name -> uint8 (H, W, 3)
    qpos: np.ndarray  # (T, 14)
    targets: np.ndarray  # (T, 14)
    success: bool


def scripted_rows(
    sim: AlohaSim, seed: int, hz: float = CONTROL_HZ, render_rows: set[int] | None = None
) -> ScriptedRows:
    """Run the scripted policy from `seed`, rendering the rows in `render_rows` (all if None)."""
    sim.reset(seed, render=False)
    cube = np.asarray(sim.env_state[:3], dtype=np.float64).copy()
    policy = ScriptedTransferCube(hz)
    policy.reset(sim)
    images, qpos, targets = [], [], []
    for r in range(policy.num_steps):
        images.append(sim.render() if render_rows is None or r in render_rows else {})
        qpos.append(sim.qpos)
        q = policy.act(sim)
        targets.append(q)
        sim.step(q, 1.0 / hz, render=False)
    return ScriptedRows(seed, cube, images, np.array(qpos), np.array(targets), sim.success)
