"""The gym-aloha simulator, the scripted TransferCube demonstrator and the demo bags (no ROS)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("gym_aloha")

from memorywam_ros.sim import topics
from memorywam_ros.sim.aloha import CAMERAS, JOINT_NAMES, AlohaSim

REPO = Path(__file__).resolve().parents[1]
SMALL = {"top": (64, 80), "left_wrist": (32, 40), "right_wrist": (32, 40)}


@pytest.fixture(scope="module")
def sim() -> Iterator[AlohaSim]:
    with AlohaSim("transfer_cube") as s:
        yield s


def test_joint_order_and_names(sim: AlohaSim) -> None:
    assert len(JOINT_NAMES) == 14 and sim.joint_names == JOINT_NAMES
    for arm, side in enumerate(("left", "right")):
        block = JOINT_NAMES[7 * arm : 7 * arm + 7]
        assert all(n.startswith(f"{side}_arm_") for n in block)
        assert block[0].endswith("waist") and block[6].endswith("gripper")
    assert sim.joint_limits.shape == (14, 2) and np.all(sim.joint_limits[:, 0] < sim.joint_limits[:, 1])
    assert np.all(sim.home >= sim.joint_limits[:, 0]) and np.all(sim.home <= sim.joint_limits[:, 1])


def test_reset_render_shapes_and_default_sizes(sim: AlohaSim) -> None:
    obs = sim.reset(seed=0)
    assert set(obs.images) == set(CAMERAS)
    assert obs.images["top"].shape == (256, 320, 3)  # the mosaic's head tile
    assert obs.images["left_wrist"].shape == obs.images["right_wrist"].shape == (128, 160, 3)
    assert all(im.dtype == np.uint8 and im.max() > 0 for im in obs.images.values())
    assert obs.qpos.shape == (14,) and obs.time_s == 0.0
    np.testing.assert_allclose(obs.qpos, sim.home, atol=1e-6)
    assert not sim.success and sim.reward == 0
    # the cube position follows gym-aloha's seeded sampler
    cube0 = sim.env_state[:3].copy()
    sim.reset(seed=0, render=False)
    np.testing.assert_allclose(sim.env_state[:3], cube0)
    sim.reset(seed=1, render=False)
    assert not np.allclose(sim.env_state[:3], cube0)


def test_step_holds_targets_for_dt_and_clamps(sim: AlohaSim) -> None:
    sim.reset(seed=0, render=False)
    target = sim.home.copy()
    target[0] = 0.3  # left waist
    target[13] = 7.0  # right gripper, far above its limit
    obs = sim.step(target, dt=0.1, render=False)
    assert obs.images == {} and obs.time_s == pytest.approx(0.1)
    assert sim.targets[13] == pytest.approx(sim.joint_limits[13, 1])
    for _ in range(5):
        obs = sim.step(None, dt=0.1, render=False)  # None holds the last targets
    assert obs.time_s == pytest.approx(0.6)
    assert abs(obs.qpos[0] - 0.3) < 0.02
    sim.step(None, dt=0.003, render=False)  # rounded to whole 2 ms physics steps
    assert sim.time_s == pytest.approx(0.604)
    with pytest.raises(ValueError):
        sim.step(np.full(14, np.nan), dt=0.1)
    with pytest.raises(ValueError):
        sim.step(np.zeros(13), dt=0.1)


def test_robot_config_matches_the_model(sim: AlohaSim) -> None:
    cfg = yaml.safe_load((REPO / "config/robots/aloha_sim.yaml").read_text())
    assert tuple(cfg["joint_names"]) == sim.joint_names
    np.testing.assert_allclose(cfg["position_min"], sim.joint_limits[:, 0], atol=1e-4)
    np.testing.assert_allclose(cfg["position_max"], sim.joint_limits[:, 1], atol=1e-4)
    np.testing.assert_allclose(cfg["home"], sim.home, atol=1e-4)
    assert len(cfg["velocity_max"]) == 14 and min(cfg["velocity_max"]) > 0


def test_robot_config_parses_with_the_policy_nodes_parser() -> None:
    robot_config = pytest.importorskip("memorywam_ros.runtime.robot_config")  # imports torch (~5 s cold)
    cfg = robot_config.RobotConfig.from_yaml(REPO / "config/robots/aloha_sim.yaml")
    assert cfg.num_joints == 14 and tuple(cfg.joint_names) == JOINT_NAMES


@pytest.mark.parametrize("task", ["transfer_cube", "insertion"])
def test_scripted_demonstrator_succeeds_within_the_velocity_limits(task: str) -> None:
    """Each task's scripted demonstrator (sim/tasks.py SCRIPTED) reaches reward 4 on unseen seeds with a
    10 Hz stream the robot config accepts (arm pi rad/s, gripper 5/s). Insertion's phase 2 aims the peg
    from the objects' poses in the grippers: a sign or axis error there leaves it at reward 2-3."""
    from memorywam_ros.sim.tasks import SCRIPTED, scripted_success

    run = scripted_success(task)

    with AlohaSim(task) as s:
        for seed in (0, 1, 7):
            res = SCRIPTED[task][1](s, seed)
            assert res.success and res.max_reward == 4, f"{task} seed {seed}: max reward {res.max_reward}"
            assert res.targets.shape[1] == 14
            clipped = np.clip(res.targets, s.joint_limits[:, 0], s.joint_limits[:, 1])
            vel = np.abs(np.diff(clipped, axis=0)).max(axis=0) * 10.0
            assert np.all(vel[[0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]] < np.pi) and np.all(vel[[6, 13]] < 5.0)
        assert run(s, 3, 0.0)


def test_a_demonstrator_refuses_the_other_task() -> None:
    from memorywam_ros.sim.scripted import ScriptedTransferCube
    from memorywam_ros.sim.scripted_insertion import ScriptedInsertion

    with AlohaSim("insertion") as s:
        with pytest.raises(ValueError, match="transfer_cube task only"):
            ScriptedTransferCube().reset(s)
        ScriptedInsertion().reset(s)


def test_scripted_rows_observe_before_each_command(sim: AlohaSim) -> None:
    """scripted_rows: the same commands as the plain scripted run; row r's joint state is the one
    after r commands (row 0 = home), images only on the rows asked for."""
    from memorywam_ros.sim.scripted import run_scripted_episode, scripted_rows

    plain = run_scripted_episode(sim, 2)
    rows = scripted_rows(sim, 2, render_rows={0, 5})
    np.testing.assert_array_equal(rows.targets, plain.targets)
    assert rows.success == plain.success
    np.testing.assert_allclose(rows.qpos[0], sim.home, atol=1e-3)
    assert set(rows.images[0]) == set(CAMERAS) and rows.images[1] == {} and set(rows.images[5]) == set(CAMERAS)
    # after row 0's command (held 0.1 s) the arm has moved towards it: row 1 differs from row 0
    assert not np.allclose(rows.qpos[1], rows.qpos[0])
    assert rows.cube_xyz.shape == (3,) and 0.0 <= rows.cube_xyz[0] <= 0.2


def test_head_framing_narrows_the_view() -> None:
    """head_fovy_deg: the workspace framing (50°) shows the cube ~(tan 39° / tan 25°)^2 = 2.8x larger than
    gym-aloha's 78°; the wrists are untouched; out-of-range values are refused."""
    from memorywam_ros.sim.aloha import GYM_ALOHA_HEAD_FOVY_DEG, WORKSPACE_HEAD_FOVY_DEG

    red = {}
    wrist = {}
    for fovy in (GYM_ALOHA_HEAD_FOVY_DEG, WORKSPACE_HEAD_FOVY_DEG):
        with AlohaSim("transfer_cube", head_fovy_deg=fovy) as s:
            im = s.reset(seed=3).images
            top = im["top"].astype(int)
            red[fovy] = int(((top[..., 0] > 150) & (top[..., 1] < 80) & (top[..., 2] < 80)).sum())
            wrist[fovy] = im["left_wrist"]
    assert 2.0 < red[WORKSPACE_HEAD_FOVY_DEG] / red[GYM_ALOHA_HEAD_FOVY_DEG] < 3.6, red
    np.testing.assert_array_equal(wrist[GYM_ALOHA_HEAD_FOVY_DEG], wrist[WORKSPACE_HEAD_FOVY_DEG])
    with pytest.raises(ValueError, match="head_fovy_deg"):
        AlohaSim("transfer_cube", head_fovy_deg=0.0)


def test_insertion_task_resets() -> None:
    with AlohaSim("insertion", camera_sizes=SMALL) as s:
        obs = s.reset(seed=0)
        assert obs.images["top"].shape == (64, 80, 3) and s.env_state.shape == (14,)
        s.step(s.home, dt=0.1, render=False)
        assert not s.success


def test_demo_bag_topics_types_counts(tmp_path: Path) -> None:
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    from memorywam_ros.sim.demos import main
    from memorywam_ros.sim.scripted import ScriptedTransferCube

    out = tmp_path / "demos"
    rate = 10.0  # the default is 30 Hz; 10 Hz keeps this test at a third of the renders
    rc = main(["--episodes", "1", "--out", str(out), "--seed", "0", "--quiet", "--camera-rate", str(rate),
               "--head-size", "64", "80", "--wrist-size", "32", "40"])  # fmt: skip
    assert rc == 0
    bags = sorted(p for p in out.iterdir() if p.is_dir())
    assert [b.name for b in bags] == ["episode_0000_seed_0"]
    assert list(bags[0].glob("*.mcap")) and (bags[0] / "metadata.yaml").exists()

    # expected counts from the timeline: commands at 10 Hz, the last one held for 0.1 s
    n_cmd = ScriptedTransferCube().num_steps
    end_step = n_cmd * 50  # 2 ms physics steps
    n_joint = end_step // 10 + 1  # 50 Hz, both ends included
    n_img = sum(1 for i in range(10_000) if round(i * (1 / rate) / 0.002) <= end_step)
    expected = {
        topics.IMAGE_TOPICS["top"]: ("sensor_msgs/msg/Image", n_img),
        topics.IMAGE_TOPICS["left_wrist"]: ("sensor_msgs/msg/Image", n_img),
        topics.IMAGE_TOPICS["right_wrist"]: ("sensor_msgs/msg/Image", n_img),
        "/joint_states": ("sensor_msgs/msg/JointState", n_joint),
        "/memorywam_policy/joint_command": ("sensor_msgs/msg/JointState", n_cmd),
        "/instruction": ("std_msgs/msg/String", 1),
    }
    ts = get_typestore(Stores.ROS2_KILTED)
    # Reader on the directory: the path where metadata and storage disagreeing silently yields 0 messages
    with Reader(bags[0]) as reader:
        assert {c.topic: (c.msgtype, c.msgcount) for c in reader.connections} == expected
        seen: Counter[str] = Counter()
        last: dict[str, int] = {}
        for conn, t_ns, raw in reader.messages():
            seen[conn.topic] += 1
            msg = ts.deserialize_cdr(raw, conn.msgtype)
            if conn.msgtype == "std_msgs/msg/String":
                assert "cube" in msg.data
                continue
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            assert stamp == t_ns and stamp > last.get(conn.topic, 0)
            last[conn.topic] = stamp
            if conn.msgtype == "sensor_msgs/msg/Image":
                cam = next(c for c, t in topics.IMAGE_TOPICS.items() if t == conn.topic)
                assert (msg.height, msg.width) == SMALL[cam] and msg.encoding == "rgb8"
                assert msg.step == msg.width * 3 and msg.data.size == msg.height * msg.step
                assert msg.header.frame_id == topics.FRAME_IDS[cam]
            else:
                assert tuple(msg.name) == JOINT_NAMES and msg.position.shape == (14,)
        assert dict(seen) == {k: v[1] for k, v in expected.items()}
        # the three streams share one clock: same first and last stamps (start / end of the episode)
        assert len({last[t] for t in topics.IMAGE_TOPICS.values()}) == 1


def test_sim_package_imports_without_ros() -> None:
    code = (
        "import sys; import memorywam_ros.sim.aloha, memorywam_ros.sim.scripted, memorywam_ros.sim.demos; "
        "bad = [m for m in ('rclpy', 'torch') if m in sys.modules]; assert not bad, bad"
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
