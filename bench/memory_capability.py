"""Memory capability: hybrid vs window vs full (and the paper's ablations) on MiniGrid Memory.

    .venv/bin/python bench/memory_capability.py --quick   # smoke run, ~10 min on 2 CPU cores (NOT the result)
    .venv/bin/python bench/memory_capability.py           # the result: 100 episodes per (env, policy)

Writes bench/results/memory_capability_{quick,full}.{json,md,png}. The write-up is
bench/results/memory_capability.md; the task adapter and its decisions are in
memorywam_ros/sim/minigrid_memory.py.

Pipeline, per env (MiniGrid-MemoryS7-v0, MiniGrid-MemoryS13Random-v0):
 1. Oracle demonstrations on training seeds [0, demos), DART-style: 20 % of the executed steps
    are random, the recorded action is always the oracle's (see `run_oracle_episode`); evaluation
    seeds start at 1_000_000.
 2. One frozen random tiny Wan2.2 VAE (seed 0) for everything. Its latent statistics (the
    latents_mean/std of the VAE config, Wan2.2's real ones belong to the real weights) are
    calibrated on the mosaics of the first 20 demonstrations of each env, so normalised latents
    have unit variance per channel; with the Wan2.2 statistics the random encoder's latents have a
    std of ~0.14 and the conditioning-noise augmentation (DESIGN §5) would drown the cue.
    Demonstration latents: `StreamingVAEEncoder.encode_clip` (diffusers' one-shot encode, equal
    to the streamed latents; checked here on one episode and recorded in the JSON).
 3. One tiny model per (env, policy), same config, data, steps and seed; only memory.policy
    differs. Whole episodes per sample (every episode fits: <= 13 latent frames), batches from
    `memorywam_train.dataset.collate`, loss `memorywam_train.train.flow_matching_loss` (paper
    defaults: logit-normal shifts 5 / 1, conditioning noise p = 1, λv = λa = 1), AdamW (betas
    0.9/0.95, wd 0.01) in a single process (the torchrun trainer's FSDP set-up buys nothing here).
    Learning rate 1e-3 with 100 warm-up steps and cosine decay to 1e-4: the paper's 2e-4 fine-tunes
    a pretrained 5B model; these models start from scratch.
 4. Closed loop through the robot's inference path: `runtime.policy.Policy` (streaming VAE ->
    prefill -> KV-cache eviction -> 10 Euler steps of the action expert), the chunk mapped to a
    MiniGrid action by `chunk_to_action`. Success = reaching the matching object; touching the
    other one or running out of steps (2x the oracle's longest episode on the evaluation seeds + 4)
    is a failure.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from binomial import wilson  # noqa: E402
from diffusers import AutoencoderKLWan  # noqa: E402
from memory_training import train_model  # noqa: E402

from memorywam_ros.model import MemoryConfig, MemoryRules, MemoryWAM, MemoryWAMConfig, VideoDiTConfig  # noqa: E402
from memorywam_ros.model.config import ActionDiTConfig  # noqa: E402
from memorywam_ros.runtime.instructions import InstructionStore, random_instruction_embeddings  # noqa: E402
from memorywam_ros.runtime.normalization import Normalizer  # noqa: E402
from memorywam_ros.runtime.policy import Policy  # noqa: E402
from memorywam_ros.runtime.vae import StreamingVAEEncoder, wan22_vae_config  # noqa: E402
from memorywam_ros.sim.minigrid_memory import (  # noqa: E402
    CHUNK,
    ENV_IDS,
    MOSAIC_SIZE,
    Episode,
    MemoryTask,
    action_chunk,
    chunk_to_action,
    frame_mosaics,
    run_oracle_episode,
)

RESULTS = ROOT / "bench" / "results"
POLICIES = ("hybrid", "window", "full", "no_gist", "no_anchor")
INSTRUCTION = "go to the matching object at the end of the hallway"
ENCODER_ID = "random"
EVAL_SEED0 = 1_000_000
VAE_SEED = 0
MEMORY = {"n_init": 1, "n_recent": 2, "num_gists": 2}
PRESETS = {
    "quick": {"demos": 60, "steps": 200, "batch": 8, "episodes": 10, "demo_noise": 0.2},
    "full": {"demos": 400, "steps": 1500, "batch": 16, "episodes": 100, "demo_noise": 0.2},
}


def bench_config(policy: str, mosaic: tuple[int, int] = MOSAIC_SIZE) -> MemoryWAMConfig:
    """~0.45 M parameters; 96x64 mosaic -> 48x6x4 latent -> 6 tokens per frame; chunk of 4 rows."""
    return MemoryWAMConfig(
        video=VideoDiTConfig(
            num_attention_heads=2, attention_head_dim=32, text_dim=32, freq_dim=32, ffn_dim=256, num_layers=4
        ),
        action=ActionDiTConfig(hidden_dim=32, ffn_dim=128, chunk_size=CHUNK),
        memory=MemoryConfig(policy=policy, **MEMORY),
        latent_height=mosaic[0] // 16,
        latent_width=mosaic[1] // 16,
        text_len=8,
    )


# ------------------------------------------------------------------------------------ data
def episode_clip(ep: Episode) -> np.ndarray:
    """The mosaics of latent frames 0..T-1 in streaming order: view 0 alone, then 4 per frame."""
    parts = [frame_mosaics(ep.mosaics[t], t == 0) for t in range(ep.num_steps)]
    return np.concatenate(parts)


def calibrate_random_vae(latents_of: Callable[[AutoencoderKLWan], torch.Tensor]) -> tuple[AutoencoderKLWan, dict]:
    """Random tiny Wan2.2 VAE (seed VAE_SEED) whose latents_mean/std are those of `latents_of(raw VAE)`.

    latents_of gets the VAE with neutral statistics (mean 0, std 1) and returns its latents of the
    calibration data, frames first: (F, 48, h, w). Both benchmark parts calibrate this way."""
    cfg = wan22_vae_config(tiny=True)
    torch.manual_seed(VAE_SEED)
    raw = AutoencoderKLWan(**dict(cfg, latents_mean=[0.0] * 48, latents_std=[1.0] * 48))
    lat = latents_of(raw)
    mean, std = lat.mean((0, 2, 3)), lat.std((0, 2, 3)).clamp(min=1e-6)
    vae = AutoencoderKLWan(**dict(cfg, latents_mean=mean.tolist(), latents_std=std.tolist()))
    vae.load_state_dict(raw.state_dict())
    info = {"seed": VAE_SEED, "calibration_frames": int(lat.shape[0]), "raw_std_mean": float(std.mean())}
    return vae.eval(), info


def calibrated_vae(episodes: list[Episode]) -> tuple[AutoencoderKLWan, dict]:
    """The benchmark's VAE calibrated on the streamed latents of `episodes`."""
    def latents_of(raw: AutoencoderKLWan) -> torch.Tensor:
        enc = StreamingVAEEncoder(raw)
        return torch.cat([enc.encode_clip(episode_clip(ep)) for ep in episodes], dim=1).transpose(0, 1)

    return calibrate_random_vae(latents_of)


def encode_demos(episodes: list[Episode], vae: AutoencoderKLWan) -> tuple[list[dict], float]:
    """Latents of every demo (one-shot encode); returns samples and the streamed-vs-one-shot max diff."""
    enc = StreamingVAEEncoder(vae)
    samples = []
    for i, ep in enumerate(episodes):
        lat = enc.encode_clip(episode_clip(ep))[:, : ep.num_steps].transpose(0, 1).contiguous()  # (T, 48, h, w)
        samples.append({"latents": lat, "proprio": torch.from_numpy(ep.proprio[: ep.num_steps]),
                        "actions": torch.from_numpy(np.stack([action_chunk(int(np.argmax(a[:3])))
                                                              for a in ep.actions]))})
        if i == 0:
            enc.reset()
            streamed = torch.stack([enc.encode(frame_mosaics(ep.mosaics[t], t == 0))[:, 0]
                                    for t in range(ep.num_steps)])
            diff = float((streamed - lat).abs().max())
    return samples, diff


def instruction_store(root: Path, text: torch.Tensor, instruction: str = INSTRUCTION) -> InstructionStore:
    """An instruction store under `root` holding the random stand-in embeddings `text` of `instruction`."""
    store = InstructionStore(root / "instructions")
    store.put([instruction], text[None], ENCODER_ID, {"name": "random stand-in embeddings"})
    return store


def fit_dataset(samples: list[dict], text: torch.Tensor) -> tuple[list[dict], Normalizer]:
    """Normaliser fitted on the samples' proprio and actions, and the normalised training samples."""
    normalizer = Normalizer.from_arrays(np.concatenate([s["proprio"].numpy() for s in samples]),
                                        np.concatenate([s["actions"].numpy() for s in samples]))
    return make_dataset(samples, normalizer, text), normalizer


def make_dataset(samples: list[dict], normalizer: Normalizer, text: torch.Tensor) -> list[dict]:
    """LatentDataset-style samples ("episode" mode: every frame of the episode)."""
    out = []
    for i, s in enumerate(samples):
        n = s["latents"].shape[0]
        ids = torch.arange(n)
        out.append({
            "latents": s["latents"], "frame_ids": ids,
            "actions": normalizer.normalize_action(s["actions"].float()),
            "action_mask": torch.ones(n, CHUNK, dtype=torch.bool),
            "proprio": normalizer.normalize_state(s["proprio"].float()),
            "video_mask": ids[1:] == ids[:-1] + 1, "text": text, "episode": i,
        })
    return out


def cue_held_fraction(episodes: list[Episode], policy: str) -> float:
    """Fraction of oracle episodes where the cue is inside a frame held *in full* at the decision chunk:
    a policy reading only full frames is then right, otherwise it guesses (expected p + (1 - p) / 2)."""
    rules = MemoryRules(MemoryConfig(policy=policy, **MEMORY))
    hits = 0
    for ep in episodes:
        j = ep.decision_step  # one latent frame per env step: chunk j is decided on frame j
        hits += any(ep.cue_in_view[f] and bool(rules.sees_full(j, f)) for f in range(j + 1))
    return hits / max(1, len(episodes))


# ------------------------------------------------------------------------------------ train / eval
def evaluate(model: MemoryWAM, vae: AutoencoderKLWan, normalizer: Normalizer, store: InstructionStore,
             env_id: str, seeds: list[int], cap: int, mosaic: tuple[int, int] = MOSAIC_SIZE,
             cue_hint: bool = False) -> dict:
    policy = Policy(model, StreamingVAEEncoder(vae), normalizer, store, mosaic, ENCODER_ID, num_steps=10, seed=0)
    outcomes, lat, cache_end, steps = [], [], [], []
    for seed in seeds:
        task = MemoryTask(env_id, max_steps=cap, mosaic_size=mosaic, cue_hint=cue_hint)
        view, first = task.reset(seed), True
        policy.reset(INSTRUCTION)
        while not task.done:
            policy.observe(frame_mosaics(view, first), task.proprio())
            first = False
            chunk = policy.act()
            lat.append(sum(policy.last_latency.values()))
            view = task.step(chunk_to_action(chunk))
        cache_end.append(policy.cache_bytes)
        steps.append(task.steps)
        outcomes.append("success" if task.success else ("timeout" if task.steps >= cap else "wrong"))
    n, k = len(outcomes), outcomes.count("success")
    lo, hi = wilson(k, n)
    lat_ms = np.array(lat) * 1000
    return {
        "episodes": n, "successes": k, "success_rate": k / n, "ci95": [lo, hi],
        "wrong": outcomes.count("wrong"), "timeouts": outcomes.count("timeout"), "mean_steps": float(np.mean(steps)),
        "latency_ms_median": float(np.median(lat_ms)), "latency_ms_p90": float(np.percentile(lat_ms, 90)),
        "chunks": len(lat), "cache_bytes_end_mean": float(np.mean(cache_end)),
        "cache_bytes_end_max": int(max(cache_end)),
    }


# ------------------------------------------------------------------------------------ report
def write_report(result: dict, stem: Path) -> None:
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Memory capability ({result['preset']}) — MiniGrid Memory, {result['episodes']} episodes "
             f"per cell", "", "| env | policy | success | 95 % CI (Wilson) | wrong / timeout | cue held in full "
             "at decision (oracle) | latency / chunk (median, p90 ms) | cache at episode end (mean B) |",
             "|---|---|---|---|---|---|---|---|"]
    for env_id, cells in result["results"].items():
        for pol, r in cells.items():
            lines.append(f"| {env_id} | {pol} | {r['success_rate']:.0%} ({r['successes']}/{r['episodes']}) | "
                         f"{r['ci95'][0]:.0%}–{r['ci95'][1]:.0%} | {r['wrong']} / {r['timeouts']} | "
                         f"{r['cue_held_full']:.0%} | {r['latency_ms_median']:.1f}, {r['latency_ms_p90']:.1f} | "
                         f"{r['cache_bytes_end_mean']:.0f} |")
    lines += ["", f"Command: `{result['command']}`", "",
              "Chance is 50 %. 'cue held in full' = fraction of the oracle's episodes on the evaluation seeds whose "
              "cue is inside a frame the policy still holds in full at the decision chunk (a policy without "
              "gists can only be right there, elsewhere it guesses). Latency = streaming VAE (4 mosaics) + "
              "prefill + 10 denoising steps, float32, CPU, batch 1."]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    envs = list(result["results"])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / max(1, len(envs))
    for e, env_id in enumerate(envs):
        cells = result["results"][env_id]
        x = np.arange(len(cells)) + e * width
        rates = np.array([c["success_rate"] for c in cells.values()])
        err = np.array([[r - c["ci95"][0], c["ci95"][1] - r] for r, c in zip(rates, cells.values())]).T
        axes[0].bar(x, rates, width, yerr=err, capsize=3, label=env_id.replace("MiniGrid-", ""))
        axes[1].bar(x, [c["latency_ms_median"] for c in cells.values()], width)
        axes[2].bar(x, [c["cache_bytes_end_mean"] / 1024 for c in cells.values()], width)
    names = list(result["results"][envs[0]])
    for ax, title in zip(axes, ("success rate (95 % Wilson CI)", "latency per chunk, median (ms)",
                                "KV cache at episode end (KiB)")):
        ax.set_xticks(np.arange(len(names)) + width * (len(envs) - 1) / 2, names)
        ax.set_title(title)
    axes[0].axhline(0.5, color="k", ls="--", lw=1)
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"MemoryWAM memory policies on MiniGrid Memory ({result['preset']})")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=100)


def merge_results(runs: list[dict]) -> dict:
    """One result from runs of the same preset on different envs (e.g. one process per env)."""
    merged = dict(runs[0], training={}, results={}, commands=[r["command"] for r in runs],
                  wall_s=sum(r["wall_s"] for r in runs))
    for run in runs:
        for key in ("preset", "knobs", "memory", "mosaic", "cond_noise"):
            if run.get(key) != runs[0].get(key):
                raise ValueError(f"cannot merge runs with different {key}: {run.get(key)} != {runs[0].get(key)}")
        for env_id in run["results"]:
            if env_id in merged["results"]:
                raise ValueError(f"{env_id} appears in more than one run")
        merged["training"].update(run["training"])
        merged["results"].update(run["results"])
    merged["command"] = " ; ".join(merged["commands"])
    return merged


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke-size run (minutes); its numbers are not the result")
    p.add_argument("--envs", nargs="+", default=list(ENV_IDS))
    p.add_argument("--policies", nargs="+", default=list(POLICIES))
    p.add_argument("--demos", type=int, help="override the preset's demonstrations per env")
    p.add_argument("--steps", type=int, help="override the preset's training steps")
    p.add_argument("--episodes", type=int, help="override the preset's evaluation episodes per cell")
    p.add_argument("--demo-noise", type=float, help="override the probability of a random executed action in demos")
    p.add_argument("--seed", type=int, default=0, help="training seed (same for every policy)")
    p.add_argument("--cond-noise", type=float, default=1.0,
                   help="probability of noise-augmenting each conditioning latent (paper: 1.0); an ablation knob")
    p.add_argument("--mosaic", default="x".join(map(str, MOSAIC_SIZE)),
                   help="mosaic HxW (multiples of 96x32); the head tile is 2H/3 x W")
    p.add_argument("--cue-hint", action="store_true",
                   help="control: the cue's colour fills the wrist tiles all episode (no memory needed)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads; on a box shared with other jobs 1 is several times faster than 2")
    p.add_argument("--out", default=None, help="output stem (default bench/results/memory_capability_<preset>)")
    p.add_argument("--merge", nargs="+", metavar="JSON",
                   help="write one report (--out) from result JSONs of runs on different envs, run nothing")
    args = p.parse_args(argv)
    if args.merge:
        merged = merge_results([json.loads(Path(f).read_text()) for f in args.merge])
        stem = Path(args.out) if args.out else RESULTS / f"memory_capability_{merged['preset']}"
        write_report(merged, stem)
        print(f"wrote {stem}.json/.md/.png from {len(args.merge)} runs")
        return 0
    torch.set_num_threads(args.threads)
    mosaic = tuple(int(v) for v in args.mosaic.lower().split("x"))
    if len(mosaic) != 2 or mosaic[0] % 96 or mosaic[1] % 32:
        p.error(f"--mosaic {args.mosaic}: expected HxW with H a multiple of 96 and W of 32 (2x2 latent patches)")
    preset = "quick" if args.quick else "full"
    knobs = dict(PRESETS[preset])
    for key in ("demos", "steps", "episodes", "demo_noise"):
        if getattr(args, key) is not None:
            knobs[key] = getattr(args, key)
    t_start = time.perf_counter()
    demos = {env_id: [run_oracle_episode(env_id, s, noise=knobs["demo_noise"], mosaic_size=mosaic,
                                         cue_hint=args.cue_hint) for s in range(knobs["demos"])]
             for env_id in args.envs}
    vae, vae_info = calibrated_vae([ep for eps in demos.values() for ep in eps[:20]])
    text = random_instruction_embeddings([INSTRUCTION], 32, 8)[0]
    result = {"preset": preset, "command": "python bench/memory_capability.py " + " ".join(sys.argv[1:] or []),
              "knobs": knobs, "cond_noise": args.cond_noise, "memory": MEMORY, "chunk_size": CHUNK,
              "mosaic": list(mosaic), "cue_hint": args.cue_hint,
              "vae": vae_info, "episodes": knobs["episodes"], "machine": platform.processor() or platform.machine(),
              "threads": args.threads, "torch": torch.__version__, "training": {}, "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        store = instruction_store(Path(tmp), text)
        for env_id in args.envs:
            eps = demos[env_id]
            samples, diff = encode_demos(eps, vae)
            data, normalizer = fit_dataset(samples, text)
            seeds = list(range(EVAL_SEED0, EVAL_SEED0 + knobs["episodes"]))
            oracle_eval = [run_oracle_episode(env_id, s, keep_mosaics=False) for s in seeds]
            cap = 2 * max(ep.num_steps for ep in oracle_eval) + 4
            print(f"{env_id}: {len(eps)} demos, {sum(ep.num_steps for ep in eps)} latent frames, "
                  f"max {max(ep.num_steps for ep in eps)} frames; streamed-vs-one-shot latent diff {diff:.2e}; "
                  f"eval cap {cap} steps", flush=True)
            result["training"][env_id] = {"demo_frames": int(sum(ep.num_steps for ep in eps)), "cap_steps": cap,
                                          "stream_vs_clip_max_abs": diff, "policies": {}}
            result["results"][env_id] = {}
            for policy in args.policies:
                model, info = train_model(bench_config(policy, mosaic), data, knobs["steps"], knobs["batch"],
                                          args.seed, args.cond_noise)
                r = evaluate(model, vae, normalizer, store, env_id, seeds, cap, mosaic, args.cue_hint)
                r["cue_held_full"] = cue_held_fraction(oracle_eval, policy)
                result["training"][env_id]["policies"][policy] = info
                result["results"][env_id][policy] = r
                print(f"  {policy:9s} success {r['success_rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] "
                      f"wrong {r['wrong']} timeout {r['timeouts']} | cue held {r['cue_held_full']:.2f} | "
                      f"loss a {info['final_action_loss']:.3f} v {info['final_video_loss']:.3f} "
                      f"train {info['train_s']:.0f}s | {r['latency_ms_median']:.1f} ms/chunk, "
                      f"cache {r['cache_bytes_end_mean']:.0f} B", flush=True)
    result["wall_s"] = time.perf_counter() - t_start
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = Path(args.out) if args.out else RESULTS / f"memory_capability_{preset}"
    write_report(result, stem)
    print(f"wrote {stem}.json/.md/.png in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
