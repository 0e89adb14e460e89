"""The simulator setup a simulator checkpoint was trained for (`<checkpoint>/sim.json`).

scripts/train_sim.sh writes it next to the exported checkpoint: {"task": ..., "head_fovy_deg": ...},
the framing of the head camera its demonstrations were recorded with. A policy sees the world
through the framing it was trained on, so memorywam-demo, the launch file's sim:=true and the
benchmarks start the simulator with it unless told otherwise. Robot checkpoints have none.
Kept free of MuJoCo imports: the demo and the launch file read it before any simulator starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SIM_SETUP_FILE = "sim.json"
HEAD_FOVY_RANGE_DEG = (1.0, 170.0)
"""The head camera's vertical field of view a simulator accepts (AlohaSim, the sim node's parameter)."""


def write_sim_setup(model_dir: str | Path, task: str, head_fovy_deg: float) -> Path:
    path = Path(model_dir) / SIM_SETUP_FILE
    path.write_text(json.dumps({"task": task, "head_fovy_deg": float(head_fovy_deg)}, indent=2) + "\n")
    checkpoint_sim_setup(model_dir)  # what we write must read back
    return path


def checkpoint_sim_setup(model_dir: str | Path) -> dict[str, Any]:
    """`<model_dir>/sim.json`, checked ({} when absent): head_fovy_deg a number in 1..170 degrees."""
    path = Path(model_dir) / SIM_SETUP_FILE
    if not path.is_file():
        return {}
    try:
        setup = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from err
    if not isinstance(setup, dict):
        raise ValueError(f"{path}: expected an object, got {type(setup).__name__}")
    fovy = setup.get("head_fovy_deg")
    lo, hi = HEAD_FOVY_RANGE_DEG
    if fovy is not None and (isinstance(fovy, bool) or not isinstance(fovy, (int, float)) or not lo <= fovy <= hi):
        raise ValueError(f"{path}: head_fovy_deg must be a number of degrees in {lo:g}..{hi:g}, got {fovy!r}")
    return setup


def sim_node_parameters(model_dir: str | Path) -> dict[str, Any]:
    """The simulator node's parameters for a checkpoint (bringup.launch.py sim:=true): the task and
    head framing of its sim.json; {} without one (the node's defaults: transfer_cube, 78°). Without
    the task, a Look-and-Press or Insertion checkpoint would drive the TransferCube scene."""
    setup = checkpoint_sim_setup(model_dir)
    return {k: setup[k] for k in ("task", "head_fovy_deg") if setup.get(k) is not None}


def head_fovy_for(model_dir: str | Path, explicit: float | None) -> float | None:
    """The head framing to start the simulator with: `explicit` if given, else the checkpoint's
    sim.json, else None (the simulator's default, gym-aloha's 78°)."""
    if explicit is not None:
        return float(explicit)
    fovy = checkpoint_sim_setup(model_dir).get("head_fovy_deg")
    return None if fovy is None else float(fovy)
