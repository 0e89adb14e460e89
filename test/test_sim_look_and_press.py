"""Look-and-Press (memorywam_ros/sim/look_and_press.py): panel size and colours, cue timing, scripted presses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gym_aloha")

from memorywam_ros.sim.aloha import DEFAULT_CAMERA_SIZES, WORKSPACE_HEAD_FOVY_DEG
from memorywam_ros.sim.look_and_press import (
    CUES,
    LookAndPressSim,
    cue_of_seed,
    run_scripted_episode,
)
from memorywam_ros.sim.memory_transfer import mosaic_rows

LUMA = np.array([0.299, 0.587, 0.114])  # Rec. 601
TIMINGS = [(0, 2), (3, 2)]  # (cue_start, cue_frames): during the anchor frames, after them


@pytest.fixture(scope="module")
def sim() -> Iterator[LookAndPressSim]:
    with LookAndPressSim(cue_start=0, cue_frames=2, delay_chunks=2) as s:  # cue at row 0: the panel tests
        yield s


def _head(sim: LookAndPressSim) -> np.ndarray:
    return sim.render(("top",))["top"].astype(np.float64)


@pytest.fixture(scope="module")
def panel(sim: LookAndPressSim) -> dict[str, np.ndarray]:
    """Head images at home with the panel showing each cue (row 0) and dark (row 40), plus the panel mask:
    the pixels where the two cues differ (same state at row 0, so nothing else changes)."""
    out = {}
    for cue, name in enumerate(CUES):
        sim.reset(0, cue=cue, render=False)
        out[name] = _head(sim)
    sim.step(None, 4.0, render=False)  # frame 3: after the default cue frames 0-1
    assert not sim.cue_lit()
    out["dark"] = _head(sim)
    out["mask"] = np.abs(out[CUES[0]] - out[CUES[1]]).max(-1) > 20
    return out


def test_head_tile_is_gym_aloha_top_at_mosaic_size(sim: LookAndPressSim) -> None:
    assert sim.camera_sizes["top"] == DEFAULT_CAMERA_SIZES["top"] == (256, 320)
    assert sim.head_fovy_deg == 78.0


def test_panel_covers_a_quarter_of_the_head_image(panel: dict[str, np.ndarray]) -> None:
    mask = panel["mask"]
    assert mask.mean() >= 0.25
    # Each cue lights the whole mask: it differs from the dark panel there.
    for k in CUES:
        assert (np.abs(panel[k] - panel["dark"]).max(-1)[mask] > 20).all()


def test_cue_colours_distinct_equally_bright_and_dark_when_off(panel: dict[str, np.ndarray]) -> None:
    mask = panel["mask"]
    means = {k: panel[k][mask].mean(0) for k in (*CUES, "dark")}
    luma = {k: float(means[k] @ LUMA) for k in means}
    assert abs(luma[CUES[0]] - luma[CUES[1]]) / luma[CUES[0]] < 0.03
    assert np.linalg.norm(means[CUES[0]] - means[CUES[1]]) > 150  # distinguishable by colour alone
    assert luma["dark"] < 0.2 * min(luma[CUES[0]], luma[CUES[1]])
    # Uniform panel: a cue is one colour over the mask (bar the anti-aliased edge row: 320 of ~25k px).
    for k in CUES:
        luma_px = panel[k][mask] @ LUMA
        assert (np.abs(luma_px - np.median(luma_px)) < 3).mean() > 0.98


def test_panel_covers_a_quarter_at_the_workspace_framing_too() -> None:
    with LookAndPressSim(head_fovy_deg=WORKSPACE_HEAD_FOVY_DEG, cue_start=0) as s:  # lit at row 0
        heads = []
        for cue in range(len(CUES)):
            s.reset(0, cue=cue, render=False)
            heads.append(_head(s))
        assert (np.abs(heads[0] - heads[1]).max(-1) > 20).mean() >= 0.25


@pytest.mark.parametrize(("start", "frames"), TIMINGS)
def test_cue_shows_exactly_in_its_latent_frames(start: int, frames: int) -> None:
    """Render the head at every mosaic row of latent frames 0..6 (home pose): lit iff a cue frame."""
    with LookAndPressSim(cue_start=start, cue_frames=frames) as s:
        s.reset(5, render=False)
        dark_luma = None
        lit_frames = set()
        row = 0
        for j in range(7):
            for r in mosaic_rows(j):
                if r > row:
                    s.step(None, (r - row) * s.row_dt, render=False)
                    row = r
                img = _head(s)
                top = img[:60].mean((0, 1)) @ LUMA  # the panel's part of the image
                if s.cue_lit_row(r):
                    lit_frames.add(j)
                    assert top > 80, (j, r, top)
                else:
                    dark_luma = top
                    assert top < 30, (j, r, top)
        assert lit_frames == set(range(start, start + frames))
        assert dark_luma is not None
        # Row boundaries: frame j = rows 16(j-1)+1 .. 16j.
        first = 0 if start == 0 else 16 * (start - 1) + 1
        last = 16 * (start + frames - 1)
        assert s.cue_lit_row(first) and s.cue_lit_row(last)
        assert not s.cue_lit_row(last + 1)
        assert first == 0 or not s.cue_lit_row(first - 1)


def test_scripted_press_succeeds_on_every_seed_and_both_cues_occur(sim: LookAndPressSim) -> None:
    results = [run_scripted_episode(sim, seed) for seed in range(10)]
    fails = [(r.seed, r.cue, r.level, r.touched) for r in results if not r.success]
    assert not fails
    assert {r.cue for r in results} == set(CUES)
    for r in results:
        assert r.cue == CUES[cue_of_seed(r.seed)]
        assert r.pressed[r.cue] and not any(r.touched[c] for c in CUES if c != r.cue)
        assert r.lit_rows == list(range(17))  # default cue frames 0-1: rows 0 .. 16
        assert np.all(np.abs(np.diff(r.targets, axis=0))[:, :13] < 0.3)  # smooth 10 Hz joint targets


def test_late_cue_scripted_press_still_succeeds() -> None:
    with LookAndPressSim(cue_start=3, cue_frames=2, delay_chunks=1) as s:
        r = run_scripted_episode(s, 3)
        assert r.success
        assert r.lit_rows == list(range(33, 65))
        assert s.press_start_row == 16 * 6


@pytest.mark.parametrize("seed", [0, 1])
def test_pressing_the_wrong_button_fails(sim: LookAndPressSim, seed: int) -> None:
    wrong = CUES[1 - cue_of_seed(seed)]
    r = run_scripted_episode(sim, seed, aim=wrong)
    assert not r.success
    assert r.pressed[wrong] and not r.touched[r.cue]
    assert r.level == 1 and sim.max_reward == 1


def test_unpressed_episode_fails(sim: LookAndPressSim) -> None:
    sim.reset(2, render=False)
    sim.step(None, 3.0, render=False)  # arms stay home
    assert not sim.success and sim.outcome_level() == 0 and not any(sim.touched.values())


def test_outcome_levels_have_stage_names() -> None:
    from memorywam_ros.sim.stages import MAX_REWARD, REWARD_STAGES

    assert len(REWARD_STAGES["look_and_press"]) == MAX_REWARD + 1


def test_snapshot_renders_the_panel_of_its_own_time(sim: LookAndPressSim) -> None:
    """The sim node renders snapshots while physics goes on: the panel follows the snapshot's time."""
    sim.reset(4, render=False)
    snap = sim.snapshot()
    sim.step(None, 4.0, render=False)  # now dark
    assert abs(float(snap.time)) < 1e-9 and abs(sim.physics.data.time - sim.time_s) < 1e-6
    lit = sim.render(("top",), data=snap)["top"][:60].mean((0, 1)) @ LUMA
    dark = _head(sim)[:60].mean((0, 1)) @ LUMA
    assert lit > 80 and dark < 30


def test_demo_bag_records_look_and_press(tmp_path: Path) -> None:
    """`memorywam-sim-demos --task look_and_press`: one bag with TransferCube's topics, read back."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from memorywam_ros.sim import topics
    from memorywam_ros.sim.demos import main

    out = tmp_path / "demos"
    rc = main(["--episodes", "1", "--out", str(out), "--seed", "1", "--quiet", "--task", "look_and_press",
               "--camera-rate", "2", "--head-size", "64", "80", "--wrist-size", "32", "40"])  # fmt: skip
    assert rc == 0
    bags = sorted(p for p in out.iterdir() if p.is_dir())
    assert [b.name for b in bags] == ["episode_0000_seed_1"]
    ts = get_typestore(Stores.ROS2_KILTED)
    heads, commands, text = [], [], []
    with Reader(bags[0]) as reader:
        assert {c.topic for c in reader.connections} == {*topics.IMAGE_TOPICS.values(), topics.JOINT_STATES_TOPIC,
                                                          topics.COMMAND_TOPIC, topics.INSTRUCTION_TOPIC}
        for conn, t_ns, raw in reader.messages():
            msg = ts.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == topics.IMAGE_TOPICS["top"]:
                heads.append((t_ns, msg.data.reshape(msg.height, msg.width, 3)))
            elif conn.topic == topics.COMMAND_TOPIC:
                commands.append(msg.position.copy())
            elif conn.topic == topics.INSTRUCTION_TOPIC:
                text.append(msg.data)
    assert len(text) == 1 and "button" in text[0]
    with LookAndPressSim() as s:
        s.reset(1, render=False)
        assert len(commands) == _num_rows(s)
    t0 = heads[0][0]
    # The default timing (stages.LOOK_AND_PRESS_TIMING): panel (top rows of the head image) lit in the
    # cue frames 2-3 = rows 17 .. 48 (1.6 s < t <= 4.8 s), dark before and after.
    def in_cue(t_ns: int) -> bool:
        return 1.6e9 + 1e6 < t_ns - t0 <= 4.8e9 + 1e6

    for t_ns, img in heads:
        luma = img[:15].reshape(-1, 3).mean(0) @ LUMA
        assert (luma > 80) == in_cue(t_ns), ((t_ns - t0) / 1e9, luma)
    assert sum(in_cue(t) for t, _ in heads) == 6  # 2 Hz: 2.0 .. 4.5 s
    panel = next(img for t, img in heads if in_cue(t))[:15].reshape(-1, 3).mean(0)
    assert np.argmax(panel) == (0 if cue_of_seed(1) == CUES.index("orange") else 2)


def _num_rows(sim: LookAndPressSim) -> int:
    from memorywam_ros.sim.look_and_press import ScriptedLookAndPress

    policy = ScriptedLookAndPress()
    policy.reset(sim)
    return policy.num_steps


def test_cue_clock_starts_at_engage_when_asked() -> None:
    """The simulator node's sim (`clock_on_engage`): after a reset, however long, the panel shows row 0
    (dark for a cue after the anchors) until the first command (`engage`); then the cue frames count
    from that moment, as in the demos (row 0 = the reset). Without it (scripted runs) the clock starts
    at the reset."""
    with LookAndPressSim(cue_start=2, cue_frames=2, clock_on_engage=True) as s:
        s.reset(1, render=False)
        s.step(None, 4.0, render=False)  # rows 17..48 after a reset-started clock: lit there
        assert not s.cue_lit()
        s.engage()
        t0 = s.time_s
        assert not s.cue_lit()  # row 0 of the engaged clock: frame 0, before the cue
        s.step(None, 1.7, render=False)  # row 17: frame 2
        assert s.cue_lit()
        assert not s.cue_lit(t0 - 0.5)  # a snapshot from before the engage stays dark
        s.engage()  # a second call does not restart the clock
        s.step(None, 3.2, render=False)  # row 49: frame 4
        assert not s.cue_lit()
        s.reset(2, render=False)  # the next episode waits for its own first command
        s.step(None, 2.0, render=False)
        assert not s.cue_lit()
    with LookAndPressSim(cue_start=2, cue_frames=2) as s:
        s.reset(1, render=False)
        s.step(None, 1.7, render=False)
        assert s.cue_lit()


def test_a_cue_during_the_anchors_is_lit_for_the_policys_first_observation() -> None:
    """Cue at frames 0-1 (during the anchors): the policy's first observation (row 0, latent frame 0) is
    taken before its first command starts the clock, so the panel is lit from the reset on, as in the
    demos' row 0; after the engage it stays lit through frame 1 (rows 1..16) and goes dark at frame 2."""
    with LookAndPressSim(cue_start=0, cue_frames=2, clock_on_engage=True) as s:
        s.reset(1, render=False)
        assert s.cue_lit()  # the first observation, before any command
        s.step(None, 1.2, render=False)  # the first chunk's inference: still row 0
        assert s.cue_lit()
        s.engage()
        t0 = s.time_s
        assert s.cue_lit(t0 - 0.5)  # a snapshot from before the engage: row 0, lit
        s.step(None, 1.55, render=False)  # row 16: frame 1
        assert s.cue_lit()
        s.step(None, 0.1, render=False)  # row 17: frame 2
        assert not s.cue_lit()
        s.reset(2, render=False)  # the next episode: row 0 again until its own first command
        assert s.cue_lit()


def test_task_table_builds_every_task_and_refuses_foreign_options() -> None:
    from memorywam_ros.sim import demos, tasks
    from memorywam_ros.sim.stages import LOOK_AND_PRESS_TIMING

    assert tasks.OPTIONS["look_and_press"] == LOOK_AND_PRESS_TIMING
    with tasks.make_sim("look_and_press", options={"delay_chunks": 3}) as s:
        assert isinstance(s, LookAndPressSim) and s.delay_chunks == 3
        assert s.cue_start == LOOK_AND_PRESS_TIMING["cue_start"]
    with pytest.raises(ValueError, match="no option cue_start"):
        tasks.make_sim("transfer_cube", options={"cue_start": 1})
    with pytest.raises(ValueError, match="unknown task"):
        tasks.make_sim("stack_cups")
    # memorywam-sim-demos offers exactly the tasks with a scripted demonstrator
    choices = next(a.choices for a in demos.build_parser()._actions if a.dest == "task")
    assert sorted(choices) == sorted(tasks.SCRIPTED)
