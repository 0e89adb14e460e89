"""Passkey probe (bench/passkey.py): the episode construction is pinned; the probe trains and evaluates end to end.

The accuracy is the benchmark's business (bench/results/passkey_*.md); here: the cue sits at frame c
after the anchors, the query at the last frame, the class label on the last chunk only, and a few
training steps run through the trainer's step and the robot's incremental cache into the report.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import passkey as pk

from memorywam_ros.model import MemoryRules
from memorywam_train.dataset import collate


def matched_filter(ep: pk.Episode, cue: str = "spatial") -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame: correlation with each cue pattern (T, K) and with the query marker (T,), ~AMP² where
    present (over the pattern's support: the patch cue covers a quarter of the latent)."""
    cues, query = pk.patterns(cue)
    flat = ep.latents.flatten(1)
    return flat @ cues.flatten(1).T / int(cues[0].ne(0).sum()), flat @ query.flatten() / query.numel()


@pytest.mark.parametrize("cue", pk.CUES)
@pytest.mark.parametrize("delay", [8, 32])
def test_cue_at_frame_c_after_the_anchors_and_query_at_the_last_frame(delay, cue):
    strong = pk.AMP**2 / 2
    for seed in range(16):
        ep = pk.make_episode(seed, delay, cue=cue)
        last = ep.num_frames - 1
        assert pk.MEMORY["n_init"] <= ep.cue_frame < pk.MEMORY["n_init"] + pk.JITTER
        assert last - ep.cue_frame == delay  # D = last frame - c
        cue_score, query_score = matched_filter(ep, cue)
        assert (cue_score > strong).nonzero().tolist() == [[ep.cue_frame, ep.label]]
        assert (query_score > strong).nonzero().flatten().tolist() == [last]
        # distractors are unit noise everywhere else
        others = [t for t in range(ep.num_frames) if t not in (ep.cue_frame, last)]
        assert abs(float(ep.latents[others].std()) - 1.0) < 0.05


def test_uniform_cue_is_one_colour_per_class_spatial_cue_a_texture():
    uniform, query_u = pk.patterns("uniform")
    spatial, query_s = pk.patterns("spatial")
    assert torch.equal(query_u, query_s)  # the query marker does not change with the cue
    flat_u = uniform.flatten(2)  # (K, C, h*w)
    assert torch.equal(flat_u, flat_u[..., :1].expand_as(flat_u))  # the same sign at every position
    assert not torch.equal(spatial.flatten(2), spatial.flatten(2)[..., :1].expand_as(spatial.flatten(2)))
    per_class = flat_u[..., 0]
    assert len({tuple(c.tolist()) for c in per_class}) == pk.NUM_CLASSES  # every class its own colour
    assert float(per_class.abs().min()) == pk.AMP
    with pytest.raises(ValueError, match="cue must be one of"):
        pk.patterns("stripes")


def test_patch_cue_is_the_uniform_colour_on_the_top_left_quarter_only():
    """Look-and-Press's panel in the probe: a plausible bug (the whole frame, the wrong corner, another
    colour than the uniform cue's) changes what the gists have to find."""
    patch, _ = pk.patterns("patch")
    uniform, _ = pk.patterns("uniform")
    h, w = pk.LATENT_HW
    assert torch.equal(patch[:, :, : h // 2, : w // 2], uniform[:, :, : h // 2, : w // 2])
    outside = patch.clone()
    outside[:, :, : h // 2, : w // 2] = 0
    assert torch.count_nonzero(outside) == 0
    assert int(patch[0].ne(0).sum()) * 4 == patch[0].numel()


def test_class_label_only_on_the_last_chunk():
    labels = set()
    for seed in range(40):
        ep = pk.make_episode(seed, 8)
        labels.add(ep.label)
        assert ep.actions.shape == (ep.num_frames, pk.CHUNK, pk.ACTION_DIM)
        assert torch.count_nonzero(ep.actions[:-1]) == 0  # every other chunk: the neutral action
        expected = torch.zeros(pk.CHUNK, pk.ACTION_DIM)
        expected[:, pk.CLASS_JOINT] = float(pk.TARGETS[ep.label])
        assert torch.equal(ep.actions[-1], expected)
        assert pk.decode_class(ep.actions[-1]) == ep.label
    assert labels == set(range(pk.NUM_CLASSES))
    assert pk.NUM_CLASSES >= 4


def test_training_samples_are_whole_episodes_in_the_dataset_layout():
    text = pk.instruction_text()
    data = pk.PasskeyEpisodes(8, text, count=3)
    batch = collate([data[0], data[1], data[2]])
    lengths = [pk.make_episode(i, 8).num_frames for i in range(3)]
    assert batch["latents"].shape[:2] == (3, max(lengths))
    for i, n in enumerate(lengths):
        assert batch["frame_valid"][i].sum() == n
        assert torch.equal(batch["frame_ids"][i, :n], torch.arange(n))
        assert bool(batch["action_mask"][i, :n].all())
        assert torch.equal(batch["actions"][i, :n], pk.make_episode(i, 8).actions)
    with pytest.raises(ValueError, match="evaluation seeds"):
        pk.PasskeyEpisodes(8, text, count=10, seed0=pk.EVAL_SEED0 - 5)


def test_sizes_put_every_delay_beyond_the_window_and_hybrid_cache_under_an_eighth():
    config = pk.probe_config("hybrid")
    assert pk.window_reach(config) == config.video.num_layers * (config.memory.n_recent - 1) + 1
    assert min(pk.DELAYS) > pk.window_reach(config)
    frames = pk.MEMORY["n_init"] + max(pk.DELAYS) + 1  # the shortest episode at the longest delay
    L = config.tokens_per_frame
    hybrid = MemoryRules(config.memory).held_tokens(frames, L)
    full = MemoryRules(pk.probe_config("full").memory).held_tokens(frames, L)
    assert hybrid * 8 <= full


def test_probe_trains_and_evaluates_through_the_cache_end_to_end(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    knobs = {"delays": [4], "steps": 2, "batch": 2, "episodes": 4, "seed": 0}
    stem = tmp_path / "passkey_test"
    result = pk.run(knobs, ["hybrid", "window"], stem, "test", "test")
    saved = json.loads(stem.with_suffix(".json").read_text())
    assert set(saved["cells"]) == {"hybrid@4", "window@4"}
    assert stem.with_suffix(".md").is_file()
    bytes_per_token = pk.probe_config("hybrid").video.num_layers * 2 * 2 * 16 * 4  # layers·(k, v)·heads·dim·fp32
    for key, cell in result["cells"].items():
        policy = cell["policy"]
        assert cell["episodes"] == 4 and 0 <= cell["correct"] <= 4
        assert cell["ci95"][0] <= cell["accuracy"] <= cell["ci95"][1]
        assert cell["latency_ms_median"] > 0 and cell["train"]["train_s"] > 0
        frames = pk.make_episode(pk.EVAL_SEED0 + 3, 4).num_frames  # the last episode evaluated
        config = pk.probe_config(policy)
        assert cell["cache_tokens"] == MemoryRules(config.memory).held_tokens(frames, config.tokens_per_frame)
        assert cell["cache_bytes"] == cell["cache_tokens"] * bytes_per_token
        assert (cell["gist_probe"] is None) == (policy == "window"), key
    assert len(result["cells"]["hybrid@4"]["gist_probe"]["cue"]) == 2  # one accuracy per layer
    write = result["cells"]["hybrid@4"]["gist_write"]
    assert [len(write["cue_gist"]), len(write["cue_video"])] == [2, 2]  # per layer
    assert write["cue_video"][0] > 0.1  # the cue frame's own tokens carry the class, whatever the training
    # a layer-0 gist is its learned embedding at the frame's RoPE position: once centred per cue frame
    # it holds nothing (wrong slots read, or no centring, would show a difference here)
    assert write["cue_gist"][0] < 1e-6
    assert result["cells"]["window@4"]["gist_write"] is None

    # resume: the cells already in the JSON are not trained again; other knobs are refused
    monkeypatch.setattr(pk, "train_cell", lambda *a, **k: pytest.fail("a finished cell was trained again"))
    again = pk.run(knobs, ["hybrid", "window"], stem, "test", "test")
    assert again["cells"] == saved["cells"]
    with pytest.raises(SystemExit, match="other knobs"):
        pk.run(dict(knobs, steps=3), ["hybrid"], stem, "test", "test")


def test_gist_knobs_reach_the_model(tmp_path):
    """--gists 4 --gist-init pooled: the cell's cache holds 4 gists per frame and its model pools them."""
    torch.set_num_threads(1)
    knobs = {"delays": [4], "steps": 2, "batch": 2, "episodes": 4, "seed": 0, "gists": 4, "gist_init": "pooled"}
    cell = pk.run(knobs, ["hybrid"], tmp_path / "passkey_pooled", "test", "test")["cells"]["hybrid@4"]
    config = pk.probe_config("hybrid", num_gists=4, gist_init="pooled")
    frames = pk.make_episode(pk.EVAL_SEED0 + 3, 4).num_frames
    assert cell["cache_tokens"] == MemoryRules(config.memory).held_tokens(frames, config.tokens_per_frame)
    assert cell["cache_tokens"] != MemoryRules(pk.probe_config("hybrid").memory).held_tokens(
        frames, config.tokens_per_frame)
    assert "4 gist(s) per frame, initialised pooled" in (tmp_path / "passkey_pooled.md").read_text()


def test_attention_probe_partitions_what_the_query_chunk_sees():
    """bench/passkey_attention.py: the key categories cover every key the query chunk may see (masses sum
    to 1 per layer) and the evicted cue frame's tokens get none (the memory rule, through the dense mask)."""
    import passkey_attention as pa

    model, _ = pk.train_cell("hybrid", 8, steps=2, batch=2, cue="uniform")
    masses = pa.attention_masses(model, 8, "uniform", episodes=2)
    query = [name for name in masses if name.startswith("query->")]
    for layer in range(model.config.video.num_layers):
        assert sum(masses[name][layer] for name in query) == pytest.approx(1.0, abs=1e-5)
        assert masses["query->cue_tokens"][layer] == 0.0
        assert masses["query->cue_gist"][layer] > 0.0  # the gist stays visible
        assert 0.0 < masses["cue_gist->cue_tokens"][layer] < 1.0  # the gist reads its own frame


class _Interrupt(Exception):
    pass


class _DiesAfter(Sequence):
    """The training episodes, but the process 'dies' (raises) after `calls` samples were drawn."""

    def __init__(self, data, calls: int):
        self.data, self.calls = data, calls

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i):
        if self.calls == 0:
            raise _Interrupt
        self.calls -= 1
        return self.data[i]


def test_an_interrupted_cell_resumes_into_the_uninterrupted_run(tmp_path):
    """bench/memory_training.train_model(checkpoint=...): killed after step 4 of 6 with a checkpoint every
    2 steps, run again, it ends with the very parameters of the run never interrupted (model, AdamW
    moments, noise generator and sample order all restored: dropping any one changes them)."""
    from memory_training import train_model

    torch.set_num_threads(1)
    config = pk.probe_config("hybrid")
    data = pk.PasskeyEpisodes(4, pk.instruction_text(), count=5, cue="uniform")
    kw = {"steps": 6, "batch": 2, "seed": 3, "cond_noise": 0.0, "loss_video_weight": 0.0}
    straight, _ = train_model(config, data, **kw)
    ckpt = tmp_path / "cell.pt"
    with pytest.raises(_Interrupt):
        train_model(config, _DiesAfter(data, calls=2 * 5), checkpoint=ckpt, checkpoint_every=2, **kw)
    assert torch.load(ckpt, weights_only=False)["step"] == 4
    resumed, info = train_model(config, data, checkpoint=ckpt, checkpoint_every=2, **kw)
    assert info["resumed_at"] == 4
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(SystemExit, match="other arguments"):
        train_model(config, data, checkpoint=ckpt, checkpoint_every=2, **dict(kw, steps=8))


def test_relative_class_difference_measures_the_class_signal_against_the_rest():
    """Two classes whose features differ by d on one of four dimensions, on top of a constant c:
    rms(d over 4 dims) / rms(features). Pins the pairwise average for K classes (not the spread
    around the grand mean, half as large), and that a class-free feature reads 0."""
    from memory_training import relative_class_difference

    c, d = 3.0, 0.4
    y = np.array([0, 1] * 50)
    x = np.full((100, 4), c)
    x[y == 1, 0] += d
    rms = np.sqrt((x**2).mean())
    assert relative_class_difference(x, y) == pytest.approx(np.sqrt(d**2 / 4) / rms)
    assert relative_class_difference(np.full((100, 4), c), y) == 0.0
    # three classes at 0, d, 2d: pairwise differences d, d, 2d -> mean 4d/3
    y3 = np.array([0, 1, 2] * 30)
    x3 = np.zeros((90, 1)) + c
    x3[:, 0] += d * y3
    assert relative_class_difference(x3, y3) == pytest.approx((4 * d / 3) / np.sqrt((x3**2).mean()))
    # against a reference scale (the raw features when the class means come from centred ones)
    assert relative_class_difference(x3, y3, 2 * x3) == pytest.approx(relative_class_difference(x3, y3) / 2)


def test_supervised_chunks_keep_only_the_last_chunks_in_the_action_loss(tmp_path, monkeypatch):
    """--supervised-chunks N: the query chunk and the N - 1 before it are in the loss, nothing earlier,
    so the query's share of the loss is 1/N; the knob reaches the cell's training data and its report."""
    text = pk.instruction_text()
    ep = pk.make_episode(3, 32)
    full = pk.training_sample(ep, text, 0)
    assert bool(full["action_mask"].all())
    sample = pk.training_sample(ep, text, 0, supervised=8)
    rows = sample["action_mask"].all(-1)
    assert rows.sum() == 8 and bool(sample["action_mask"].any(-1).eq(rows).all())
    assert bool(rows[-8:].all()) and not bool(rows[: ep.num_frames - 8].any())  # the last 8: the query is in
    assert torch.equal(pk.PasskeyEpisodes(32, text, count=4, supervised=8)[3]["action_mask"], sample["action_mask"])
    batch = collate([sample, pk.training_sample(pk.make_episode(4, 8), text, 1, supervised=8)])
    assert int((batch["action_mask"] & batch["frame_valid"][..., None]).all(-1).sum()) == 16  # padding adds none
    torch.set_num_threads(1)
    knobs = {"delays": [4], "steps": 2, "batch": 2, "episodes": 2, "seed": 0, "supervised_chunks": 3}
    seen = []
    original = pk.PasskeyEpisodes.__getitem__

    def spy(self, i):
        seen.append(self.supervised)
        return original(self, i)

    monkeypatch.setattr(pk.PasskeyEpisodes, "__getitem__", spy)
    pk.run(knobs, ["hybrid"], tmp_path / "passkey_sup", "test", "test")
    assert seen and set(seen) == {3}
    assert "Action loss on the last 3 chunks only" in (tmp_path / "passkey_sup.md").read_text()


def test_cells_made_in_separate_processes_merge_into_one_run(tmp_path, monkeypatch):
    """bench/run_passkey_grid.sh: one process per cell, then `--merge`; the merged run holds each part's
    cell as it was measured and trains nothing; parts made with other knobs, or two parts holding the
    same cell, are refused rather than mixed."""
    torch.set_num_threads(1)
    knobs = {"delays": [4], "steps": 2, "batch": 2, "episodes": 4, "seed": 0}
    parts = tmp_path / "grid.parts"
    made = {p: pk.run(knobs, [p], parts / f"{p}_4", "test", "test")["cells"] for p in ("hybrid", "window")}
    monkeypatch.setattr(pk, "train_cell", lambda *a, **k: pytest.fail("a merged cell was trained again"))
    merged = pk.merge_cells([parts / "hybrid_4.json", parts / "window_4.json"], knobs)
    result = pk.run(knobs, ["hybrid", "window"], tmp_path / "grid", "test", "test", merged)
    assert result["cells"] == {**made["hybrid"], **made["window"]}
    saved = json.loads((tmp_path / "grid.json").read_text())
    assert set(saved["cells"]) == {"hybrid@4", "window@4"}
    assert all(f"| {p} | 4 |" in (tmp_path / "grid.md").read_text() for p in ("hybrid", "window"))
    with pytest.raises(SystemExit, match="other knobs"):
        pk.merge_cells([parts / "hybrid_4.json"], dict(knobs, steps=3))
    with pytest.raises(SystemExit, match="two of the parts"):
        pk.merge_cells([parts / "hybrid_4.json", parts / "hybrid_4.json"], knobs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the passkey grid trains there)")
def test_a_cell_trains_on_the_gpu_as_on_the_cpu():
    """train_model(device="cuda"): flex attention with the block mask instead of the CPU's gathered dense
    mask, the noise drawn on CPU from the same generator, so the first step's losses agree; the model
    comes back on CPU for the evaluation through the cache."""
    from memory_training import train_model

    config = pk.probe_config("hybrid", gist_init="pooled")
    data = pk.PasskeyEpisodes(8, pk.instruction_text(), count=2, cue="patch")
    kw = {"steps": 1, "batch": 2, "seed": 0, "cond_noise": 0.0, "loss_video_weight": 0.0}
    cpu_model, cpu = train_model(config, data, **kw)
    gpu_model, gpu = train_model(config, data, device="cuda", **kw)
    assert gpu["device"] == "cuda" and all(p.device.type == "cpu" for p in gpu_model.parameters())
    assert gpu["final_action_loss"] == pytest.approx(cpu["final_action_loss"], rel=1e-3)
    for (name, a), b in zip(cpu_model.state_dict().items(), gpu_model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=name)
