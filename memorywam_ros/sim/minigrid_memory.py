"""MiniGrid Memory ("the cue disappears") as a MemoryWAM task: observations, action adapter, oracle.

The task (`minigrid.envs.MemoryEnv`): the agent starts in a small room (or in the hallway, for the
*Random* variants) with a green key or ball on the room's north wall; at the far end of a narrow
hallway two objects, a key and a ball, sit one north and one south of a junction. Stepping next to
the one that matches the cue succeeds, stepping next to the other fails (the episode ends either
way). The agent's view is its 7x7 egocentric window, so at the junction the cue is far out of view:
only a memory of the start room can tell north from south. Chance is 50 %.

How it maps onto the MemoryWAM interface (decisions, shared by demonstrations and evaluation):

* Observation: the agent's egocentric RGB view (`get_frame(agent_pov=True)`, tile 8 -> 56x56,
  the agent at the bottom centre looking up) is the *head* camera; both wrist cameras are black.
  `compose_mosaic(head, black, black, 96, 64)` -> wrists 32x32 on top, head 64x64 below; the
  Wan2.2 VAE (16x spatial) makes a 48x6x4 latent, patch 2 -> 3x2 = 6 tokens per latent frame.
  Note: MiniGrid's POV render draws every cell of the 7x7 window, occluded ones too (only without
  the visibility tint), so "the cue is in view" here means "inside the 7x7 window"
  (`MiniGridEnv.in_view`), which is what the pixels show; the oracle uses the same test.
* Actions: a 14-dim vector per control step; dims 0..2 one-hot for MiniGrid's (left, right,
  forward), the only actions the task needs; dims 3..13 stay 0.
* Time scale (measured, see bench/results/memory_capability.md): one MiniGrid action per action
  chunk of K = 4 control steps (`CHUNK`), i.e. one latent frame per env step. A MiniGrid action
  "lasts" the chunk: the demonstration repeats its one-hot on the 4 rows, the env applies it at
  the chunk's first control step, and the camera sees the new state at each of the 4 observation
  ticks, so the next latent frame is the streaming VAE's usual 4 mosaics (4 copies of the view
  after the step; frame 0 is the first view alone). With 4 env steps per latent frame (one
  observation per step) an episode is only 2-4 latent frames and the cue is still inside a
  2-frame window at the decision in 74-98 % of the oracle's episodes: no memory needed.
  With one step per frame that drops to 0 %.
* Adapter from a denoised chunk (K, 14) to the discrete action: argmax over dims 0..2 of the
  chunk's mean row (`chunk_to_action`; for one-hot rows this is the per-row argmax's majority).
* Proprioception (14): the agent's heading one-hot in dims 0..3 (east, south, west, north), the rest
  0. It is a compass, the same in every episode layout, so it carries nothing about the cue.

The oracle (`Oracle`) plans on the true environment state: first, until the cue has been inside
the view window once, the shortest turn/forward path to a pose that has it in view; then the
shortest path to the success cell (`env.success_pos`, the cell beside the matching object).
Breadth-first search over poses (x, y, heading); ties broken by the action order forward, left,
right, so demonstrations are deterministic given the seed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memorywam_ros.runtime.mosaic import compose_mosaic

__all__ = [
    "ACTION_DIM",
    "CHUNK",
    "ENV_IDS",
    "MOSAIC_SIZE",
    "NAV_ACTIONS",
    "OBJECT_COLORS",
    "PROPRIO_DIM",
    "Episode",
    "MemoryTask",
    "Oracle",
    "action_chunk",
    "action_vector",
    "chunk_to_action",
    "frame_mosaics",
    "run_oracle_episode",
]

ENV_IDS = ("MiniGrid-MemoryS7-v0", "MiniGrid-MemoryS13Random-v0")
ACTION_DIM = 14
PROPRIO_DIM = 14
LEFT, RIGHT, FORWARD = 0, 1, 2  # MiniGrid Actions.left/right/forward
NAV_ACTIONS = (LEFT, RIGHT, FORWARD)
CHUNK = 4  # control steps (action rows) per MiniGrid action = per latent frame
MOSAIC_SIZE = (96, 64)  # (height, width): head 64x64, wrists 32x32
# MiniGrid draws the cue and both candidates green, key and ball differing only in an 8x8 sprite's
# shape, which a frozen random-weight VAE all but erases (measured: bench/results/memory_capability.md).
# Colouring each object by its kind keeps the task (remember the cue's kind) and makes it legible.
OBJECT_COLORS = {"key": "yellow", "ball": "blue"}
_DIR_VEC = ((1, 0), (0, 1), (-1, 0), (0, -1))  # MiniGrid headings 0..3: east, south, west, north


# ------------------------------------------------------------------------------------ adapter
def action_vector(action: int) -> np.ndarray:
    """Discrete MiniGrid action (left/right/forward) -> (14,) float32 one-hot in dims 0..2."""
    if action not in NAV_ACTIONS:
        raise ValueError(f"action {action} is not left/right/forward")
    vec = np.zeros(ACTION_DIM, dtype=np.float32)
    vec[action] = 1.0
    return vec


def action_chunk(action: int) -> np.ndarray:
    """Discrete action -> its (CHUNK, 14) chunk: the one-hot held for the chunk's control steps."""
    return np.repeat(action_vector(action)[None], CHUNK, axis=0)


def chunk_to_action(chunk: np.ndarray) -> int:
    """Denoised chunk (K, 14) -> one MiniGrid action: argmax over dims 0..2 of the mean row."""
    chunk = np.asarray(chunk, dtype=np.float64)
    if chunk.ndim != 2 or chunk.shape[1] < len(NAV_ACTIONS):
        raise ValueError(f"chunk must be (K, >=3), got {chunk.shape}")
    return NAV_ACTIONS[int(np.argmax(chunk[:, : len(NAV_ACTIONS)].mean(axis=0)))]


def frame_mosaics(mosaic: np.ndarray, first: bool) -> np.ndarray:
    """The mosaics of one latent frame: the view alone for frame 0, else 4 copies (one per tick)."""
    return mosaic[None] if first else np.repeat(mosaic[None], 4, axis=0)


# ------------------------------------------------------------------------------------ environment
class MemoryTask:
    """A MiniGrid Memory env with the mosaic observation, the heading proprio and cue bookkeeping."""

    def __init__(self, env_id: str, max_steps: int | None = None,
                 mosaic_size: tuple[int, int] = MOSAIC_SIZE, cue_hint: bool = False):
        """mosaic_size: (H, W) of the mosaic, the head tile is (2H/3, W). cue_hint (a control, not
        the task): paint both wrist tiles in the cue's colour for the whole episode, so the cue
        never leaves the view and no memory is needed."""
        import gymnasium as gym
        import minigrid  # noqa: F401  (registers the MiniGrid-* ids)

        self.env_id = env_id
        self.env = gym.make(env_id, disable_env_checker=True)
        self.max_steps = max_steps
        self.mosaic_size = mosaic_size
        self.cue_hint = cue_hint
        self.steps = 0
        self.done = False
        self.success = False
        self.cue_seen = False

    @property
    def unwrapped(self) -> Any:
        return self.env.unwrapped

    @property
    def cue_pos(self) -> tuple[int, int]:
        return 1, self.unwrapped.height // 2 - 1

    @property
    def cue_kind(self) -> str:
        """'key' or 'ball': what the agent has to remember."""
        return self.unwrapped.grid.get(*self.cue_pos).type

    @property
    def junction(self) -> tuple[int, int]:
        """The cell between the two candidate objects, where the agent must choose north or south."""
        sx, _ = self.unwrapped.success_pos
        return int(sx), self.unwrapped.height // 2

    def cue_in_view(self) -> bool:
        return bool(self.unwrapped.in_view(*self.cue_pos))

    def reset(self, seed: int) -> np.ndarray:
        self.env.reset(seed=seed)
        grid = self.unwrapped.grid
        for cell in grid.grid:
            if cell is not None and cell.type in OBJECT_COLORS:
                cell.color = OBJECT_COLORS[cell.type]
        self.steps, self.done, self.success = 0, False, False
        self.cue_seen = self.cue_in_view()
        return self.mosaic()

    def step(self, action: int) -> np.ndarray:
        """One env step with a left/right/forward action -> the new mosaic."""
        if self.done:
            raise RuntimeError("step() after the episode ended")
        if action not in NAV_ACTIONS:
            raise ValueError(f"action {action} is not left/right/forward")
        _, reward, terminated, truncated, _ = self.env.step(action)
        self.steps += 1
        self.success = bool(terminated and reward > 0)
        self.done = bool(terminated or truncated or (self.max_steps is not None and self.steps >= self.max_steps))
        self.cue_seen |= self.cue_in_view()
        return self.mosaic()

    def view(self) -> np.ndarray:
        """(7 * tile, 7 * tile, 3) uint8 egocentric view, agent at the bottom centre facing up.
        tile = head tile height // 7, so the mosaic resizes it by less than one tile."""
        tile = max(8, (2 * self.mosaic_size[0] // 3) // 7)
        return self.unwrapped.get_frame(tile_size=tile, agent_pov=True)

    def mosaic(self) -> np.ndarray:
        from minigrid.core.constants import COLORS

        height, width = self.mosaic_size
        wrist = np.zeros((height // 3, width // 2, 3), dtype=np.uint8)
        if self.cue_hint:
            wrist[:] = COLORS[OBJECT_COLORS[self.cue_kind]]
        return compose_mosaic(self.view(), wrist, wrist, height, width)

    def proprio(self) -> np.ndarray:
        state = np.zeros(PROPRIO_DIM, dtype=np.float32)
        state[int(self.unwrapped.agent_dir)] = 1.0
        return state


# ------------------------------------------------------------------------------------ oracle
class Oracle:
    """Look at the cue (if not yet seen), then take the shortest path to the matching object."""

    def __init__(self, task: MemoryTask):
        self.task = task

    def _pose_sees_cue(self, pose: tuple[int, int, int]) -> bool:
        env = self.task.unwrapped
        saved = (env.agent_pos, env.agent_dir)
        env.agent_pos, env.agent_dir = np.array(pose[:2]), pose[2]
        try:
            return bool(env.in_view(*self.task.cue_pos))
        finally:
            env.agent_pos, env.agent_dir = saved

    def _free(self, x: int, y: int) -> bool:
        env = self.task.unwrapped
        if not (0 <= x < env.width and 0 <= y < env.height):
            return False
        cell = env.grid.get(x, y)
        return cell is None or cell.can_overlap()

    def _plan(self, start: tuple[int, int, int], goal) -> list[int]:
        """Shortest action list from pose `start` to any pose with goal(pose) True."""
        parents: dict[tuple[int, int, int], tuple[tuple[int, int, int], int] | None] = {start: None}
        queue = deque([start])
        while queue:
            pose = queue.popleft()
            if goal(pose):
                path: list[int] = []
                while parents[pose] is not None:
                    pose, action = parents[pose]  # type: ignore[misc]
                    path.append(action)
                return path[::-1]
            x, y, d = pose
            dx, dy = _DIR_VEC[d]
            successors = (
                (FORWARD, (x + dx, y + dy, d) if self._free(x + dx, y + dy) else None),
                (LEFT, (x, y, (d - 1) % 4)),
                (RIGHT, (x, y, (d + 1) % 4)),
            )
            for action, nxt in successors:
                if nxt is not None and nxt not in parents:
                    parents[nxt] = (pose, action)
                    queue.append(nxt)
        raise RuntimeError(f"oracle: no path from {start}")

    def act(self) -> int:
        env = self.task.unwrapped
        pose = (int(env.agent_pos[0]), int(env.agent_pos[1]), int(env.agent_dir))
        if not self.task.cue_seen:
            return self._plan(pose, self._pose_sees_cue)[0]
        target = tuple(int(v) for v in env.success_pos)
        return self._plan(pose, lambda p: (p[0], p[1]) == target)[0]


# ------------------------------------------------------------------------------------ episodes
@dataclass
class Episode:
    """One demonstration: T actions, T + 1 observations (index 0 before the first step)."""

    env_id: str
    seed: int
    mosaics: np.ndarray  # (T + 1, H, W, 3) uint8
    proprio: np.ndarray  # (T + 1, 14) float32, measured with each mosaic
    actions: np.ndarray  # (T, 14) float32 one-hot
    success: bool
    cue_kind: str
    cue_in_view: np.ndarray  # (T + 1,) bool: the cue inside the view window at each observation
    decision_step: int  # index of the action taken on arriving at the junction (-1: never arrived)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return int(self.actions.shape[0])


def run_oracle_episode(env_id: str, seed: int, keep_mosaics: bool = True, noise: float = 0.0,
                       mosaic_size: tuple[int, int] = MOSAIC_SIZE, cue_hint: bool = False) -> Episode:
    """Roll the oracle out in `env_id` reset with `seed`.

    noise > 0 (DART-style demonstrations): with that probability per step the env executes a random
    left/right/forward instead of the oracle's action, while the recorded action stays the
    oracle's (the label of the state actually reached). The demonstrations then cover the states a
    slightly wrong policy reaches and show how to recover from them, which a deterministic oracle's
    narrow set of trajectories never does (plain behaviour cloning drifts off them in closed loop).
    """
    task = MemoryTask(env_id, mosaic_size=mosaic_size, cue_hint=cue_hint)
    oracle = Oracle(task)
    rng = np.random.default_rng((seed, 7))
    mosaics = [task.reset(seed)]
    proprio, in_view, actions = [task.proprio()], [task.cue_in_view()], []
    decision = -1
    while not task.done:
        if decision < 0 and tuple(int(v) for v in task.unwrapped.agent_pos) == task.junction:
            decision = len(actions)
        action = oracle.act()
        executed = int(rng.choice(NAV_ACTIONS)) if noise > 0 and rng.random() < noise else action
        mosaic = task.step(executed)
        actions.append(action_vector(action))
        if keep_mosaics:
            mosaics.append(mosaic)
        proprio.append(task.proprio())
        in_view.append(task.cue_in_view())
    return Episode(
        env_id=env_id,
        seed=seed,
        mosaics=np.stack(mosaics) if keep_mosaics else np.zeros((0, *mosaic_size, 3), np.uint8),
        proprio=np.stack(proprio),
        actions=np.stack(actions),
        success=task.success,
        cue_kind=task.cue_kind,
        cue_in_view=np.asarray(in_view),
        decision_step=decision,
    )
