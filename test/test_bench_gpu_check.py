"""bench/gpu_check.py, the prepared first-GPU command, runs end to end in --tiny mode (CPU, CI).

The paper-size rows need CUDA; this keeps the script from rotting before a GPU runs it, and pins
what the tiny run shows: the cache follows the formula at every N, training steps run under FSDP,
and compiled flex attention compiles once per length bucket over the training lengths.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_runs_and_writes_json(tmp_path):
    pytest.importorskip("torch.nn.attention.flex_attention")
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--tiny", "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check_tiny.json").read_text())
    assert result["mode"] == "tiny" and [r["frames"] for r in result["inference"]] == [16, 400, 1600]
    assert all(r["cache_tokens"] == r["formula_tokens"] for r in result["inference"])
    training = result["training"]
    assert [r["frames"] for r in training["rows"]] == [3, 4, 5]  # S 672, 936, 1200
    assert all(r["loss"] > 0 and r["step_s"] > 0 for r in training["rows"])
    assert training["cpu_flex_compiles"]["compiles"] == 2  # three lengths, buckets 1024 and 2048
    assert "compiles during training" in out.stdout
