"""Passkey probe: a cue long gone still decides the action (issue 15, item 1). No simulator, no VAE.

    nice -n 10 .venv/bin/python bench/passkey.py --quick       # smoke size, <= 10 min on 2 cores: NOT the result
    nohup nice -n 10 .venv/bin/python bench/passkey.py > bench/results/passkey_full.log 2>&1 &   # the result

Writes bench/results/passkey_{quick,full}.{json,md,png} after every cell; a rerun skips the
cells its JSON already holds (same knobs), and a cell interrupted mid-training continues from its
last checkpoint (`<out>.ckpt/<policy>@<D>.pt`, every 200 steps, removed once the cell is in the
JSON), so the full run resumes where it was stopped.

Why a synthetic probe: the MiniGrid benchmark (bench/results/memory_capability.md) sits at
chance because the tiny CPU-trained model cannot *see* an 8x8 sprite; here perception is trivial
and only memory is hard, so what is measured is whether the memory policy keeps the cue.

Episode (normalised latents, drawn from a seed; `make_episode`):
  * T = c + D + 1 latent frames of 48 x 6 x 8 (L = 12 tokens per frame after the 2x2 patch, the
    robot has 120: fewer tokens keep a 130-frame training sequence affordable on a CPU);
  * every frame is distractor noise N(0, 1); frame c = N_init + jitter (after the anchor frames)
    adds the cue pattern of class k (one of K = 4 fixed random +-AMP patterns over the whole
    latent); the last frame T - 1 adds the query marker (another fixed pattern);
  * action chunk T - 1 puts joint 0 at the class target TARGETS[k] (all rows), every other chunk
    is the neutral action (zeros); 2 action dims (see ACTION_DIM); proprio is zero throughout.
Delays D = (T - 1) - c in {8, 32, 128}.

Model (`probe_config`): the real MemoryWAM at a tiny size, 2 layers, N_init 1, N_recent 2, one
gist per frame. Through the recent window a frame still reaches the decision for
num_layers·(N_recent − 1) + 1 = 3 frames (README, memory rules), below every D, so `window` and
`no_gist` cannot legitimately remember. One gist per frame on 12 tokens keeps hybrid's cache at
D = 128 near 1/10 of full's (the paper: 8 gists on 120 tokens).

Training: one model per (policy, D), same config, seed, steps and data (fresh episodes every
step), through bench/memory_training.py's `train_model`, i.e. memorywam_train.train.train_step
(flow_matching_loss, lr_at, AdamW from build_optimizer). The video loss is off
(loss_video_weight 0): the distractors are i.i.d. noise, there is nothing to predict, and the
next-frame tokens would double the sequence. The conditioning-noise augmentation is off
(cond_noise_prob 0, the memory benchmark's --cond-noise knob): it protects the robot's video
expert from its own imperfect latents, here there are none, and with it (p = 1) `full` reached
only 40 % at D = 8 after 1000 steps against 97.5 % after 600 without (measured, 40 episodes).
Everything else is the trainer's default (lr 1e-3 from scratch, see memory_training.py).

Evaluation through the incremental cache, as on the robot (runtime/policy.py does the same
calls): per held-out episode (seeds from EVAL_SEED0 on, disjoint from training) prefill every
frame into a fresh MemoryKVCache, then `sample_actions` (10 Euler steps) for the last frame;
decoded class = the TARGETS entry nearest to the chunk's mean joint 0. Also sampled: the chunk of
the frame before the query (must stay neutral). Latency per chunk = prefill of the last frame +
denoising its chunk (batch 1, float32, CPU). Cache = tokens per layer and bytes held at the
decision, checked against the closed formula MemoryRules.held_tokens.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from binomial import wilson  # noqa: E402
from memory_training import relative_class_difference, train_model  # noqa: E402

from memorywam_ros.model import MemoryConfig, MemoryWAM, MemoryWAMConfig, VideoDiTConfig  # noqa: E402
from memorywam_ros.model.config import GIST_INITS, ActionDiTConfig  # noqa: E402
from memorywam_ros.runtime.instructions import random_instruction_embeddings  # noqa: E402

RESULTS = ROOT / "bench" / "results"
POLICIES = ("hybrid", "full", "window", "no_gist", "no_anchor")
DELAYS = (8, 32, 128)
MEMORY = {"n_init": 1, "n_recent": 2, "num_gists": 1}
# 2 action dims, not the robot's 14: the class lives on one joint and the loss averages over the dims;
# with 14, `full` reached 45 % at D = 8 after 600 steps, with 2 it reached 97.5 % (40 episodes each)
CHANNELS, LATENT_HW, CHUNK, ACTION_DIM = 48, (6, 8), 4, 2
NUM_LAYERS = 2
NUM_CLASSES = 4
CUES = ("spatial", "uniform", "patch")
TARGETS = np.linspace(-1.5, 1.5, NUM_CLASSES)  # joint 0 of the query chunk, per class (normalised units)
CLASS_JOINT = 0
AMP = 1.5  # cue / query pattern amplitude against N(0, 1) distractors
JITTER = 4  # cue frame c in [N_init, N_init + JITTER)
PATTERN_SEED, EVAL_SEED0 = 12345, 1_000_000
INSTRUCTION = "remember the cue and answer at the query"
COND_NOISE = 0.0  # conditioning-noise augmentation off: with p = 1 (the trainer's default) full needs >3x the steps
NEUTRAL_TOL = 0.25  # |mean joint 0| below this: a neutral chunk (class targets are 1.0 apart, nearest 0.5)
PRESETS = {
    "quick": {"delays": [8], "steps": 600, "batch": 8, "episodes": 40},  # D = 8 only: <= 10 min
    "full": {"delays": list(DELAYS), "steps": 600, "batch": 8, "episodes": 100},
}


def probe_config(policy: str, layers: int = NUM_LAYERS, num_gists: int = MEMORY["num_gists"],
                 gist_init: str = "learned") -> MemoryWAMConfig:
    """The real MemoryWAM at a tiny size (~0.1 M parameters); 12 video tokens + 1 gist per frame
    (--gists, --gist-init: MemoryWAMConfig.gist_init)."""
    return MemoryWAMConfig(
        video=VideoDiTConfig(num_attention_heads=2, attention_head_dim=16, in_channels=CHANNELS,
                             out_channels=CHANNELS, text_dim=32, freq_dim=32, ffn_dim=128, num_layers=layers),
        action=ActionDiTConfig(hidden_dim=32, ffn_dim=128, action_dim=ACTION_DIM, proprio_dim=ACTION_DIM,
                               chunk_size=CHUNK),
        memory=MemoryConfig(policy=policy, **dict(MEMORY, num_gists=num_gists)),
        latent_height=LATENT_HW[0],
        latent_width=LATENT_HW[1],
        text_len=8,
        gist_init=gist_init,
    )


def gist_knobs(knobs: dict) -> tuple[int, str]:
    """(gists per frame, gist init) of a run: its knobs, or the defaults when unset (older runs)."""
    return knobs.get("gists", MEMORY["num_gists"]), knobs.get("gist_init", "learned")


def supervised_chunks(knobs: dict) -> int:
    """Chunks in a run's action loss, counted back from the query (`training_sample`); 0: every chunk
    (the default, and every run made before the knob existed). Used by run(), the report and the
    combined table (bench/look_and_press.py), so the default lives here only."""
    return knobs.get("supervised_chunks", 0)


def train_device(knobs: dict) -> str:
    """Where a run's cells trained: its `--device` knob, set only off the default, so "cpu" for every run
    made without it. Used by run(), the report and the combined table (bench/look_and_press.py)."""
    return knobs.get("device", "cpu")


def supervised_text(knobs: dict) -> str:
    n = supervised_chunks(knobs)
    return f"the last {n} chunks only (the query's and {n - 1} before it)" if n else "every chunk"


def window_reach(config: MemoryWAMConfig) -> int:
    """Frames back from the decision that the recent window still reaches through deeper keys (README)."""
    return config.video.num_layers * (config.memory.n_recent - 1) + 1


# ------------------------------------------------------------------------------------ episodes
def patterns(cue: str = "spatial") -> tuple[torch.Tensor, torch.Tensor]:
    """(cue patterns (K, C, h, w), query marker (C, h, w)): fixed random +-AMP signs over the whole latent.

    cue "spatial": a sign per channel *and position* (a texture: which token holds which sign is the
    class); "uniform": a sign per channel, the same at every position (a colour filling the view);
    "patch": the uniform colour on the top-left quarter of the latent only (h/2 x w/2: 3 of the 12
    tokens), zero elsewhere: Look-and-Press's panel, a colour on part of the view.
    The query marker is always spatial (it is read through the window, never from a gist)."""
    if cue not in CUES:
        raise ValueError(f"cue must be one of {CUES}, not {cue!r}")
    gen = torch.Generator().manual_seed(PATTERN_SEED)
    signs = torch.randint(0, 2, (NUM_CLASSES + 1, CHANNELS, *LATENT_HW), generator=gen).float() * 2 - 1
    cues = signs[:NUM_CLASSES] if cue == "spatial" else signs[:NUM_CLASSES, :, :1, :1].expand_as(signs[:NUM_CLASSES])
    if cue == "patch":
        h, w = LATENT_HW
        cues = torch.zeros_like(cues)
        cues[:, :, : h // 2, : w // 2] = signs[:NUM_CLASSES, :, :1, :1]
    return AMP * cues, AMP * signs[NUM_CLASSES]


@dataclass
class Episode:
    latents: torch.Tensor  # (T, C, h, w)
    actions: torch.Tensor  # (T, CHUNK, ACTION_DIM)
    cue_frame: int
    label: int

    @property
    def num_frames(self) -> int:
        return self.latents.shape[0]


def make_episode(seed: int, delay: int, n_init: int = MEMORY["n_init"], cue: str = "spatial") -> Episode:
    """One passkey episode: cue of a random class at c >= n_init, query at c + delay, the last frame."""
    gen = torch.Generator().manual_seed(seed)
    label = int(torch.randint(0, NUM_CLASSES, (1,), generator=gen))
    cue_frame = n_init + int(torch.randint(0, JITTER, (1,), generator=gen))
    last = cue_frame + delay
    latents = torch.randn((last + 1, CHANNELS, *LATENT_HW), generator=gen)
    cues, query = patterns(cue)
    latents[cue_frame] += cues[label]
    latents[last] += query
    actions = torch.zeros(last + 1, CHUNK, ACTION_DIM)
    actions[last, :, CLASS_JOINT] = float(TARGETS[label])
    return Episode(latents, actions, cue_frame, label)


def training_sample(ep: Episode, text: torch.Tensor, index: int, supervised: int = 0) -> dict:
    """The LatentDataset layout ("episode" mode: the whole episode, absolute frame ids from 0).

    `supervised` > 0: only the last `supervised` chunks (the query's and the neutral ones just before
    it) are in the action loss (`action_mask`), so the query chunk's share of the loss is
    1/`supervised` instead of 1/T (1/~131 at D = 128). The loss-weighting lever of the issue: every
    frame still goes through the network, only what the loss averages over changes."""
    n = ep.num_frames
    ids = torch.arange(n)
    mask = torch.ones(n, CHUNK, dtype=torch.bool)
    if supervised > 0:
        mask[: max(0, n - supervised)] = False
    return {"latents": ep.latents, "frame_ids": ids, "actions": ep.actions,
            "action_mask": mask, "proprio": torch.zeros(n, ACTION_DIM),
            "video_mask": ids[1:] == ids[:-1] + 1, "text": text, "episode": index}


class PasskeyEpisodes(Sequence):
    """Training episodes generated on demand from seeds [seed0, seed0 + count): no latent is stored."""

    def __init__(self, delay: int, text: torch.Tensor, count: int, seed0: int = 0, cue: str = "spatial",
                 supervised: int = 0):
        if seed0 + count > EVAL_SEED0:
            raise ValueError(f"training seeds [{seed0}, {seed0 + count}) overlap the evaluation seeds >= {EVAL_SEED0}")
        self.delay, self.text, self.count, self.seed0, self.cue = delay, text, count, seed0, cue
        self.supervised = supervised

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.count:
            raise IndexError(i)
        return training_sample(make_episode(self.seed0 + i, self.delay, cue=self.cue), self.text, i, self.supervised)


def decode_class(chunk: torch.Tensor) -> int:
    """Chunk (K, A) -> the class whose target is nearest to the mean of joint CLASS_JOINT."""
    return int(np.argmin(np.abs(TARGETS - float(chunk[:, CLASS_JOINT].mean()))))


def instruction_text() -> torch.Tensor:
    return random_instruction_embeddings([INSTRUCTION], 32, 8)[0]


# ------------------------------------------------------------------------------------ train / eval
def train_cell(policy: str, delay: int, steps: int, batch: int, seed: int = 0,
               layers: int = NUM_LAYERS, cue: str = "spatial",
               checkpoint: Path | None = None, num_gists: int = MEMORY["num_gists"],
               gist_init: str = "learned", supervised: int = 0, device: str = "cpu") -> tuple[MemoryWAM, dict]:
    """One cell's model. `checkpoint`: where the unfinished run is kept (a D = 128 cell is > 1 h of CPU).
    `supervised`: chunks in the action loss, counted back from the query (0: all; `training_sample`).
    `device`: where it trains (`train_model`); it is evaluated on CPU either way."""
    config = probe_config(policy, layers, num_gists, gist_init)
    data = PasskeyEpisodes(delay, instruction_text(), count=max(1, steps * batch), seed0=seed * 100_000, cue=cue,
                           supervised=supervised)
    return train_model(config, data, steps, batch, seed, cond_noise=COND_NOISE, checkpoint=checkpoint,
                       device=device, loss_video_weight=0.0)


@torch.no_grad()
def evaluate(model: MemoryWAM, delay: int, episodes: int, num_steps: int = 10, cue: str = "spatial") -> dict:
    """Prefill every frame into a fresh cache, denoise the chunk before the query and the query's, as on the robot."""
    rules, L = model.rules, model.config.tokens_per_frame
    text = model.text_context(instruction_text()[None])
    proprio = torch.zeros(1, ACTION_DIM)
    gen = torch.Generator().manual_seed(0)
    hits, neutral, latency, prefill_ms = 0, 0, [], []
    tokens = nbytes = 0
    gist_feats: dict[str, list[torch.Tensor]] = {"cue": [], "distractor": []}
    cue_video: list[torch.Tensor] = []  # the cue frame's own video keys/values: what its gists could copy
    labels, cue_frames = [], []
    for j in range(episodes):
        ep = make_episode(EVAL_SEED0 + j, delay, cue=cue)
        cache = model.new_cache(batch=1)
        video_start: dict[int, int] = {}
        gist_start = record_gist_slots(cache, video_start)
        for t in range(ep.num_frames):
            t0 = time.perf_counter()
            model.prefill(cache, ep.latents[t][None], t, text)
            t1 = time.perf_counter()
            prefill_ms.append((t1 - t0) * 1000)
            if t == ep.cue_frame:  # read while held (its slots are reused once it leaves the window)
                cue_video.append(cached_gist(cache, video_start[t], L))
            if t == ep.num_frames - 2:
                before = model.sample_actions(cache, text, proprio, num_steps, generator=gen)[0]
                neutral += abs(float(before[:, CLASS_JOINT].mean())) < NEUTRAL_TOL
        chunk = model.sample_actions(cache, text, proprio, num_steps, generator=gen)[0]
        latency.append(time.perf_counter() - t0)
        hits += decode_class(chunk) == ep.label
        tokens, nbytes = cache.held_tokens, cache.held_bytes
        labels.append(ep.label)
        cue_frames.append(ep.cue_frame)
        if rules.num_gists:
            for name, frame in (("cue", ep.cue_frame), ("distractor", ep.cue_frame + 1)):
                gist_feats[name].append(cached_gist(cache, gist_start[frame], rules.num_gists))
        if tokens != rules.held_tokens(ep.num_frames, L):
            raise AssertionError(f"cache holds {tokens} tokens, the closed formula says "
                                 f"{rules.held_tokens(ep.num_frames, L)}")
    lat_ms = np.array(latency) * 1000
    lo, hi = wilson(hits, episodes)
    return {"episodes": episodes, "correct": hits, "accuracy": hits / episodes, "ci95": [lo, hi],
            "neutral_before_query": neutral / episodes, "cache_tokens": tokens, "cache_bytes": nbytes,
            "latency_ms_median": float(np.median(lat_ms)), "latency_ms_p90": float(np.percentile(lat_ms, 90)),
            "prefill_ms_median": float(np.median(prefill_ms)),
            "gist_probe": {name: nearest_centroid_accuracy(torch.stack(f), labels) for name, f in gist_feats.items()}
            if rules.num_gists else None,
            "gist_write": gist_write(gist_feats["cue"], cue_video, labels, cue_frames) if rules.num_gists else None}


def gist_write(cue_gist: list[torch.Tensor], cue_video: list[torch.Tensor], labels: list[int],
               cue_frames: list[int]) -> dict:
    """How strongly the class is written, per layer: `relative_class_difference` of the cue frame's
    cached gist keys/values beside that of its own video tokens (what the gists attend to). A ratio
    far below 1 is the write diluting the cue (Look-and-Press measured 200-1000x). The class means
    are taken of features centred per cue frame index (relative to the raw features' rms): the cue
    frame jitters and RoPE makes the keys depend on it, which uncentred reads ~0.06 with 100
    episodes even for a layer-0 gist (its learned embedding alone: it cannot hold the class)."""
    y, where = np.array(labels), np.array(cue_frames)
    out = {}
    for name, feats in (("cue_gist", cue_gist), ("cue_video", cue_video)):
        raw = torch.stack(feats).double().numpy()  # (episodes, layers, F)
        x = raw.copy()
        for c in np.unique(where):
            x[where == c] -= x[where == c].mean(0)
        out[name] = [relative_class_difference(x[:, layer], y, raw[:, layer]) for layer in range(x.shape[1])]
    return out


def record_gist_slots(cache, video_starts: dict[int, int] | None = None) -> dict[int, int]:
    """frame id -> first cache slot of its gists, recorded as the cache places them (gists are never evicted).
    `video_starts` (optional) receives frame id -> first slot of its video tokens (valid while the frame
    is held: a slot is reused once the frame leaves the window)."""
    starts: dict[int, int] = {}
    begin = cache.begin_frame

    def recording(frame_id: int):
        video_start, gist_start = begin(frame_id)
        starts[frame_id] = gist_start
        if video_starts is not None:
            video_starts[frame_id] = video_start
        return video_start, gist_start

    cache.begin_frame = recording
    return starts


def cached_gist(cache, start: int, m: int) -> torch.Tensor:
    """(layers, features): the cached keys and values of slots [start, start + m) (a frame's gists, or
    its video tokens), per layer."""
    return torch.stack([torch.cat((cache.keys[layer][0, :, start:start + m].flatten(),
                                   cache.values[layer][0, :, start:start + m].flatten()))
                        for layer in range(cache.num_layers)])


def nearest_centroid_accuracy(features: torch.Tensor, labels: list[int]) -> list[float]:
    """Gist probe, per layer: class means fitted on the first half of the episodes, accuracy on the second half.

    features (episodes, layers, F). High on the cue frame's gist = the class was written into the gist.
    The next frame's gist is no clean control: it sees frame c through the window and the cue's gist,
    so the class may be copied into it (it is: bench/results/passkey_full.json)."""
    y = torch.tensor(labels)
    n = len(labels) // 2
    out = []
    for layer in range(features.shape[1]):
        x = features[:, layer].float()
        x = (x - x[:n].mean(0)) / (x[:n].std(0) + 1e-6)
        present = [k for k in range(NUM_CLASSES) if (y[:n] == k).any()]
        means = torch.stack([x[:n][y[:n] == k].mean(0) for k in present])
        pred = torch.tensor(present)[torch.cdist(x[n:], means).argmin(1)]
        out.append(float((pred == y[n:]).float().mean()) if len(y) > n else float("nan"))
    return out


# ------------------------------------------------------------------------------------ report
def cell_key(policy: str, delay: int) -> str:
    return f"{policy}@{delay}"


def cell_checkpoint(stem: Path, key: str) -> Path:
    """Where an unfinished cell's training is kept: beside the report, `<stem>.ckpt/<policy>@<D>.pt` (not committed)."""
    return stem.with_name(stem.name + ".ckpt") / f"{key}.pt"


def targets_met(result: dict) -> dict:
    """The issue's targets, evaluated on the cells present."""
    cells, reach, chance = result["cells"], result["window_reach"], 1 / NUM_CLASSES
    out: dict[str, bool | None] = {}
    for pol in ("hybrid", "full"):
        accs = [c["accuracy"] for k, c in cells.items() if k.startswith(pol + "@")]
        out[f"{pol} >= 95 % at every D"] = all(a >= 0.95 for a in accs) if accs else None
    for pol in ("window", "no_gist"):
        accs = [c["accuracy"] for k, c in cells.items() if k.startswith(pol + "@") and c["delay"] > reach]
        out[f"{pol} <= 1/K + 10 pts beyond reach"] = all(a <= chance + 0.10 for a in accs) if accs else None
    longest = max((c["delay"] for c in cells.values()), default=None)
    hyb, full = cells.get(cell_key("hybrid", longest)), cells.get(cell_key("full", longest))
    out[f"hybrid cache <= 1/8 of full's at D={longest}"] = (
        hyb["cache_bytes"] <= full["cache_bytes"] / 8 if hyb and full else None)
    return out


def table(result: dict) -> list[str]:
    lines = ["| policy | D | accuracy | 95 % CI (Wilson) | neutral before query | cache tokens / layer | "
             "cache KiB | latency / chunk (median, p90 ms) | train s | final action loss | "
             "cue in its gist / in its video tokens (last layer) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, c in sorted(result["cells"].items(), key=lambda kv: (kv[1]["delay"], POLICIES.index(kv[1]["policy"]))):
        lines.append(f"| {c['policy']} | {c['delay']} | {c['accuracy']:.0%} ({c['correct']}/{c['episodes']}) | "
                     f"{c['ci95'][0]:.0%}–{c['ci95'][1]:.0%} | {c['neutral_before_query']:.0%} | "
                     f"{c['cache_tokens']} | {c['cache_bytes'] / 1024:.1f} | "
                     f"{c['latency_ms_median']:.1f}, {c['latency_ms_p90']:.1f} | {c['train']['train_s']:.0f} | "
                     f"{c['train']['final_action_loss']:.4f} | {_write_cell(c)} |")
    return lines


def _write_cell(cell: dict) -> str:
    """Table cell: the cue's relative class difference in the cue frame's gist and video tokens."""
    write = cell.get("gist_write")
    return f"{write['cue_gist'][-1]:.1e} / {write['cue_video'][-1]:.1e}" if write else "–"


def write_report(result: dict, stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    result["targets"] = targets_met(result)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    gists, gist_init = gist_knobs(result["knobs"])
    lines = [f"# Passkey probe ({result['preset']}): {result['knobs']['episodes']} held-out episodes per cell", "",
             *table(result), "", f"Command: `{result['command']}`", "",
             f"Chance is 1/K = {1 / NUM_CLASSES:.0%}. The window reaches {result['window_reach']} frames back "
             f"(num_layers·(N_recent − 1) + 1); every D is beyond it. {result['tokens_per_frame']} video tokens + "
             f"{gists} gist(s) per frame, initialised {gist_init} (the robot: 120 + 8, learned). "
             f"Action loss on {supervised_text(result['knobs'])}; trained on {train_device(result['knobs'])}. "
             "Latency = prefill of the query frame + 10 Euler steps of its chunk, float32, CPU, batch 1.", "",
             "Targets:", ""]
    lines += [f"- {name}: {'met' if ok else ('not measured' if ok is None else 'MISSED')}"
              for name, ok in result["targets"].items()]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for pol in POLICIES:
        cells = sorted((c for c in result["cells"].values() if c["policy"] == pol), key=lambda c: c["delay"])
        if not cells:
            continue
        acc = np.array([c["accuracy"] for c in cells])
        err = np.array([[a - c["ci95"][0], c["ci95"][1] - a] for a, c in zip(acc, cells)]).T
        ax.errorbar([c["delay"] for c in cells], acc, yerr=err, marker="o", capsize=3, label=pol)
    ax.axhline(1 / NUM_CLASSES, color="k", ls="--", lw=1, label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("delay D (latent frames between cue and query)")
    ax.set_ylabel("accuracy (95 % Wilson CI)")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"MemoryWAM passkey probe ({result['preset']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=100)
    plt.close(fig)


def load_previous(stem: Path, knobs: dict) -> dict:
    """Cells of an earlier run with the same knobs (resume); a run with other knobs is refused, not mixed."""
    path = stem.with_suffix(".json")
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    same = {k: old.get("knobs", {}).get(k) == v for k, v in knobs.items() if k != "delays"}
    if not all(same.values()):
        raise SystemExit(f"{path} was made with other knobs {old.get('knobs')} (now {knobs}): "
                         "move it away or pass --out to start a separate run")
    return old.get("cells", {})


def merge_cells(parts: Sequence[Path], knobs: dict) -> dict:
    """The cells of result JSONs made with these knobs (one process per cell: bench/run_passkey_grid.sh);
    a part made with other knobs is refused like a resumed run, a cell held by two parts too."""
    cells: dict = {}
    for part in parts:
        for key, cell in load_previous(part.with_suffix(""), knobs).items():
            if key in cells:
                raise SystemExit(f"{part}: cell {key} is in two of the parts")
            cells[key] = cell
    return cells


def run(knobs: dict, policies: Sequence[str], stem: Path, command: str, preset: str,
        merged: dict | None = None) -> dict:
    """Train and evaluate every (policy, D) cell missing from stem.json (and from `merged`, cells made
    elsewhere with the same knobs), writing the report after each."""
    cells = {**load_previous(stem, knobs), **(merged or {})}
    config = probe_config(policies[0], knobs.get("layers", NUM_LAYERS))
    result = {"preset": preset, "command": command, "knobs": knobs, "memory": MEMORY, "num_classes": NUM_CLASSES,
              "tokens_per_frame": config.tokens_per_frame, "chunk_size": CHUNK, "window_reach": window_reach(config),
              "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "cells": cells}
    if min(knobs["delays"]) <= result["window_reach"]:
        raise SystemExit(f"delays {knobs['delays']} must exceed the window's reach {result['window_reach']}")
    for delay in knobs["delays"]:
        for policy in policies:
            key = cell_key(policy, delay)
            if key in cells:
                print(f"  {key:14s} done earlier, skipped", flush=True)
                continue
            ckpt = cell_checkpoint(stem, key)
            model, info = train_cell(policy, delay, knobs["steps"], knobs["batch"], knobs.get("seed", 0),
                                     knobs.get("layers", NUM_LAYERS), knobs.get("cue", "spatial"), ckpt,
                                     *gist_knobs(knobs), supervised=supervised_chunks(knobs),
                                     device=train_device(knobs))
            r = evaluate(model, delay, knobs["episodes"], cue=knobs.get("cue", "spatial"))
            cells[key] = {"policy": policy, "delay": delay, **r, "train": info}
            print(f"  {key:14s} accuracy {r['accuracy']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}] neutral "
                  f"{r['neutral_before_query']:.2f} | cache {r['cache_tokens']} tok {r['cache_bytes'] / 1024:.1f} KiB"
                  f" | {r['latency_ms_median']:.1f} ms/chunk | loss a {info['final_action_loss']:.4f} "
                  f"train {info['train_s']:.0f} s", flush=True)
            write_report(result, stem)
            ckpt.unlink(missing_ok=True)  # the cell is in the JSON now
    write_report(result, stem)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke-size run (<= 10 min); its numbers are not the result")
    p.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    p.add_argument("--delays", nargs="+", type=int, help="override the preset's delays")
    p.add_argument("--steps", type=int, help="override the preset's training steps per cell")
    p.add_argument("--episodes", type=int, help="override the preset's evaluation episodes per cell")
    p.add_argument("--layers", type=int, help=f"override the depth (default {NUM_LAYERS})")
    p.add_argument("--cue", choices=CUES, help="cue pattern (default spatial; see patterns())")
    p.add_argument("--gists", type=int, help=f"gists per frame (default {MEMORY['num_gists']})")
    p.add_argument("--gist-init", choices=GIST_INITS, help="MemoryWAMConfig.gist_init (default learned)")
    p.add_argument("--supervised-chunks", type=int, dest="supervised_chunks",
                   help="only the last N chunks (the query's and N - 1 neutral ones) in the action loss (default: all)")
    p.add_argument("--device", default="cpu", help="where each cell trains (cuda: a GPU; evaluation stays on CPU)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared box)")
    p.add_argument("--out", default=None, help="output stem (default bench/results/passkey_<preset>)")
    p.add_argument("--merge", nargs="+", type=Path, default=[], metavar="JSON",
                   help="first take the cells of these results (same knobs) into --out, e.g. one process per cell")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    preset = "quick" if args.quick else "full"
    knobs = dict(PRESETS[preset], seed=0, action_dim=ACTION_DIM, cond_noise=COND_NOISE, layers=NUM_LAYERS)
    for key in ("delays", "steps", "episodes", "layers", "cue", "gists", "gist_init", "supervised_chunks"):
        if getattr(args, key) is not None:
            knobs[key] = getattr(args, key)
    if args.device != "cpu":  # a knob only off the default, so the CPU runs made before it still resume
        knobs["device"] = args.device
    stem = Path(args.out) if args.out else RESULTS / f"passkey_{preset}"
    t0 = time.perf_counter()
    command = "python bench/passkey.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = run(knobs, args.policies, stem, command, preset, merge_cells(args.merge, knobs))
    print("\n".join(table(result)))
    for name, ok in result["targets"].items():
        print(f"target {name}: {'met' if ok else ('not measured' if ok is None else 'MISSED')}")
    print(f"wrote {stem}.json/.md/.png in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
