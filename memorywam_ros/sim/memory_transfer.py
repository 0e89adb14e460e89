"""TransferCube with a blind head camera: a memory variant of the simulated dual arm. ROS-free.

The task is gym-aloha's TransferCube (`AlohaSim`): the cube's pose is drawn per seed by gym-aloha's
sampler (x in [0, 0.2] m, y in [0.4, 0.6] m, uniform), the right arm must pick it up and hand it
to the left arm. Two changes make it a memory task:

* **Blind head.** The head (`top`) camera shows the scene only in the first `anchor_frames` latent
  frames (the memory's anchor frames, N_init); from the next latent frame on its tile is black for
  the rest of the episode. The wrist cameras stay live; at the home pose each looks at the other
  gripper across the table, not at the cube, except that the cube's edge shows in a wrist tile in
  6-7 % of the seeds (up to ~50 px at the 192x160 mosaic; measured on 300 training and 300
  evaluation seeds). So where the cube is must come from the anchor frames held in full (hybrid,
  no_gist, full) or from gists (hybrid, no_anchor); `window` holds neither once frame 0 has left
  its window.
* **Wait before reaching** (`delay_chunks`, default 2 chunks = 3.2 s). The arms hold the home
  pose for the first `delay_chunks` action chunks, then the scripted demonstrator
  (`ScriptedTransferCube`, unchanged) runs from there. Without the wait the first chunk (planned
  from frame 0, which every policy sees) already moves the arm towards the cube and from then on
  the joint state (proprio) itself says where the cube is, so no memory would be needed. With a
  window of N_recent frames, chunk j is denoised with frames j-N_recent+1 .. j in full, so the last
  live frame leaves the window at chunk anchor_frames + N_recent - 1: `delay_chunks` must be at
  least that (`check_protocol`). Until the first moving chunk the joint state is the home pose
  whatever the cube.
* **No memory in the VAE** (`PerFrameVAEEncoder`, used by bench/memory_dual_arm.py unless
  `--vae-mode stream`): the runtime's streaming encoder's causal convolutions carry frame 0 into
  every later latent (with the tiny random VAE the cube's position is linearly decodable from the
  blind frames' latents with R^2 0.99), which would hand `window` the anchor; the per-frame encoder
  cuts the causal cache at every latent frame.

Time scale: the robot runtime's. Control rows at 10 Hz (`CONTROL_HZ`), 16-row action chunks; the
observation protocol of `runtime.policy.Policy` / `memorywam_train.precompute`: latent frame 0 is
the mosaic of row 0 alone, latent frame j >= 1 the 4 mosaics observed after sub-steps
`observation_substeps(16)` = (3, 7, 11, 15) of chunk j-1, i.e. at rows 16(j-1)+4, +8, +12, 16j;
its joint state is the one at row 16j, and chunk j = the commands of rows 16j .. 16j+15. Row t > 0
therefore belongs to latent frame ceil(t / 16) (`frame_of_row`), and the head is black at row t iff
`frame_of_row(t) >= anchor_frames`. Each row holds its joint targets for 0.1 s (zero-order hold,
the physics of `AlohaSim.step(targets, 0.1)`, like the demos and the sim node). A demo is 2 chunks
of waiting + the scripted 9.3 s = 125 rows = 8 latent frames (the last chunk's 3 rows past the end
repeat the last command and are masked, as in precompute). `run_chunk` (evaluation) and
`scripted_episode` (demonstrations) observe at the same rows: replaying a demo's chunks through
`run_chunk` reproduces its mosaics bit for bit (tested).

Cameras are rendered directly at their mosaic tile size (head 2H/3 x W, wrists H/3 x W/2), so
`compose_mosaic` never resizes; a blind head is not rendered at all. The default mosaic is 192x160
(the real 384x320 layout halved: head 128x160, wrists 64x80): the 4 cm red cube is ~3x3 px on
the head tile (~1.5 px at 96x80, which is also no valid mosaic for the model: H and W must be
multiples of 32 so that the 16x VAE latent splits into 2x2 patches, and H a multiple of 3).

Graded metric (`min_dwell`, `reached`): the distance between the right arm's tool point (between
the finger pads, `scripted.TCP_OFFSET` in the gripper_link frame: the point the scripted
demonstrator servoes onto the cube) and the cube's centre, sampled every 20 ms (gym-aloha's
control period). `min_reach` is its minimum over the episode; `min_dwell` the smallest distance
*held* for `REACH_DWELL_S` = 0.5 s (min over the episode of the max over a 0.5 s window), because
a barely trained policy whose chunks jitter across the workspace passes within ~6 cm of the cube by
chance (measured: instantaneous 6-9 cm, held 38-41 cm). "Reached" = `min_dwell` <
`REACH_THRESHOLD_M` = 3 cm: the scripted grasp holds the tool point ~1.7 cm from the centre (its
grasp offset is 1.2 cm; the cube's half size is 2 cm), so 3 cm means the fingers are around the
cube. The same plan aimed at the sampler's centre instead of the cube (`scripted_episode(...,
blind=True)`: the best a policy without memory can do) ends 5-10 cm away and within 3 cm for
~7 % of poses (pi 3^2 / 20^2); arms left at home stay ~30 cm away. Success is `AlohaSim.success`
(gym-aloha reward 4 at some 20 ms evaluation: a left finger touches the cube and the cube does not
touch the table); `max_reward` keeps the best reward (1: a right finger touches the cube, 2: it
holds it off the table, 3: a left finger touches it).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from memorywam_ros.runtime.chunk_executor import observation_substeps
from memorywam_ros.runtime.mosaic import compose_mosaic
from memorywam_ros.runtime.vae import FRAMES_FIRST, FRAMES_PER_LATENT
from memorywam_ros.sim.aloha import AlohaSim
from memorywam_ros.sim.rows import CHUNK, frame_of_row
from memorywam_ros.sim.scripted import CONTROL_HZ, TCP_OFFSET, ScriptedTransferCube

__all__ = [
    "ANCHOR_FRAMES",
    "BOX_CENTRE",
    "CHUNK",
    "DELAY_CHUNKS",
    "MOSAIC_SIZE",
    "REACH_DWELL_S",
    "REACH_THRESHOLD_M",
    "Demo",
    "MemoryTransferTask",
    "PerFrameVAEEncoder",
    "camera_sizes",
    "check_protocol",
    "frame_of_row",
    "mosaic_rows",
    "num_latent_frames",
    "scripted_episode",
]

MOSAIC_SIZE = (192, 160)  # (H, W): head 128x160, wrists 64x80
ANCHOR_FRAMES = 1  # latent frames with a live head camera (= the memory's n_init)
DELAY_CHUNKS = 2  # chunks the arms wait at home before the scripted reach starts (>= n_recent)
REACH_THRESHOLD_M = 0.03
REACH_DWELL_S = 0.5  # "reached" needs the tool point within the threshold for this long
BOX_CENTRE = np.array([0.1, 0.5, 0.02])  # centre of gym-aloha's box sampler; the cube rests at z 0.02
_PHYSICS_SAMPLE_S = 0.02  # reach sampling period (gym-aloha's control / reward period)
_RIGHT_GRIPPER = "vx300s_right/gripper_link"


# ------------------------------------------------------------------------------------ alignment
def num_latent_frames(num_rows: int, chunk: int = CHUNK) -> int:
    """Latent frames of an episode of `num_rows` command rows (each frame needs all its mosaics)."""
    return 0 if num_rows < 1 else 1 + (num_rows - 1) // chunk


def mosaic_rows(j: int, chunk: int = CHUNK) -> list[int]:
    """Rows whose mosaics make latent frame j: [0], then the rows after sub-steps (3, 7, 11, 15) of chunk j-1."""
    if j == 0:
        return [0]
    return [chunk * (j - 1) + k + 1 for k in observation_substeps(chunk)]


def camera_sizes(mosaic: tuple[int, int]) -> dict[str, tuple[int, int]]:
    """Camera render sizes equal to the mosaic tiles (head 2H/3 x W, wrists H/3 x W/2)."""
    h, w = mosaic
    if h % 96 or w % 32:
        raise ValueError(f"mosaic {h}x{w}: H must be a multiple of 96 and W of 32 (3 tiles, 16x VAE, 2x2 patches)")
    return {"top": (h - h // 3, w), "left_wrist": (h // 3, w // 2), "right_wrist": (h // 3, w - w // 2)}


def check_protocol(anchor_frames: int, delay_chunks: int, n_init: int, n_recent: int) -> None:
    """The memory test needs the head to be blind from the first frame after the anchors on, and the
    first moving chunk to come after frame 0 has left every window."""
    if anchor_frames != n_init:
        raise ValueError(f"anchor_frames {anchor_frames} != memory n_init {n_init}")
    if delay_chunks < n_recent + anchor_frames - 1:
        raise ValueError(f"delay of {delay_chunks} chunks < n_recent + anchors - 1 = {n_recent + anchor_frames - 1}: "
                         "a window policy would still see a live head frame when the arm starts moving")


# ------------------------------------------------------------------------------------ environment
class MemoryTransferTask:
    """AlohaSim TransferCube with the blind head camera, row-level stepping and the reach metric.

    `reset(seed)` -> the mosaic of row 0; `step(targets)` holds one 10 Hz row; `observe()` the mosaic
    of the current row (head black from latent frame `anchor_frames` on); `run_chunk(chunk)` executes
    a (16, 14) chunk and returns the 4 mosaics of the next latent frame, like the robot's executor.
    """

    def __init__(self, sim: AlohaSim | None = None, mosaic_size: tuple[int, int] = MOSAIC_SIZE,
                 anchor_frames: int = ANCHOR_FRAMES, blank_head: bool = True, chunk: int = CHUNK,
                 hz: float = CONTROL_HZ) -> None:
        self.mosaic_size = tuple(mosaic_size)
        sizes = camera_sizes(self.mosaic_size)
        self._own_sim = sim is None
        self.sim = sim if sim is not None else AlohaSim("transfer_cube", camera_sizes=sizes)
        if self.sim.task_name != "transfer_cube":
            raise ValueError("MemoryTransferTask needs the transfer_cube task")
        if any(self.sim.camera_sizes[c] != s for c, s in sizes.items()):
            raise ValueError(f"sim camera sizes {self.sim.camera_sizes} are not the mosaic tiles {sizes}")
        self.anchor_frames = anchor_frames
        self.blank_head = blank_head
        self.chunk = chunk
        self.dt = 1.0 / hz
        self.substeps = observation_substeps(chunk)
        self._body = self.sim.model.body(_RIGHT_GRIPPER).id
        self._recent: deque[float] = deque(maxlen=max(1, round(REACH_DWELL_S / _PHYSICS_SAMPLE_S)))
        self.row = 0
        self.min_reach = math.inf
        self.min_dwell = math.inf
        self.max_reward = 0
        self.cube_start = np.zeros(3)

    # -- facts ----------------------------------------------------------------------------
    @property
    def qpos(self) -> np.ndarray:
        return self.sim.qpos

    @property
    def success(self) -> bool:
        return self.sim.success

    @property
    def cube_pos(self) -> np.ndarray:
        return self.sim.env_state[:3].copy()

    def tool_pos(self) -> np.ndarray:
        """World position of the right arm's tool point (between the finger pads)."""
        data = self.sim.physics.data
        rot = np.asarray(data.xmat[self._body]).reshape(3, 3)
        return np.asarray(data.xpos[self._body]) + rot @ TCP_OFFSET

    def reach_distance(self) -> float:
        return float(np.linalg.norm(self.tool_pos() - self.cube_pos))

    @property
    def reached(self) -> bool:
        """The tool point stayed within REACH_THRESHOLD_M of the cube for REACH_DWELL_S at some point."""
        return self.min_dwell < REACH_THRESHOLD_M

    def _sample_reach(self) -> None:
        d = self.reach_distance()
        self.min_reach = min(self.min_reach, d)
        self._recent.append(d)
        if len(self._recent) == self._recent.maxlen:
            self.min_dwell = min(self.min_dwell, max(self._recent))

    def head_visible(self, row: int | None = None) -> bool:
        return not self.blank_head or frame_of_row(self.row if row is None else row, self.chunk) < self.anchor_frames

    # -- episode --------------------------------------------------------------------------
    def reset(self, seed: int, render: bool = True) -> np.ndarray | None:
        """New episode -> the (H, W, 3) mosaic of row 0 (latent frame 0); None with render=False."""
        self.sim.reset(seed, render=False)
        self.sim.physics.forward()  # body poses of the reset state (the reach metric reads them)
        self.row = 0
        self.max_reward = 0
        self.cube_start = self.cube_pos
        self.min_reach = self.min_dwell = math.inf
        self._recent.clear()
        self._sample_reach()
        return self.observe() if render else None

    def observe(self) -> np.ndarray:
        """Mosaic of the current row; the head tile is black (and not rendered) once blind."""
        h, w = self.mosaic_size
        if self.head_visible():
            images = self.sim.render()
            head = images["top"]
        else:
            images = self.sim.render(("left_wrist", "right_wrist"))
            head = np.zeros((h - h // 3, w, 3), dtype=np.uint8)
        return compose_mosaic(head, images["left_wrist"], images["right_wrist"], h, w)

    def step(self, targets: np.ndarray) -> None:
        """Hold `targets` (14,) for one control row (0.1 s), sampling the reach every 20 ms."""
        self.sim.set_targets(targets)
        n = max(1, round(self.dt / _PHYSICS_SAMPLE_S))
        for _ in range(n):
            self.sim.advance(self.dt / n)
            self._sample_reach()
        self.max_reward = max(self.max_reward, self.sim.reward)
        self.row += 1

    def run_chunk(self, chunk: np.ndarray, observe: bool = True) -> np.ndarray | None:
        """Execute a (K, 14) chunk row by row -> the (4, H, W, 3) mosaics taken after the observation
        sub-steps (None with observe=False: nothing rendered)."""
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.shape[0] != self.chunk:
            raise ValueError(f"chunk of {chunk.shape[0]} rows, expected {self.chunk}")
        mosaics = []
        for k, row in enumerate(chunk):
            self.step(row)
            if observe and k in self.substeps:
                mosaics.append(self.observe())
        return np.stack(mosaics) if observe else None

    def close(self) -> None:
        if self._own_sim:
            self.sim.close()

    def __enter__(self) -> MemoryTransferTask:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------ latents
class PerFrameVAEEncoder:
    """`StreamingVAEEncoder` with its causal cache cut at every latent frame: no temporal memory in the VAE.

    Same interface (`reset()`, `encode(1 mosaic first, then 4)` -> (z, 1, h, w)), so `Policy` takes
    it as its `vae`. Frame 0 is encoded exactly as streamed; frame j >= 1 as if the stream had
    started with frame j's own first mosaic (`encode_clip([m0, m0, m1, m2, m3])[:, 1]`). Why: the
    streaming encoder's causal convolutions carry frame 0 into every later latent; with the tiny
    random VAE a ridge probe reads the cube's (x, y) from the latents of frames 1-3, whose head tile
    is black, with R^2 0.99 (0.04-0.15 with the cache cut; measured on 200-240 seeds), so a
    `window` policy would see the anchor through the VAE and the benchmark would not test the
    model's memory. How much a real, trained Wan2.2 VAE leaks is not measured here.
    """

    def __init__(self, streaming) -> None:  # a memorywam_ros.runtime.vae.StreamingVAEEncoder
        self.stream = streaming
        self._frames = 0

    def reset(self) -> None:
        self.stream.reset()
        self._frames = 0

    @property
    def latent_frames(self) -> int:
        return self._frames

    @property
    def expected_frames(self) -> int:
        return FRAMES_FIRST if self._frames == 0 else FRAMES_PER_LATENT

    def encode(self, mosaics):
        """(1 or 4, H, W, 3) uint8 -> float32 (z, 1, h, w), the 4-mosaic case without any earlier frame."""
        n = len(mosaics)
        if n != self.expected_frames:
            raise ValueError(f"latent frame {self._frames} takes {self.expected_frames} mosaic(s), got {n}")
        self.stream.reset()
        if n == FRAMES_PER_LATENT:  # the stream starts with one mosaic alone: this frame's first
            self.stream.encode(mosaics[:FRAMES_FIRST])
        self._frames += 1
        return self.stream.encode(mosaics)


# ------------------------------------------------------------------------------------ demonstrations
@dataclass
class Demo:
    """One episode in the training-sample layout (N latent frames, chunk K = 16, 14 joints)."""

    seed: int
    frames: list[np.ndarray]  # N arrays: (1, H, W, 3) for frame 0, then (4, H, W, 3) uint8
    proprio: np.ndarray  # (N, 14) float32, joint state at row 16j
    actions: np.ndarray  # (N, 16, 14) float32, commands of rows 16j .. 16j+15 (last row repeated past the end)
    action_mask: np.ndarray  # (N, 16) bool, False past the episode's last command
    success: bool
    max_reward: int
    min_reach: float  # min tool-to-cube distance (m), sampled every 20 ms
    min_dwell: float  # min over 0.5 s windows of the max distance in the window (m)
    cube_xyz: np.ndarray  # (3,) cube position at reset
    head_visible: list[bool] = field(default_factory=list)  # per latent frame

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def clip(self) -> np.ndarray:
        """All mosaics in streaming order (1 + 4(N-1), H, W, 3): what `StreamingVAEEncoder.encode_clip` takes."""
        return np.concatenate(self.frames)


def scripted_episode(task: MemoryTransferTask, seed: int, delay_chunks: int = DELAY_CHUNKS, render: bool = True,
                     blind: bool = False, move: bool = True,
                     on_row: Callable[[int], None] | None = None) -> Demo:
    """Wait `delay_chunks` chunks at home, then run `ScriptedTransferCube`; render the mosaics of every
    latent frame (unless render=False: frames stay empty, e.g. for a dry run or the reach references).

    blind: plan the reach to `BOX_CENTRE` instead of the cube (a competent policy without memory).
    move=False: the arms stay at home the whole episode (the reach metric's far reference).
    """
    scripted = ScriptedTransferCube(CONTROL_HZ)
    delay = delay_chunks * task.chunk
    total = delay + scripted.num_steps
    n = num_latent_frames(total, task.chunk)
    wanted = {r: j for j in range(n) for r in mosaic_rows(j, task.chunk)}
    frames: list[list[np.ndarray]] = [[] for _ in range(n)]
    proprio, commands = [], []
    first = task.reset(seed, render=render)
    hold = task.qpos
    for t in range(total):
        if render and t in wanted:
            frames[wanted[t]].append(first if t == 0 else task.observe())
        if t % task.chunk == 0:
            proprio.append(task.qpos)
        if not move or t < delay:
            target = hold
        else:
            if t == delay:
                _reset_scripted(scripted, task, blind)
            target = scripted.act(task.sim)
        target = np.asarray(target, dtype=np.float32)  # the recorded action is exactly what is executed
        commands.append(target)
        task.step(target.astype(np.float64))
        if on_row is not None:
            on_row(t)
    cmd = np.asarray(commands, dtype=np.float32)
    rows = np.arange(n)[:, None] * task.chunk + np.arange(task.chunk)[None, :]
    return Demo(
        seed=seed,
        frames=[np.stack(f) for f in frames] if render else [],
        proprio=np.asarray(proprio[:n], dtype=np.float32),
        actions=cmd[np.minimum(rows, total - 1)],
        action_mask=rows < total,
        success=task.success,
        max_reward=task.max_reward,
        min_reach=task.min_reach,
        min_dwell=task.min_dwell,
        cube_xyz=task.cube_start.copy(),
        head_visible=[not task.blank_head or j < task.anchor_frames for j in range(n)],
    )


def _reset_scripted(scripted: ScriptedTransferCube, task: MemoryTransferTask, blind: bool) -> None:
    """Plan the scripted pick from the current state; blind: with the cube believed at BOX_CENTRE."""
    if not blind:
        scripted.reset(task.sim)
        return
    qpos = task.sim.physics.data.qpos
    real = np.array(qpos[16:19])
    qpos[16:19] = BOX_CENTRE  # the planner reads the cube pose from env_state; nothing is stepped here
    try:
        scripted.reset(task.sim)
    finally:
        qpos[16:19] = real
