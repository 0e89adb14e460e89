"""Why the MiniGrid memory benchmark sits at chance: can the tiny model *see* what it must remember?

    .venv/bin/python bench/memory_probes.py linear              # ~2 min: is the information in the latents?
    .venv/bin/python bench/memory_probes.py readout --label cue-hint   # ~2 min: a screen-wide colour
    .venv/bin/python bench/memory_probes.py readout --label north      # ~2 min: an 8x8 sprite's kind
    .venv/bin/python bench/memory_probes.py decision --cue-hint        # ~7 min: the task's choice, teacher-forced

Appends one JSON line per run to bench/results/memory_probes.jsonl. Everything uses the benchmark's
own pieces (bench/memory_capability.py): oracle demonstrations, the calibrated random tiny Wan2.2
VAE, `bench_config`, `train_model`, and `runtime.policy.Policy` for the model's answers.

* linear: a logistic-regression probe (L-BFGS, L2 1e-2, 2/3 train, 1/3 held out) on single
  normalised latent frames: the kind of the north candidate at the decision frame, and the cue's
  kind on frames where it is in view. High accuracy = the VAE keeps the information.
* readout: train the benchmark's model on demonstrations whose every action row is relabelled with
  a constant per episode (left for key, right for ball) and measure, teacher-forced on the first 4
  frames of held-out episodes, how often the sampled chunk says the right one. `cue-hint`: the
  label is the cue's kind, painted over both wrist tiles in every frame (a screen-wide colour);
  `north`: the label is the kind of the north candidate, an 8x8 sprite somewhere in the head tile;
  `sides`: the same label, with the north candidate's colour painted over the left wrist tile and
  the south one's over the right (both colours always on screen: only *where* each is tells).
* decision: train with the benchmark's preset and measure the choice at the junction teacher-forced
  (the oracle's own observations up to the decision) on training and evaluation seeds, separating
  "cannot choose" from "drifts in closed loop".
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import memory_capability as mc  # noqa: E402
from memory_training import train_model  # noqa: E402
from minigrid.core.constants import COLORS  # noqa: E402

from memorywam_ros.runtime.instructions import random_instruction_embeddings  # noqa: E402
from memorywam_ros.runtime.normalization import Normalizer  # noqa: E402
from memorywam_ros.runtime.policy import Policy  # noqa: E402
from memorywam_ros.runtime.vae import StreamingVAEEncoder  # noqa: E402
from memorywam_ros.sim.minigrid_memory import LEFT, OBJECT_COLORS, RIGHT, Episode, MemoryTask  # noqa: E402

OUT = ROOT / "bench" / "results" / "memory_probes.jsonl"


def north_kind(env_id: str, seed: int) -> str:
    task = MemoryTask(env_id)
    task.reset(seed)
    env = task.unwrapped
    return env.grid.get(env.success_pos[0], env.height // 2 - 2).type


def logistic_probe(x: np.ndarray, y: np.ndarray) -> float:
    """Held-out accuracy of an L2 logistic regression trained on the first 2/3."""
    n = len(y) * 2 // 3
    a = torch.tensor(x, dtype=torch.float32)
    a = (a - a[:n].mean(0)) / (a[:n].std(0) + 1e-3)
    t = torch.tensor(y, dtype=torch.float32)
    w = torch.zeros(a.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(a[:n] @ w + b, t[:n]) + 1e-2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float(((a[n:] @ w + b > 0).float() == t[n:]).float().mean())


def make_policy(model, vae, normalizer: Normalizer, text: torch.Tensor, tmp: str, mosaic) -> Policy:
    store = mc.instruction_store(Path(tmp), text)
    return Policy(model, StreamingVAEEncoder(vae), normalizer, store, mosaic, mc.ENCODER_ID, num_steps=10, seed=0)


def chosen(policy: Policy, ep: Episode, frames: int) -> list[int]:
    """The policy's action at each of the first `frames` frames, fed the episode's own observations."""
    policy.reset(mc.INSTRUCTION)
    out = []
    for t in range(frames):
        policy.observe(mc.frame_mosaics(ep.mosaics[t], t == 0), ep.proprio[t])
        out.append(mc.chunk_to_action(policy.act()))
    return out


def run_linear(args: argparse.Namespace) -> dict:
    eps = [mc.run_oracle_episode(args.env, s, mosaic_size=args.mosaic) for s in range(args.demos)]
    vae, _ = mc.calibrated_vae(eps[:20])
    lats = [s["latents"] for s in mc.encode_demos(eps, vae)[0]]
    x_north = np.stack([lat[ep.decision_step].flatten().numpy() for ep, lat in zip(eps, lats)])
    y_north = np.array([north_kind(args.env, ep.seed) == "key" for ep in eps])
    cue = [(lat[t].flatten().numpy(), ep.cue_kind == "key") for ep, lat in zip(eps, lats)
           for t in range(ep.num_steps) if ep.cue_in_view[t]]
    return {"north_kind_at_decision": logistic_probe(x_north, y_north), "north_samples": len(y_north),
            "cue_kind_in_view": logistic_probe(np.stack([c[0] for c in cue]), np.array([c[1] for c in cue])),
            "cue_samples": len(cue)}


def paint_sides(ep: Episode, env_id: str) -> None:
    """Left wrist tile <- the north candidate's colour, right wrist tile <- the south one's, every frame."""
    north = north_kind(env_id, ep.seed)
    south = "ball" if north == "key" else "key"
    h, w = ep.mosaics.shape[1] // 3, ep.mosaics.shape[2] // 2
    ep.mosaics[:, :h, :w] = COLORS[OBJECT_COLORS[north]]
    ep.mosaics[:, :h, w:] = COLORS[OBJECT_COLORS[south]]


def run_readout(args: argparse.Namespace) -> dict:
    hint = args.label == "cue-hint"
    eps = [mc.run_oracle_episode(args.env, s, noise=0.2, mosaic_size=args.mosaic, cue_hint=hint)
           for s in range(args.demos + 20)]
    if args.label == "sides":
        for ep in eps:
            paint_sides(ep, args.env)
    label = {ep.seed: (ep.cue_kind if hint else north_kind(args.env, ep.seed)) for ep in eps}
    vae, _ = mc.calibrated_vae(eps[:20])
    samples, _ = mc.encode_demos(eps, vae)
    for ep, s in zip(eps, samples):
        chunk = mc.action_chunk(LEFT if label[ep.seed] == "key" else RIGHT)
        s["actions"] = torch.from_numpy(np.repeat(chunk[None], ep.num_steps, axis=0))
    text = random_instruction_embeddings([mc.INSTRUCTION], 32, 8)[0]
    data, normalizer = mc.fit_dataset(samples, text)
    model, info = train_model(mc.bench_config("window", args.mosaic), data[: args.demos], args.steps, 16, 0,
                                 args.cond_noise)
    with tempfile.TemporaryDirectory() as tmp:
        policy = make_policy(model, vae, normalizer, text, tmp, args.mosaic)
        hits = [a == (LEFT if label[ep.seed] == "key" else RIGHT)
                for ep in eps[args.demos:] for a in chosen(policy, ep, min(4, ep.num_steps))]
    return {"accuracy_held_out": float(np.mean(hits)), "answers": len(hits), **info}


def run_decision(args: argparse.Namespace) -> dict:
    eps = [mc.run_oracle_episode(args.env, s, noise=0.2, mosaic_size=args.mosaic, cue_hint=args.cue_hint)
           for s in range(args.demos)]
    vae, _ = mc.calibrated_vae(eps[:20])
    samples, _ = mc.encode_demos(eps, vae)
    text = random_instruction_embeddings([mc.INSTRUCTION], 32, 8)[0]
    data, normalizer = mc.fit_dataset(samples, text)
    model, info = train_model(mc.bench_config(args.policy, args.mosaic), data, args.steps, 16, 0, args.cond_noise)

    def accuracy(seeds: range) -> float:
        clean = [mc.run_oracle_episode(args.env, s, mosaic_size=args.mosaic, cue_hint=args.cue_hint) for s in seeds]
        return float(np.mean([chosen(policy, ep, ep.decision_step + 1)[-1] == int(np.argmax(ep.actions[
            ep.decision_step][:3])) for ep in clean]))

    with tempfile.TemporaryDirectory() as tmp:
        policy = make_policy(model, vae, normalizer, text, tmp, args.mosaic)
        return {"decision_accuracy_train_seeds": accuracy(range(100)),
                "decision_accuracy_eval_seeds": accuracy(range(mc.EVAL_SEED0, mc.EVAL_SEED0 + 100)), **info}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("probe", choices=("linear", "readout", "decision"))
    p.add_argument("--env", default=mc.ENV_IDS[0])
    p.add_argument("--label", choices=("cue-hint", "north", "sides"), default="north",
                   help="readout: what to read (sides: the north candidate's kind, its colour painted on the left "
                        "wrist tile and the south one's on the right: large, but only its side tells)")
    p.add_argument("--cue-hint", action="store_true", help="decision: the cue's colour fills the wrist tiles")
    p.add_argument("--policy", default="window", help="decision: memory policy")
    p.add_argument("--demos", type=int, help="demonstrations (default: linear 300, readout 100, decision 400)")
    p.add_argument("--steps", type=int, help="training steps (default: readout 300, decision 1500)")
    p.add_argument("--cond-noise", type=float, default=1.0)
    p.add_argument("--mosaic", default="96x64")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.mosaic = tuple(int(v) for v in args.mosaic.lower().split("x"))
    args.demos = args.demos or {"linear": 300, "readout": 100, "decision": 400}[args.probe]
    args.steps = args.steps or (300 if args.probe == "readout" else 1500)
    t0 = time.perf_counter()
    result = {"linear": run_linear, "readout": run_readout, "decision": run_decision}[args.probe](args)
    record = {"probe": args.probe, "command": "python bench/memory_probes.py " + " ".join(sys.argv[1:]),
              **{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}, **result,
              "wall_s": time.perf_counter() - t0}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
