"""A simulator checkpoint's sim.json (memorywam_ros/sim/sim_setup.py): the head framing its demos were
recorded with reaches the simulator memorywam-demo starts, unless --head-fovy says otherwise; a broken
file is refused with its path, never silently replaced by the default framing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memorywam_ros.ros import demo
from memorywam_ros.sim.sim_setup import SIM_SETUP_FILE, checkpoint_sim_setup, head_fovy_for, write_sim_setup


def _fovy_arg(sim_args: list[str]) -> str | None:
    values = [a for a in sim_args if a.startswith("head_fovy_deg:=")]
    assert len(values) <= 1
    return values[0] if values else None


def test_written_setup_reads_back_and_sets_the_demo_framing(tmp_path: Path) -> None:
    assert checkpoint_sim_setup(tmp_path) == {} and head_fovy_for(tmp_path, None) is None
    write_sim_setup(tmp_path, "transfer_cube", 36)
    assert checkpoint_sim_setup(tmp_path) == {"task": "transfer_cube", "head_fovy_deg": 36.0}
    assert head_fovy_for(tmp_path, None) == 36.0 and head_fovy_for(tmp_path, 50) == 50.0

    args = demo.build_parser().parse_args([])
    assert _fovy_arg(demo.sim_arguments(args, tmp_path)) == "head_fovy_deg:=36.0"
    args = demo.build_parser().parse_args(["--head-fovy", "78"])
    assert _fovy_arg(demo.sim_arguments(args, tmp_path)) == "head_fovy_deg:=78.0"
    args = demo.build_parser().parse_args([])
    assert _fovy_arg(demo.sim_arguments(args, tmp_path / "robot_checkpoint")) is None  # the sim's default


@pytest.mark.parametrize("content", ["{not json", "[36]", '{"head_fovy_deg": 0}', '{"head_fovy_deg": "36"}',
                                     '{"head_fovy_deg": true}', '{"head_fovy_deg": 200}'])
def test_bad_setup_is_refused_with_its_path(tmp_path: Path, content: str) -> None:
    (tmp_path / SIM_SETUP_FILE).write_text(content)
    with pytest.raises(ValueError, match=r"sim\.json"):
        checkpoint_sim_setup(tmp_path)
    with pytest.raises(SystemExit, match=r"sim\.json"):
        demo.sim_arguments(demo.build_parser().parse_args([]), tmp_path)


def test_shipped_simulator_checkpoints_name_their_framing() -> None:
    root = Path(__file__).resolve().parents[1] / "checkpoints"
    for name, task in (("sim_transfer_cube", "transfer_cube"), ("sim_look_and_press", "look_and_press")):
        setup = json.loads((root / name / SIM_SETUP_FILE).read_text())
        assert setup["task"] == task and 1 <= setup["head_fovy_deg"] <= 170


def test_a_checkpoint_runs_only_on_the_task_it_was_trained_for(tmp_path: Path) -> None:
    """An Insertion checkpoint started on TransferCube would move the arms towards a peg that is not
    there: the demo refuses it before any node starts, naming the task to use."""
    write_sim_setup(tmp_path, "insertion", 36)
    with pytest.raises(SystemExit, match=r"trained for the insertion task.*--task insertion"):
        demo.sim_arguments(demo.build_parser().parse_args([]), tmp_path)
    args = demo.build_parser().parse_args(["--task", "insertion"])
    assert "task:=insertion" in demo.sim_arguments(args, tmp_path)


def test_the_launch_files_simulator_runs_the_checkpoints_task_and_framing(tmp_path: Path) -> None:
    """bringup.launch.py sim:=true hands the sim node these: a Look-and-Press checkpoint gets its own
    scene, not the node's default TransferCube; a robot checkpoint (no sim.json) gets the defaults."""
    from memorywam_ros.sim.sim_setup import sim_node_parameters

    assert sim_node_parameters(tmp_path) == {}
    write_sim_setup(tmp_path, "look_and_press", 36)
    assert sim_node_parameters(tmp_path) == {"task": "look_and_press", "head_fovy_deg": 36.0}
    assert "sim_node_parameters" in (Path(__file__).resolve().parents[1] / "launch/bringup.launch.py").read_text()
