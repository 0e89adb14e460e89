"""Scripted Insertion demonstrator: both arms pick (right: the red peg, left: the blue socket), lift
them to face each other above the table's middle, and the right arm pushes the peg into the socket
until it touches the pin (gym-aloha's InsertionTask reward 4).

Same recipe and machinery as the TransferCube demonstrator (`scripted.py`, the ACT one written from
scratch): tool-point waypoints -> damped-least-squares IK at 10 Hz. Phase 1 is planned from the
initial object poses (privileged state); phase 2 (the insertion) is planned once both are up, from
where the peg and the socket actually sit in their grippers: the peg's centre is driven onto the
socket's axis (they slip a few mm on the grasp, and the socket's opening leaves the 2 cm peg only
±6 mm), first to a point in front of the opening, then along the axis until the peg's end is past
the pin's end.

Geometry (gym-aloha's bimanual_viperx_insertion.xml, m): the peg is a 12x2x2 cm box along x; the
socket a 12 cm tube along x with a 4 cm square section (inner half-width 1.6 cm) and a pin of
half-length 4 cm at its centre, so the peg touches the pin once its end is 2 cm inside.
"""

from __future__ import annotations

import mujoco
import numpy as np

from memorywam_ros.sim import scripted
from memorywam_ros.sim.aloha import AlohaSim
from memorywam_ros.sim.scripted import (
    CONTROL_HZ,
    GRIPPER_CLOSED,
    GRIPPER_OPEN,
    EpisodeResult,
    Waypoint,
    WaypointDemonstrator,
)

# steeper than TransferCube's 60°: at 60° the finger tips meet the table before the 2 cm peg (measured 55/60 seeds)
PICK_PITCH = np.deg2rad(75.0)
PEG_REST_Z = 0.01  # peg centre height resting on the table (2 cm tall)
SOCKET_REST_Z = 0.022  # socket centre resting on its bottom plate (outer half-height 2.2 cm)
PEG_GRASP = np.array([0.015, 0.0, 0.016])  # tool point - peg centre at the grasp (towards the right arm)
SOCKET_GRASP = np.array([-0.02, 0.0, 0.01])  # tool point - socket centre (towards the left arm, walls' upper half)
LIFT_Z = 0.20  # height of both objects' centres when they face each other
SOCKET_AT = np.array([-0.10, 0.5, LIFT_Z])  # socket centre while the peg goes in (held still)
PEG_START = 0.17  # peg centre on the socket axis, ahead of the socket centre, before it goes in (end 5 cm out)
PEG_END = 0.09  # ... when pushed in: the peg's end (half-length 6 cm) 1 cm past the pin's end
PHASE1_S = 5.5
PHASE2_S = 3.0


def _peg_socket(sim: AlohaSim) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(peg centre, socket centre, socket x axis in world) from the sim's object poses."""
    s = sim.env_state  # peg xyz + quat (w, x, y, z), then the socket's
    axis = np.zeros(3)
    mujoco.mju_rotVecQuat(axis, np.array([1.0, 0.0, 0.0]), s[10:14])
    return s[0:3].copy(), s[7:10].copy(), axis


def pick_waypoints(peg: np.ndarray, socket: np.ndarray, start_tools: list[np.ndarray]) -> list[list[Waypoint]]:
    """Phase 1 (0-5.5 s): each arm grasps its object from above and lifts it to face the other."""
    # the sampled poses are 5 cm up; the objects fall onto the table as the episode starts
    grasp = [np.r_[socket[:2], SOCKET_REST_Z] + SOCKET_GRASP, np.r_[peg[:2], PEG_REST_Z] + PEG_GRASP]
    up = np.array([0.0, 0.0, 0.10])
    lifted = [SOCKET_AT + SOCKET_GRASP, SOCKET_AT + np.array([PEG_START + 0.04, 0.0, 0.0]) + PEG_GRASP]
    plans = []
    for arm in range(2):
        plans.append([
            Waypoint(0.0, start_tools[arm], 0.0, 0.1),
            Waypoint(1.5, grasp[arm] + up, PICK_PITCH, GRIPPER_OPEN),
            Waypoint(2.4, grasp[arm], PICK_PITCH, GRIPPER_OPEN),
            Waypoint(3.0, grasp[arm], PICK_PITCH, GRIPPER_CLOSED),
            Waypoint(3.3, grasp[arm], PICK_PITCH, GRIPPER_CLOSED),
            Waypoint(5.0, lifted[arm], PICK_PITCH, GRIPPER_CLOSED),
            Waypoint(PHASE1_S, lifted[arm], PICK_PITCH, GRIPPER_CLOSED),
        ])
    return plans


def insert_waypoints(sim: AlohaSim, tools: list[np.ndarray], t0: float) -> list[list[Waypoint]]:
    """Phase 2 (from t0): the left arm holds the socket; the right arm moves the peg's centre onto
    the socket's axis in front of it, then along the axis into it (targets corrected by where the
    peg sits in the gripper now)."""
    peg, socket, axis = _peg_socket(sim)
    tool_minus_peg = tools[1] - peg
    start = socket + PEG_START * axis + tool_minus_peg
    end = socket + PEG_END * axis + tool_minus_peg
    left = [Waypoint(t0, tools[0], PICK_PITCH, GRIPPER_CLOSED), Waypoint(t0 + PHASE2_S, tools[0], PICK_PITCH,
                                                                         GRIPPER_CLOSED)]
    right = [
        Waypoint(t0, tools[1], PICK_PITCH, GRIPPER_CLOSED),
        Waypoint(t0 + 0.8, start, PICK_PITCH, GRIPPER_CLOSED),
        Waypoint(t0 + 2.3, end, PICK_PITCH, GRIPPER_CLOSED),
        Waypoint(t0 + PHASE2_S, end, PICK_PITCH, GRIPPER_CLOSED),
    ]
    return [left, right]


class ScriptedInsertion(WaypointDemonstrator):
    """Insertion: phase 1 picks and lifts both objects (planned from their initial poses), phase 2
    pushes the peg in (planned from where both sit in their grippers then)."""

    task = "insertion"
    phase1_s = PHASE1_S
    phase2_s = PHASE2_S

    def plan_phase1(self, sim: AlohaSim, tools: list[np.ndarray]) -> list[list[Waypoint]]:
        peg, socket, _ = _peg_socket(sim)
        return pick_waypoints(peg, socket, tools)

    def plan_phase2(self, sim: AlohaSim, tools: list[np.ndarray], t0: float) -> list[list[Waypoint]]:
        return insert_waypoints(sim, tools, t0)


def run_scripted_episode(sim: AlohaSim, seed: int, hz: float = CONTROL_HZ, dart: float = 0.0) -> EpisodeResult:
    """One scripted Insertion episode without rendering (scripted.run_scripted_episode)."""
    return scripted.run_scripted_episode(sim, seed, hz, dart, demonstrator=ScriptedInsertion)
