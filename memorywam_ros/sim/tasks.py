"""The simulated tasks in one table: which sim class runs each, its options, its scripted demonstrator.

`memorywam-sim-demos` (demos.py) and the simulator node (ros/sim_node.py) build their sim through
`make_sim`, so a task added here is recordable and drivable over ROS 2 at once. MuJoCo loads with
this module; what the supervisor of a closed-loop run needs without it lives in `stages.py`.

| task           | sim class                        | options (node parameters)              | scripted demos |
|----------------|----------------------------------|----------------------------------------|----------------|
| transfer_cube  | aloha.AlohaSim                   | -                                      | scripted.py    |
| insertion      | aloha.AlohaSim                   | -                                      | scripted_insertion.py |
| look_and_press | look_and_press.LookAndPressSim   | cue_start, cue_frames, delay_chunks    | look_and_press.py |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from memorywam_ros.sim import look_and_press as lp
from memorywam_ros.sim import scripted, scripted_insertion
from memorywam_ros.sim.aloha import GYM_ALOHA_HEAD_FOVY_DEG, AlohaSim
from memorywam_ros.sim.stages import LOOK_AND_PRESS_TIMING

__all__ = ["OPTIONS", "SCRIPTED", "TASKS", "make_sim", "scripted_policy", "scripted_success"]

TASKS = ("transfer_cube", "insertion", "look_and_press")
SCRIPTED: dict[str, tuple[Callable[[float], Any], Callable[..., Any]]] = {
    # task -> (demonstrator class taking the control rate, its dry run (sim, seed, dart=) -> result with .success)
    "transfer_cube": (scripted.ScriptedTransferCube, scripted.run_scripted_episode),
    "insertion": (scripted_insertion.ScriptedInsertion, scripted_insertion.run_scripted_episode),
    "look_and_press": (lp.ScriptedLookAndPress, lp.run_scripted_episode),
}
OPTIONS: dict[str, dict[str, int]] = {  # task -> option -> default
    "transfer_cube": {},
    "insertion": {},
    "look_and_press": dict(LOOK_AND_PRESS_TIMING),
}


def make_sim(task: str, camera_sizes: Mapping[str, tuple[int, int]] | None = None,
             head_fovy_deg: float | None = None, options: Mapping[str, Any] | None = None,
             clock_on_engage: bool = False) -> AlohaSim:
    """The task's sim. `options`: the task's OPTIONS (others are an error); `clock_on_engage`: time the
    task's events from the first command after a reset (the simulator node) rather than the reset."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    options = dict(options or {})
    unknown = set(options) - set(OPTIONS[task])
    if unknown:
        raise ValueError(f"task {task} has no option {', '.join(sorted(unknown))} "
                         f"(its options: {', '.join(OPTIONS[task]) or 'none'})")
    fovy = GYM_ALOHA_HEAD_FOVY_DEG if head_fovy_deg is None else float(head_fovy_deg)
    if task == "look_and_press":
        return lp.LookAndPressSim(camera_sizes=camera_sizes, head_fovy_deg=fovy, clock_on_engage=clock_on_engage,
                                  **options)
    return AlohaSim(task, camera_sizes=camera_sizes, head_fovy_deg=fovy)


def _scripted(task: str) -> tuple[Callable[[float], Any], Callable[..., Any]]:
    if task not in SCRIPTED:
        raise ValueError(f"no scripted demonstrator for task {task!r} (only {', '.join(SCRIPTED)})")
    return SCRIPTED[task]


def scripted_policy(sim: AlohaSim, hz: float) -> Any:
    """The task's scripted demonstrator (`reset(sim)`, `act(sim)`, `num_steps` after reset)."""
    return _scripted(sim.task_name)[0](hz)


def scripted_success(task: str) -> Callable[[AlohaSim, int, float], bool]:
    """A dry run of the scripted demonstrator without rendering: (sim, seed, dart) -> success."""
    run = _scripted(task)[1]
    return lambda sim, seed, dart: run(sim, seed, dart=dart).success
