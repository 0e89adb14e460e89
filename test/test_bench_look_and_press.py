"""bench/look_and_press.py: the table counts episodes across resumed blocks, the probe reads what is there.

The closed-loop numbers are the benchmark's business (bench/results/look_and_press.md); here: a cell
saved in blocks is summed into one success rate with its Wilson interval, the stages and the cache at
episode end, and the per-frame probe says 50 % where two cue classes' latents are identical and 100 %
where they differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import look_and_press as lp_bench


def _episode(seed: int, success: bool, cache: int) -> dict:
    return {"seed": seed, "success": success, "stage": "success" if success else "touched the wrong button only",
            "cache_bytes_end": cache}


def test_cell_blocks_are_summed_into_one_rate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lp_bench, "CELLS", tmp_path / "cells")
    monkeypatch.setattr(lp_bench, "RESULTS", tmp_path)
    first = "python bench/look_and_press.py eval --model m --policy window --cue-start 2 --episodes 2 --block 2"
    cell = {"policy": "window", "cue_start": 2, "model": "m", "command": first, "blocks": [
        {"per_episode": [_episode(1, True, 100), _episode(4, False, 100)], "chunk_latency": {"n": 5, "p50_ms": 900.0},
         "violations": [], "cache_bytes_end_max": 100, "commands": 10},
        {"per_episode": [_episode(3, True, 300)], "chunk_latency": {"n": 5, "p50_ms": 1100.0},
         "violations": ["x"], "cache_bytes_end_max": 300, "commands": 10}]}
    lp_bench.cell_path(2, "window").parent.mkdir(parents=True)
    lp_bench.cell_path(2, "window").write_text(json.dumps(cell))
    monkeypatch.setattr(lp_bench, "passkey_cells", lambda: [])
    out = lp_bench.table(None)
    (row,) = out["look_and_press"]
    assert (row["successes"], row["episodes"]) == (2, 3)
    # resumed to 3 episodes after a first run of 2: the command that makes the row says 3
    assert row["command"] == first.replace("--episodes 2", "--episodes 3")
    lo, hi = row["ci95"]
    assert 0.2 < lo < 2 / 3 < hi < 1.0  # Wilson around 2/3 with n = 3
    assert row["stages"] == {"success": 2, "touched the wrong button only": 1}
    assert row["cache_bytes_end_median"] == 100 and row["violations"] == 1 and row["latency_p50_ms"] == 1000.0
    from memorywam_ros.sim.look_and_press import CUES, cue_of_seed

    expected = {c: [0, 0] for c in CUES}  # successes / episodes per the seed's cue: seeds 1, 3 won, 4 lost
    for seed, won in ((1, True), (4, False), (3, True)):
        expected[CUES[cue_of_seed(seed)]][0] += won
        expected[CUES[cue_of_seed(seed)]][1] += 1
    assert len({cue_of_seed(s) for s in (1, 4, 3)}) == 2  # both cues among the seeds
    assert row["per_cue"] == expected
    md = (tmp_path / "look_and_press.md").read_text()
    assert "| cue after the anchors (frames 2-3) | 5 | window | 67% (2/3) |" in md
    assert f"`{row['command']}`" in md
    assert ", ".join(f"{c} {k}/{n}" for c, (k, n) in expected.items()) in md
    assert (tmp_path / "look_and_press.png").stat().st_size > 0


def test_a_training_variant_gets_its_own_cell_and_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lp_bench, "CELLS", tmp_path / "cells")
    monkeypatch.setattr(lp_bench, "RESULTS", tmp_path)
    monkeypatch.setattr(lp_bench, "passkey_cells", lambda: [])
    assert lp_bench.cell_path(2, "hybrid", "sd5") != lp_bench.cell_path(2, "hybrid")
    block = {"chunk_latency": {"n": 0}, "violations": [], "cache_bytes_end_max": 1, "commands": 1}
    lp_bench.CELLS.mkdir()
    for variant, wins in (("", [False, False]), ("sd5", [True, True])):
        cell = {"policy": "hybrid", "variant": variant, "cue_start": 2, "model": "m", "command": "c",
                "blocks": [{**block, "per_episode": [_episode(i, w, 1) for i, w in enumerate(wins)]}]}
        lp_bench.cell_path(2, "hybrid", variant).write_text(json.dumps(cell))
    rows = lp_bench.table(None)["look_and_press"]
    assert [(r["variant"], r["successes"]) for r in rows] == [("", 0), ("sd5", 2)]
    md = (tmp_path / "look_and_press.md").read_text()
    assert "| hybrid | 0% (0/2) |" in md and "| hybrid (sd5) | 100% (2/2) |" in md
    with pytest.raises(SystemExit, match="variant"):
        lp_bench.main(["eval", "--model", "m", "--policy", "hybrid", "--cue-start", "2", "--variant", "../x"])


def test_a_longer_delay_gets_its_own_cell_and_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model trained and run with another delay must not resume (or overwrite) the default delay's
    cell, and its row says the delay: the two results answer different questions."""
    monkeypatch.setattr(lp_bench, "CELLS", tmp_path / "cells")
    monkeypatch.setattr(lp_bench, "RESULTS", tmp_path)
    monkeypatch.setattr(lp_bench, "passkey_cells", lambda: [])
    # the first cells (5 dark chunks) keep their untagged names whatever the simulator's default becomes
    assert lp_bench.UNTAGGED_DELAY == 5 and lp_bench.cell_path(2, "window").name == "c2_window.json"
    assert lp_bench.cell_path(2, "window", delay_chunks=5) == lp_bench.cell_path(2, "window")
    assert lp_bench.cell_path(2, "window", delay_chunks=22).name == "c2_d22_window.json"
    block = {"chunk_latency": {"n": 0}, "violations": [], "cache_bytes_end_max": 1, "commands": 1}
    lp_bench.CELLS.mkdir()
    for delay, wins in ((22, [False, True]), (5, [True, True])):
        cell = {"policy": "window", "variant": "", "cue_start": 2, "delay_chunks": delay, "model": "m", "command": "c",
                "blocks": [{**block, "per_episode": [_episode(i, w, 1) for i, w in enumerate(wins)]}]}
        lp_bench.cell_path(2, "window", delay_chunks=delay).write_text(json.dumps(cell))
    rows = lp_bench.table(None)["look_and_press"]
    assert [(r["delay_chunks"], r["successes"]) for r in rows] == [(5, 2), (22, 1)]
    md = (tmp_path / "look_and_press.md").read_text()
    assert "| 5 | window | 100% (2/2) |" in md and "| 22 | window | 50% (1/2) |" in md


def test_each_block_names_the_weights_that_played_it(tmp_path: Path, tiny_checkpoint) -> None:
    """weights_digest: a copied checkpoint (the shipped one is a copy of a runs/ export) has the same
    digest; one changed weight changes it, so a cell resumed with a different model shows it."""
    import shutil

    from safetensors.torch import load_file, save_file

    copy = tmp_path / "copy"
    shutil.copytree(tiny_checkpoint, copy)
    assert lp_bench.weights_digest(copy / "model") == lp_bench.weights_digest(tiny_checkpoint / "model")
    weights = copy / "model" / "model.safetensors"
    tensors = load_file(str(weights))
    save_file(tensors, str(weights))  # rewritten unchanged: the digest below differs by the weight alone
    before = lp_bench.weights_digest(copy / "model")
    name = next(iter(tensors))
    tensors[name].view(-1)[0] += 1.0
    save_file(tensors, str(weights))
    assert lp_bench.weights_digest(copy / "model") != before


def test_probe_is_chance_where_the_classes_are_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gym_aloha")
    from safetensors.numpy import save_file

    from memorywam_ros.sim.look_and_press import cue_of_seed

    monkeypatch.setattr(lp_bench, "RESULTS", tmp_path)
    rng = np.random.default_rng(0)
    scene = rng.normal(size=(4, 48, 4, 4)).astype(np.float32)
    for seed in range(1000, 1016):
        lat = scene.copy()
        lat[2, :, :2] += 0.3 * (1 if cue_of_seed(seed) else -1)  # frame 2 carries the cue, the others not
        save_file({"latents": lat}, str(tmp_path / f"episode_seed_{seed}.safetensors"))
    args = type("A", (), {"latents": str(tmp_path), "cue_start": 0, "cue_frames": 1, "delay_chunks": 1,
                          "ridge": 10.0, "vae": None})()
    acc = [f["accuracy"] for f in lp_bench.probe(args)["per_frame"]]
    assert acc == [0.5, 0.5, 1.0, 0.5]


def test_gist_probe_reads_the_cue_from_the_cue_frames_gists(tmp_path: Path, tiny_checkpoint) -> None:
    """Through the robot's cache path (Policy.observe) on a random tiny hybrid checkpoint: the gists of
    the frame that showed the cue carry it (their last layer's keys/values have attended to it), the
    gists of the frame before it cannot (causal): a wrong frame -> slot lookup fails one of the two."""
    pytest.importorskip("gym_aloha")
    from safetensors.numpy import save_file

    from memorywam_ros.runtime.policy import Policy
    from memorywam_ros.sim.look_and_press import cue_of_seed

    policy = Policy.from_pretrained(tiny_checkpoint, device="cpu")
    config = policy.model.config
    assert policy.model.rules.num_gists > 0
    shape = (config.video.in_channels, config.latent_height, config.latent_width)
    rng = np.random.default_rng(0)
    scene = rng.normal(size=(5, *shape)).astype(np.float32)
    state_dim = config.action.proprio_dim
    for seed in range(1000, 1012):
        lat = scene.copy()
        lat[2] += 2.0 * (1 if cue_of_seed(seed) else -1)  # frame 2 shows the cue
        save_file({"latents": lat, "proprio": np.zeros((5, state_dim), np.float32)},
                  str(tmp_path / f"episode_seed_{seed}.safetensors"))
    args = type("A", (), {"model": str(tiny_checkpoint), "latents": str(tmp_path), "cue_start": 2, "cue_frames": 1,
                          "delay_chunks": 1, "frames": [1, 2], "limit": 50, "ridge": 10.0, "out": None})()
    out = lp_bench.gist_probe(args)
    acc = {f["frame"]: f["accuracy_per_layer"] for f in out["per_frame"]}
    assert acc[1] == [0.5] * config.video.num_layers  # before the cue: identical in every episode
    assert acc[2][-1] == 1.0
    (tokens,) = out["cue_frame_video_tokens"]  # the cue frame's own video tokens, read while in the window
    assert tokens["frame"] == 2 and tokens["accuracy_per_layer"] == [1.0] * config.video.num_layers
    assert min(tokens["relative_cue_difference_per_layer"]) > 0.01  # the +-2 offset on every latent


def test_passkey_cells_keep_the_longest_run_per_cue_gists_loss_device_policy_and_delay(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A longer run replaces a shorter one of the same (cue, gists, policy, D) only: pooled gists never
    replace learned ones, a patch cue never a uniform one, a loss on the last chunks never one on all,
    a GPU-trained cell never a CPU-trained one (its latency is another machine's), and quick smoke runs
    are left out."""
    monkeypatch.setattr(lp_bench, "RESULTS", tmp_path)

    def run(name: str, preset: str, steps: int, acc: float, policies=("hybrid", "full"), **knobs) -> None:
        cells = {f"{p}@8": {"policy": p, "delay": 8, "accuracy": acc} for p in policies}
        (tmp_path / f"passkey_{name}.json").write_text(json.dumps(
            {"preset": preset, "command": name, "knobs": {"steps": steps, **knobs}, "cells": cells}))

    run("a", "full", 2000, 0.25, cue="uniform")
    run("b", "full", 6000, 1.0, policies=("hybrid",), cue="uniform")
    run("c", "full", 9000, 0.5, policies=("hybrid",), cue="uniform", gists=1, gist_init="pooled")
    run("d", "full", 9000, 0.6, cue="patch")
    run("e", "full", 9999, 0.9, policies=("hybrid",), cue="uniform", gists=1, gist_init="pooled", supervised_chunks=8)
    run("f", "full", 99999, 0.7, policies=("hybrid",), cue="uniform", gists=1, gist_init="pooled",
        supervised_chunks=8, device="cuda")
    run("quick", "quick", 99999, 0.0, cue="uniform")
    got = {(c["cue"], c["gists"], c["loss_chunks"], c["device"], c["policy"]): (c["accuracy"], Path(c["file"]).name)
           for c in lp_bench.passkey_cells()}
    assert got == {
        ("uniform", "1 learned", "all", "cpu", "hybrid"): (1.0, "passkey_b.json"),
        ("uniform", "–", "all", "cpu", "full"): (0.25, "passkey_a.json"),
        ("uniform", "1 pooled", "all", "cpu", "hybrid"): (0.5, "passkey_c.json"),
        ("uniform", "1 pooled", "last 8", "cpu", "hybrid"): (0.9, "passkey_e.json"),
        ("uniform", "1 pooled", "last 8", "cuda", "hybrid"): (0.7, "passkey_f.json"),
        ("patch", "1 learned", "all", "cpu", "hybrid"): (0.6, "passkey_d.json"),
        ("patch", "–", "all", "cpu", "full"): (0.6, "passkey_d.json"),
    }
