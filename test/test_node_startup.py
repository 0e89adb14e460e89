"""`memorywam_policy` as its own process on a broken start-up: a corrupted copy of the random tiny
checkpoint (`memorywam-checkpoint init-random --preset tiny`) or a bad parameter. Each must end the
process non-zero with ONE line naming the file / part / parameter and what is wrong, and no
traceback (that only at `--log-level debug`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2 pip wheels or a sourced ROS 2) needed")

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]


def _truncate(rel: str, size: int) -> Callable[[Path], str]:
    def corrupt(ckpt: Path) -> str:
        os.truncate(ckpt / rel, size)
        return str(ckpt / rel)

    return corrupt


def _garbage(rel: str) -> Callable[[Path], str]:
    def corrupt(ckpt: Path) -> str:
        (ckpt / rel).write_text('{"format": "memorywam-checkpoint", garbage')
        return str(ckpt / rel)

    return corrupt


def _remove(rel: str) -> Callable[[Path], str]:
    def corrupt(ckpt: Path) -> str:
        (ckpt / rel).unlink()
        return str((ckpt / rel).parent)  # the model directory that lacks it

    return corrupt


# case: (corrupt the copy -> text the one line must contain, extra parameters, words it must contain)
CASES = {
    "truncated model.safetensors": (_truncate("model/model.safetensors", 1000), [], ["unreadable safetensors"]),
    "garbage memorywam.json": (_garbage("memorywam.json"), [], ["manifest", "not readable JSON"]),
    "missing model/config.json": (_remove("model/config.json"), [], ["config.json missing"]),
    "truncated VAE weights": (_truncate("vae/diffusion_pytorch_model.safetensors", 100_000), [], ["vae part"]),
    "garbage normalization.json": (_garbage("normalization.json"), [], ["normalization part"]),
    "bad parameter": (lambda ckpt: "num_steps", ["num_steps:=abc"], ["expecting type 'INTEGER'"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_startup_failure_is_one_line_naming_the_part(case: str, tiny_checkpoint: Path, tmp_path: Path) -> None:
    corrupt, params, words = CASES[case]
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, ckpt)
    named = corrupt(ckpt)
    cmd = [sys.executable, "-m", "memorywam_ros.ros.policy_node", "--ros-args",
           "-p", f"model_path:={ckpt}", "-p", "robot_config:=aloha_sim.yaml", "-p", "warmup:=false"]
    for p in params:
        cmd += ["-p", p]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT, env=dict(os.environ))
    text = out.stdout + out.stderr
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert out.returncode != 0, text
    assert "Traceback" not in text, text
    assert len(lines) == 1, text
    assert "start-up failed" in lines[0] and named in lines[0], lines[0]
    for w in words:
        assert w in lines[0], lines[0]
