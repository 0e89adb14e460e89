"""Memory capability, part 2: hybrid vs window vs full (and ablations) on the simulated dual arm.

    .venv/bin/python bench/memory_dual_arm.py --quick --threads 1   # smoke run, minutes (NOT the result)
    .venv/bin/python bench/memory_dual_arm.py --threads 1           # the result: 50 demos, 1500 steps, 25 episodes

Writes bench/results/memory_dual_arm_{quick,full}.{json,md,png} (suffixed `_noblank`, `_stream`,
`_small` for the non-default --no-blank, --vae-mode stream, --model small). Part 1 (MiniGrid
Memory) is bench/memory_capability.py; its VAE seed is imported from there, and both parts train
through the same loop (`train_model`, bench/memory_training.py; the interval, `wilson`, bench/binomial.py).
The task and its decisions (blind head after the anchor frames, 3.2 s wait at home, the reach
metric, the mosaic size) are in memorywam_ros/sim/memory_transfer.py.

Pipeline:
 1. Scripted TransferCube demonstrations (`scripted_episode`: wait DELAY_CHUNKS chunks at home, then
    `ScriptedTransferCube`) on training seeds 0, 1, ..., rendered in memory at the runtime's time
    scale (10 Hz rows, 16-row chunks, 4 mosaics per latent frame at `observation_substeps`, frame 0 =
    the first mosaic alone) through the same blind-head wrapper as the evaluation; failed scripted
    episodes are skipped (like memorywam-sim-demos). 125 rows -> 8 latent frames per episode.
 2. One frozen random tiny Wan2.2 VAE (part 1's seed) whose latents_mean/std are calibrated on the
    mosaics of the first 20 demonstrations (part 1's reason: with the Wan2.2 statistics a random
    encoder's latents are ~0.1 std and the conditioning noise would drown them). Latents: one
    encode call per latent frame through `PerFrameVAEEncoder` (default; the causal cache cut at
    every frame) or the runtime's `StreamingVAEEncoder` (`--vae-mode stream`), the same encoder
    object type in training and in `Policy`. Why per frame: the streamed encoder carries frame 0
    into every later latent (the cube's position is linearly decodable from the blind frames'
    latents with R^2 0.99), so `window` would see the anchor through the VAE. Recorded in the JSON:
    `vae.leak` = the latent change of frame j when only frame 0's head tile is swapped for another
    seed's, relative to frame 0's change, per mode; and the streamed-vs-one-shot check.
 3. One model per memory policy: same config (the sim checkpoint's size, config/train_sim.yaml:
    video 4 layers x 2 heads x 64, FFN 512; action expert 64 / 256; chunk 16; 192x160 mosaic ->
    12x10 latent -> 30 tokens per frame; ~1.7 M parameters), memory N_init 1 / N_recent 2 / M 4 for
    every policy, same data, steps, batch and seed; whole episodes per sample; part 1's
    `train_model` (paper flow-matching defaults, AdamW, lr 1e-3 with 100 warm-up steps, cosine to 1e-4).
 4. Closed loop with `runtime.policy.Policy` (VAE encoder of step 2, prefill, cache eviction, 10
    Euler steps) through the same blind head, for as many chunks as a demonstration has latent
    frames (8, 12.8 s), on evaluation seeds 1 000 000+. Per policy: success (`AlohaSim.success`)
    with a 95 % Wilson CI, reached (right tool point held within 3 cm of the cube for 0.5 s) with
    its CI, that held distance and the instantaneous minimum, touched / lifted (gym-aloha reward
    >= 1 / >= 2), per-chunk latency (VAE + prefill + denoise, median) and the KV cache at episode
    end. References on the same seeds, without a model: the scripted demonstrator (sees the
    cube), the same plan aimed at the sampler's centre (`blind`: the best a policy without memory
    can do) and arms that stay at home.

Memory sizes: N_init 1 = the one live head frame (frame 0 is a single mosaic, like the robot's
first observation); N_recent 2 = the smallest window that still has the previous frame (motion
context); it fixes the wait at home to 2 chunks (frame 0 leaves the window at chunk 2, the first
moving chunk). The paper's N_recent 4 would need a 4-chunk (6.4 s) wait in an 8-frame episode.
M 4 gists per frame ~ L/8 for L = 30 tokens (the paper: 8 for 120): room for a location, far
less than the frame.

Controls and knobs: `--no-blank` keeps the head camera live all episode (no memory needed: tells
"cannot perceive / reach the cube" apart from "cannot remember it", like part 1's --cue-hint);
`--vae-mode stream` uses the runtime's streaming VAE (the anchor then leaks into every latent);
`--model small` is part 1's 0.45 M-parameter size (~2x faster training). Known leak left in: at the
home pose the cube's edge shows in a wrist tile in 6-7 % of the seeds.

Time on this 2-core box while another benchmark ran (threads 1), from the --quick run: demo
rendering 0.69 s/episode, VAE encode 0.71 s/episode, training 0.83 s/step (batch 8, sim model),
evaluation 0.16 s/chunk (sim + rendering + policy; policy latency ~0.1 s). Quick: 300 s. Full
(estimate): 5 x 1500 steps x 0.83 s = 104 min of training + ~5 min of data and evaluation, i.e.
~1 h 50 min (~1 h with --model small).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from binomial import wilson  # noqa: E402
from diffusers import AutoencoderKLWan  # noqa: E402
from memory_capability import calibrate_random_vae, instruction_store  # noqa: E402
from memory_training import train_model  # noqa: E402

from memorywam_ros.model import MemoryConfig, MemoryWAM, MemoryWAMConfig, VideoDiTConfig  # noqa: E402
from memorywam_ros.model.config import ActionDiTConfig  # noqa: E402
from memorywam_ros.runtime.instructions import InstructionStore, random_instruction_embeddings  # noqa: E402
from memorywam_ros.runtime.normalization import Normalizer  # noqa: E402
from memorywam_ros.runtime.policy import Policy  # noqa: E402
from memorywam_ros.runtime.vae import StreamingVAEEncoder  # noqa: E402
from memorywam_ros.sim.aloha import INSTRUCTIONS  # noqa: E402
from memorywam_ros.sim.memory_transfer import (  # noqa: E402
    ANCHOR_FRAMES,
    CHUNK,
    DELAY_CHUNKS,
    MOSAIC_SIZE,
    REACH_DWELL_S,
    REACH_THRESHOLD_M,
    Demo,
    MemoryTransferTask,
    PerFrameVAEEncoder,
    camera_sizes,
    check_protocol,
    scripted_episode,
)

RESULTS = ROOT / "bench" / "results"
POLICIES = ("hybrid", "window", "full", "no_gist", "no_anchor")
INSTRUCTION = INSTRUCTIONS["transfer_cube"]
ENCODER_ID = "random"
EVAL_SEED0 = 1_000_000
MEMORY = {"n_init": ANCHOR_FRAMES, "n_recent": 2, "num_gists": 4}
CALIBRATION_DEMOS = 20
PRESETS = {
    "quick": {"demos": 8, "steps": 60, "batch": 8, "episodes": 4},
    "full": {"demos": 50, "steps": 1500, "batch": 8, "episodes": 25},
}
MODELS = {  # video DiT / action expert sizes
    "sim": ({"num_attention_heads": 2, "attention_head_dim": 64, "ffn_dim": 512, "num_layers": 4, "freq_dim": 64},
            {"hidden_dim": 64, "ffn_dim": 256}),  # config/train_sim.yaml, ~1.7 M params
    "small": ({"num_attention_heads": 2, "attention_head_dim": 32, "ffn_dim": 256, "num_layers": 4, "freq_dim": 32},
              {"hidden_dim": 32, "ffn_dim": 128}),  # part 1's bench_config, ~0.45 M params, ~2x faster
}


def bench_config(policy: str, mosaic: tuple[int, int] = MOSAIC_SIZE, model: str = "sim") -> MemoryWAMConfig:
    video, action = MODELS[model]
    return MemoryWAMConfig(
        video=VideoDiTConfig(text_dim=32, **video),
        action=ActionDiTConfig(chunk_size=CHUNK, **action),
        memory=MemoryConfig(policy=policy, **MEMORY),
        latent_height=mosaic[0] // 16,
        latent_width=mosaic[1] // 16,
        text_len=8,
    )


# ------------------------------------------------------------------------------------ data
def render_demos(count: int, mosaic: tuple[int, int], blank: bool) -> tuple[list[Demo], dict]:
    """`count` successful scripted demos from seeds 0, 1, ... (failures skipped)."""
    demos, failed, t0 = [], [], time.perf_counter()
    with MemoryTransferTask(mosaic_size=mosaic, blank_head=blank) as task:
        seed = 0
        while len(demos) < count and seed < 3 * count + 10:
            demo = scripted_episode(task, seed)
            (demos if demo.success else failed).append(demo)
            seed += 1
    if len(demos) < count:
        raise RuntimeError(f"only {len(demos)} of {count} scripted demos succeeded")
    dt = time.perf_counter() - t0
    return demos, {"rendered": len(demos) + len(failed), "failed_seeds": [d.seed for d in failed],
                   "render_s": dt, "render_s_per_episode": dt / (len(demos) + len(failed)),
                   "frames_per_episode": demos[0].num_frames, "min_reach_m_mean": float(np.mean(
                       [d.min_reach for d in demos]))}


def frame_encoder(vae: AutoencoderKLWan, mode: str):
    """The latent path of training and evaluation alike: the runtime's streaming encoder, or per frame."""
    stream = StreamingVAEEncoder(vae)
    return stream if mode == "stream" else PerFrameVAEEncoder(stream)


def encode_demo(frames: list[np.ndarray], encoder) -> torch.Tensor:
    """(N, 48, h, w): one encode call per latent frame, exactly as `Policy.observe` does."""
    encoder.reset()
    return torch.stack([encoder.encode(f)[:, 0] for f in frames])


def calibrated_vae(demos: list[Demo], mode: str) -> tuple[AutoencoderKLWan, dict]:
    """Part 1's calibration (`calibrate_random_vae`) on this mode's latents of `demos`."""
    vae, info = calibrate_random_vae(lambda raw: torch.cat([encode_demo(d.frames, frame_encoder(raw, mode))
                                                            for d in demos]))
    return vae, {**info, "mode": mode}


def encode_demos(demos: list[Demo], vae: AutoencoderKLWan, mode: str) -> tuple[list[torch.Tensor], dict]:
    """(N, 48, h, w) latents per demo through this mode's encoder + the streamed-vs-one-shot check on demo 0."""
    enc = frame_encoder(vae, mode)
    t0 = time.perf_counter()
    latents = [encode_demo(d.frames, enc) for d in demos]
    dt = time.perf_counter() - t0
    stream = StreamingVAEEncoder(vae)
    diff = (encode_demo(demos[0].frames, stream) - stream.encode_clip(demos[0].clip()).transpose(0, 1)).abs()
    return latents, {"encode_s": dt, "encode_s_per_episode": dt / len(demos),
                     "stream_vs_clip_max_abs": float(diff.max())}


def vae_leak(demos: list[Demo], vae: AutoencoderKLWan) -> dict:
    """How much of frame 0's head tile reaches later latent frames, per encoder mode.

    Swap only frame 0's head tile of demo 0 for demo 1's (another cube pose) and re-encode: the
    rms change of latent frame j relative to the change of frame 0 (stream: the causal convs carry
    it on; per-frame: 0 by construction)."""
    if len(demos) < 2:
        return {}
    swapped = [f.copy() for f in demos[0].frames]
    top = swapped[0].shape[1] // 3
    swapped[0][:, top:] = demos[1].frames[0][:, top:]
    out = {}
    for mode in ("stream", "per-frame"):
        enc = frame_encoder(vae, mode)
        diff = (encode_demo(demos[0].frames, enc) - encode_demo(swapped, enc)).pow(2).mean((1, 2, 3)).sqrt()
        out[mode] = [round(float(v), 4) for v in diff / diff[0]]
    return out


def make_dataset(demos: list[Demo], latents: list[torch.Tensor], normalizer: Normalizer,
                 text: torch.Tensor) -> list[dict]:
    """LatentDataset-style samples ("episode" mode: every latent frame of the episode)."""
    out = []
    for i, (d, lat) in enumerate(zip(demos, latents)):
        ids = torch.arange(d.num_frames)
        out.append({
            "latents": lat, "frame_ids": ids,
            "actions": normalizer.normalize_action(torch.from_numpy(d.actions)),
            "action_mask": torch.from_numpy(d.action_mask),
            "proprio": normalizer.normalize_state(torch.from_numpy(d.proprio)),
            "video_mask": ids[1:] == ids[:-1] + 1, "text": text, "episode": i,
        })
    return out


# ------------------------------------------------------------------------------------ eval
def references(seeds: list[int], mosaic: tuple[int, int]) -> dict:
    """Reach / success of model-free references on the evaluation seeds (no rendering)."""
    out = {}
    with MemoryTransferTask(mosaic_size=mosaic) as task:
        for name, kw in (("scripted", {}), ("blind", {"blind": True}), ("home", {"move": False})):
            eps = [scripted_episode(task, s, render=False, **kw) for s in seeds]
            out[name] = summarise([(e.success, e.min_reach, e.min_dwell, e.max_reward) for e in eps])
    return out


def summarise(episodes: list[tuple[bool, float, float, int]]) -> dict:
    """(success, min distance, min dwell distance, max reward) per episode -> the policy's row."""
    n = len(episodes)
    k = sum(e[0] for e in episodes)
    dist = np.array([e[1] for e in episodes])
    dwell = np.array([e[2] for e in episodes])
    reached = int((dwell < REACH_THRESHOLD_M).sum())
    rewards = np.array([e[3] for e in episodes])
    return {
        "episodes": n, "successes": k, "success_rate": k / n, "ci95": list(wilson(k, n)),
        "reached": reached, "reach_rate": reached / n, "reach_ci95": list(wilson(reached, n)),
        "dwell_dist_m_mean": float(dwell.mean()), "dwell_dist_m_median": float(np.median(dwell)),
        "min_dist_m_mean": float(dist.mean()), "min_dist_m_median": float(np.median(dist)),
        "dwell_dist_m": [round(float(v), 4) for v in dwell], "min_dist_m": [round(float(v), 4) for v in dist],
        "touched": int((rewards >= 1).sum()), "lifted": int((rewards >= 2).sum()),
    }


def evaluate(model: MemoryWAM, vae: AutoencoderKLWan, normalizer: Normalizer, store: InstructionStore,
             seeds: list[int], chunks: int, mosaic: tuple[int, int], blank: bool, vae_mode: str) -> dict:
    policy = Policy(model, frame_encoder(vae, vae_mode), normalizer, store, mosaic, ENCODER_ID, num_steps=10, seed=0)
    eps, lat, cache_end, t0 = [], [], [], time.perf_counter()
    with MemoryTransferTask(mosaic_size=mosaic, blank_head=blank) as task:
        for seed in seeds:
            mosaics = task.reset(seed)[None]
            policy.reset(INSTRUCTION)
            for j in range(chunks):
                policy.observe(mosaics, task.qpos)
                chunk = policy.act()
                lat.append(sum(policy.last_latency.values()))
                mosaics = task.run_chunk(chunk, observe=j < chunks - 1)  # the last chunk's mosaics feed nothing
            cache_end.append(policy.cache_bytes)
            eps.append((task.success, task.min_reach, task.min_dwell, task.max_reward))
    wall = time.perf_counter() - t0
    lat_ms = np.array(lat) * 1000
    r = summarise(eps)
    r.update({"latency_ms_median": float(np.median(lat_ms)), "latency_ms_p90": float(np.percentile(lat_ms, 90)),
              "chunks": len(lat), "eval_s": wall, "eval_s_per_chunk": wall / max(1, len(lat)),
              "cache_bytes_end_mean": float(np.mean(cache_end)), "cache_bytes_end_max": int(max(cache_end))})
    return r


# ------------------------------------------------------------------------------------ report
def _pct(k: int, n: int) -> str:
    return f"{k / n:.0%} ({k}/{n})"


def table(result: dict) -> list[str]:
    lines = ["| policy | success | 95 % CI | reached | 95 % CI | dwell dist mean / median (cm) | min dist mean (cm) "
             "| touched / lifted | latency / chunk (median ms) | cache at end (B) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    rows = [(p, r) for p, r in result["results"].items()] + [(f"*{p}*", r) for p, r in result["references"].items()]
    for name, r in rows:
        n = r["episodes"]
        lat = f"{r['latency_ms_median']:.0f}" if "latency_ms_median" in r else "–"
        cache = f"{r['cache_bytes_end_mean']:.0f}" if "cache_bytes_end_mean" in r else "–"
        lines.append(f"| {name} | {_pct(r['successes'], n)} | {r['ci95'][0]:.0%}–{r['ci95'][1]:.0%} | "
                     f"{_pct(r['reached'], n)} | {r['reach_ci95'][0]:.0%}–{r['reach_ci95'][1]:.0%} | "
                     f"{100 * r['dwell_dist_m_mean']:.1f} / {100 * r['dwell_dist_m_median']:.1f} | "
                     f"{100 * r['min_dist_m_mean']:.1f} | "
                     f"{r['touched']} / {r['lifted']} | {lat} | {cache} |")
    return lines


def write_report(result: dict, stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    blind = "blind head after frame 0" if result["blank_head"] else "CONTROL: head camera live all episode"
    lines = [f"# Memory capability, simulated dual arm ({result['preset']}) — TransferCube, {blind}, "
             f"{result['episodes']} episodes per policy", "", *table(result), "",
             f"Command: `{result['command']}`", "",
             "Rows in italics are references without a model on the same seeds: *scripted* (sees the cube), "
             "*blind* (the scripted plan aimed at the centre of the cube sampler: the best a policy without memory "
             "can do), *home* (arms never move). Dwell dist = the smallest distance between the right tool point "
             f"and the cube centre held for {REACH_DWELL_S} s (min over the episode of the max over a "
             f"{REACH_DWELL_S} s window, 50 Hz samples); reached = dwell dist < {100 * REACH_THRESHOLD_M:.0f} cm; "
             "min dist = the instantaneous minimum (a flailing arm gets close by chance); touched / lifted = "
             "gym-aloha reward >= 1 / >= 2 (a finger touches the cube / the right gripper holds it off the table). "
             f"VAE latents: {result['vae']['mode']}. Latency = VAE (4 mosaics) + prefill + 10 denoising steps, "
             "float32, CPU, batch 1.", "",
             f"Timings: demo rendering {result['timing']['render_s_per_episode']:.2f} s/episode, VAE encode "
             f"{result['timing']['encode_s_per_episode']:.2f} s/episode, training "
             f"{result['timing']['train_s_per_step']:.2f} s/step, evaluation "
             f"{result['timing']['eval_s_per_chunk']:.2f} s/chunk (sim + rendering + policy); wall "
             f"{result['wall_s']:.0f} s."]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    res, refs = result["results"], result["references"]
    names = list(res)
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for off, key, ci, label in ((-0.2, "reach_rate", "reach_ci95", "reached"),
                                (0.2, "success_rate", "ci95", "success")):
        rates = np.array([res[n][key] for n in names])
        err = np.array([[r - res[n][ci][0], res[n][ci][1] - r] for r, n in zip(rates, names)]).T
        axes[0].bar(x + off, rates, 0.4, yerr=err, capsize=3, label=label)
    axes[0].axhline(refs["blind"]["reach_rate"], color="k", ls="--", lw=1, label="blind plan: reached")
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    axes[0].set_title("rates (95 % Wilson CI)")
    for i, n in enumerate(names):
        d = 100 * np.array(res[n]["dwell_dist_m"])
        axes[1].scatter(np.full(len(d), i) + np.linspace(-0.15, 0.15, len(d)), d, s=10)
    for ref, style in (("scripted", ":"), ("blind", "--"), ("home", "-.")):
        axes[1].axhline(100 * refs[ref]["dwell_dist_m_mean"], color="grey", ls=style, lw=1, label=f"{ref} (mean)")
    axes[1].axhline(100 * REACH_THRESHOLD_M, color="r", lw=1, label="threshold")
    axes[1].set_yscale("log")
    axes[1].legend(fontsize=8)
    axes[1].set_title(f"right tool to cube, held {REACH_DWELL_S} s, per episode (cm)")
    axes[2].bar(x - 0.2, [res[n]["latency_ms_median"] for n in names], 0.4, label="latency / chunk, median (ms)")
    axes[2].bar(x + 0.2, [res[n]["cache_bytes_end_mean"] / 1024 for n in names], 0.4, label="KV cache at end (KiB)")
    axes[2].legend(fontsize=8)
    axes[2].set_title("cost")
    for ax in axes:
        ax.set_xticks(x, names)
    fig.suptitle(f"MemoryWAM memory policies, TransferCube with a blind head ({result['preset']})")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke-size run (minutes); its numbers are not the result")
    p.add_argument("--policies", nargs="+", default=list(POLICIES))
    p.add_argument("--demos", type=int, help="override the preset's demonstrations")
    p.add_argument("--steps", type=int, help="override the preset's training steps")
    p.add_argument("--batch", type=int, help="override the preset's batch size")
    p.add_argument("--episodes", type=int, help="override the preset's evaluation episodes per policy")
    p.add_argument("--model", choices=sorted(MODELS), default="sim", help="model size (same for every policy)")
    p.add_argument("--seed", type=int, default=0, help="training seed (same for every policy)")
    p.add_argument("--cond-noise", type=float, default=1.0, help="conditioning-noise probability (paper: 1.0)")
    p.add_argument("--mosaic", default="x".join(map(str, MOSAIC_SIZE)),
                   help="mosaic HxW (H a multiple of 96, W of 32); cameras render at the tile sizes")
    p.add_argument("--no-blank", action="store_true",
                   help="control: the head camera stays live all episode (no memory needed)")
    p.add_argument("--vae-mode", choices=("per-frame", "stream"), default="per-frame",
                   help="per-frame: the VAE's causal cache is cut at every latent frame (default: otherwise frame 0's "
                        "head leaks into every later latent, see PerFrameVAEEncoder); stream: the runtime's encoder")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)")
    p.add_argument("--out", default=None, help="output stem (default bench/results/memory_dual_arm_<preset>)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    mosaic = tuple(int(v) for v in args.mosaic.lower().split("x"))
    try:
        camera_sizes(mosaic)
    except ValueError as err:
        p.error(str(err))
    check_protocol(ANCHOR_FRAMES, DELAY_CHUNKS, MEMORY["n_init"], MEMORY["n_recent"])
    preset = "quick" if args.quick else "full"
    knobs = dict(PRESETS[preset])
    for key in ("demos", "steps", "batch", "episodes"):
        if getattr(args, key) is not None:
            knobs[key] = getattr(args, key)
    blank = not args.no_blank
    t_start = time.perf_counter()

    demos, demo_info = render_demos(knobs["demos"], mosaic, blank)
    print(f"{len(demos)} demos ({demo_info['rendered']} rendered), {demos[0].num_frames} latent frames each, "
          f"{demo_info['render_s_per_episode']:.2f} s/episode", flush=True)
    vae, vae_info = calibrated_vae(demos[:CALIBRATION_DEMOS], args.vae_mode)
    latents, enc_info = encode_demos(demos, vae, args.vae_mode)
    vae_info.update(enc_info, leak=vae_leak(demos, vae))
    print(f"VAE ({args.vae_mode}): {enc_info['encode_s_per_episode']:.2f} s/episode, streamed-vs-one-shot "
          f"{enc_info['stream_vs_clip_max_abs']:.1e}; frame-0 head change seen in frames 1.. (relative): "
          + "; ".join(f"{m} {v[1:]}" for m, v in vae_info["leak"].items()), flush=True)
    states = np.concatenate([d.proprio for d in demos])
    actions = np.concatenate([d.actions[d.action_mask] for d in demos])
    normalizer = Normalizer.from_arrays(states, actions)
    text = random_instruction_embeddings([INSTRUCTION], 32, 8)[0]
    data = make_dataset(demos, latents, normalizer, text)
    seeds = list(range(EVAL_SEED0, EVAL_SEED0 + knobs["episodes"]))
    t_ref = time.perf_counter()
    refs = references(seeds, mosaic)
    ref_s = time.perf_counter() - t_ref
    print(f"references on the evaluation seeds ({ref_s:.0f} s): " + ", ".join(
        f"{k} reached {r['reach_rate']:.0%} ({100 * r['dwell_dist_m_mean']:.1f} cm) success {r['success_rate']:.0%}"
        for k, r in refs.items()), flush=True)
    chunks = demos[0].num_frames
    result = {
        "preset": preset, "command": "python bench/memory_dual_arm.py " + " ".join(sys.argv[1:] if argv is None
                                                                                 else argv),
        "knobs": knobs, "model": args.model, "cond_noise": args.cond_noise, "memory": MEMORY, "chunk_size": CHUNK,
        "anchor_frames": ANCHOR_FRAMES, "delay_chunks": DELAY_CHUNKS, "eval_chunks": chunks, "mosaic": list(mosaic),
        "blank_head": blank, "reach_threshold_m": REACH_THRESHOLD_M, "reach_dwell_s": REACH_DWELL_S,
        "episodes": knobs["episodes"],
        "demos": demo_info, "vae": vae_info, "machine": platform.processor() or platform.machine(),
        "threads": args.threads, "torch": torch.__version__, "references": refs, "training": {}, "results": {},
    }
    train_steps = 0
    train_s = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        store = instruction_store(Path(tmp), text, INSTRUCTION)
        for policy in args.policies:
            model, info = train_model(bench_config(policy, mosaic, args.model), data, knobs["steps"], knobs["batch"],
                                      args.seed, args.cond_noise)
            train_steps += knobs["steps"]
            train_s += info["train_s"]
            r = evaluate(model, vae, normalizer, store, seeds, chunks, mosaic, blank, args.vae_mode)
            result["training"][policy] = info
            result["results"][policy] = r
            print(f"  {policy:9s} success {r['success_rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] | "
                  f"reached {r['reach_rate']:.2f} [{r['reach_ci95'][0]:.2f}, {r['reach_ci95'][1]:.2f}] "
                  f"dwell dist {100 * r['dwell_dist_m_mean']:.1f} cm | loss a {info['final_action_loss']:.3f} "
                  f"v {info['final_video_loss']:.3f} | train {info['train_s']:.0f} s "
                  f"({info['train_s'] / knobs['steps']:.2f} s/step), eval {r['eval_s']:.0f} s | "
                  f"{r['latency_ms_median']:.0f} ms/chunk, cache {r['cache_bytes_end_mean']:.0f} B", flush=True)
    result["wall_s"] = time.perf_counter() - t_start
    evals = list(result["results"].values())
    result["timing"] = {
        "render_s_per_episode": demo_info["render_s_per_episode"],
        "encode_s_per_episode": enc_info["encode_s_per_episode"],
        "train_s_per_step": train_s / max(1, train_steps),
        "eval_s_per_chunk": sum(r["eval_s"] for r in evals) / max(1, sum(r["chunks"] for r in evals)),
        "references_s": ref_s,
    }
    suffix = "".join(tag for tag, on in (("_noblank", not blank), ("_stream", args.vae_mode == "stream"),
                                         (f"_{args.model}", args.model != "sim")) if on)
    stem = Path(args.out) if args.out else RESULTS / f"memory_dual_arm_{preset}{suffix}"
    write_report(result, stem)
    print("\n".join(table(result)))
    print(f"wrote {stem}.json/.md/.png in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
