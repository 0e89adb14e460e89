"""Passkey diagnosis: where does the query chunk look, and does the cue frame's gist hold the class?

    nice .venv/bin/python bench/passkey_attention.py --cue spatial --steps 600
    nice .venv/bin/python bench/passkey_attention.py --cue uniform --steps 2000

Trains one passkey cell (bench/passkey.py: same episodes, model, trainer step) and then, on 20
held-out episodes, runs the training forward (the dense memory mask, the attention the cached
path reproduces) with the query chunk half-noised at timestep 500, and reports per layer the
attention mass the query chunk's action tokens put on each kind of key: the cue frame's gist,
the other gists, the query frame's tokens, the rest of the window, the anchor frame, their own
chunk (the cue frame's tokens are outside the window: 0 by the memory rules). Also the cue gist's
own attention (on the cue frame's tokens, the anchor, earlier gists) and passkey's accuracy and
gist probe. Appends one JSON line per run to bench/results/passkey_attention.jsonl.

What it showed (bench/results/passkey_attention.jsonl): with the texture cue the query chunk's
attention on the cue gist is ~0.5 % (below a uniform share) and the gist barely holds the class;
with the colour cue the gist holds it (probe 100 %) and, trained long enough, the query reads it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import passkey as pk  # noqa: E402

from memorywam_ros.model import attention  # noqa: E402
from memorywam_ros.model.memory import TokenKind  # noqa: E402
from memorywam_train.dataset import collate  # noqa: E402


def attention_masses(model, delay: int, cue: str, episodes: int = 20) -> dict[str, list[float]]:
    """Mean attention mass per key category and layer (see the module docstring)."""
    captured: list[torch.Tensor] = []
    original = attention.MemoryMaskedAttention.__call__

    def recording(self, q, k, v):
        scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
        captured.append(scores.masked_fill(~self.dense_mask, float("-inf")).softmax(-1))
        return original(self, q, k, v)

    L, M, K = model.config.tokens_per_frame, model.rules.num_gists, model.config.action.chunk_size
    sums: dict[str, list[list[float]]] = {}
    attention.MemoryMaskedAttention.__call__ = recording
    try:
        for j in range(episodes):
            ep = pk.make_episode(pk.EVAL_SEED0 + j, delay, cue=cue)
            batch = collate([pk.training_sample(ep, pk.instruction_text(), 0)])
            n, c = ep.num_frames, ep.cue_frame
            frame, kind, _ = model.sequence_metadata(batch["frame_ids"], L, M, K, False)
            frame, kind = frame[0], kind[0]
            gen = torch.Generator().manual_seed(j)
            noisy = 0.5 * batch["actions"] + 0.5 * torch.randn(batch["actions"].shape, generator=gen)
            captured.clear()
            with torch.no_grad():
                model(batch["latents"], batch["text"], batch["proprio"], noisy, torch.full((1, n), 500.0),
                      batch["frame_ids"])
            clean, gist = kind == TokenKind.CLEAN, kind == TokenKind.GIST
            keys = {"cue_gist": gist & (frame == c), "other_gists": gist & (frame != c),
                    "query_frame_tokens": clean & (frame == n - 1), "window_other": clean & (frame == n - 2),
                    "anchor_tokens": clean & (frame < pk.MEMORY["n_init"]), "cue_tokens": clean & (frame == c),
                    "own_chunk": kind == TokenKind.ACTION}
            query = (kind == TokenKind.ACTION) & (frame == n - 1)
            cue_gist = gist & (frame == c)
            for layer, probs in enumerate(captured):
                w = probs[0, :, query].mean((0, 1))
                wg = probs[0, :, cue_gist].mean((0, 1))
                row = {f"query->{name}": float(w[sel].sum()) for name, sel in keys.items()}
                row |= {"cue_gist->cue_tokens": float(wg[clean & (frame == c)].sum()),
                        "cue_gist->anchor": float(wg[clean & (frame < pk.MEMORY["n_init"])].sum()),
                        "cue_gist->gists": float(wg[gist].sum())}
                for name, value in row.items():
                    sums.setdefault(name, [[] for _ in captured])[layer].append(value)
    finally:
        attention.MemoryMaskedAttention.__call__ = original
    return {name: [float(np.mean(v)) for v in per_layer] for name, per_layer in sums.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", default="hybrid", choices=pk.POLICIES)
    p.add_argument("--delay", type=int, default=8)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--layers", type=int, default=pk.NUM_LAYERS)
    p.add_argument("--cue", default="spatial", choices=pk.CUES)
    p.add_argument("--episodes", type=int, default=40, help="held-out episodes for the accuracy")
    p.add_argument("--out", default=str(pk.RESULTS / "passkey_attention.jsonl"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model, info = pk.train_cell(args.policy, args.delay, args.steps, 8, 0, args.layers, args.cue)
    result = pk.evaluate(model, args.delay, args.episodes, cue=args.cue)
    masses = attention_masses(model, args.delay, args.cue)
    record = {"command": "python bench/passkey_attention.py " + " ".join(sys.argv[1:] if argv is None else argv),
              **{k: getattr(args, k) for k in ("policy", "delay", "steps", "layers", "cue", "episodes")},
              "accuracy": result["accuracy"], "ci95": result["ci95"], "gist_probe": result["gist_probe"],
              "final_action_loss": info["final_action_loss"], "attention_mass": masses}
    print(f"{args.policy}@{args.delay} cue {args.cue}, {args.steps} steps, {args.layers} layers: accuracy "
          f"{result['accuracy']:.2f} [{result['ci95'][0]:.2f}, {result['ci95'][1]:.2f}], gist probe per layer "
          f"{result['gist_probe']['cue'] if result['gist_probe'] else None}, "
          f"action loss {info['final_action_loss']:.4f}")
    for name, per_layer in masses.items():
        print(f"  {name:28s} " + "  ".join(f"layer {i}: {m:.3f}" for i, m in enumerate(per_layer)))
    with open(args.out, "a") as f:
        f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
