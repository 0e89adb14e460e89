"""Look-and-Press closed loop over real ROS 2 topics, and the memory table (issue 15, items 2-4).

    .venv/bin/python bench/look_and_press.py eval --model checkpoints/sim_look_and_press --policy hybrid \
        --cue-start 2 --episodes 50          # one cell: memorywam-demo's loop, resumable in blocks
    .venv/bin/python bench/look_and_press.py table   # bench/results/look_and_press.{md,json,png}

The checkpoints are trained by `TASK=look_and_press CUE_START=c MEMORY_POLICY=p scripts/train_sim.sh`
(scripted demos on seeds 1000-1049 -> memorywam-convert -> memorywam-precompute -> memorywam-train),
one per memory policy and cue timing, same data, config and budget.

`eval` runs `memorywam-demo --task look_and_press` (simulator and policy node as separate processes,
the policy node with the robot's parameters) on seeds from 200000 on (the cue is drawn from the seed:
disjoint from the training seeds) in blocks of `--block` episodes; each block is appended to
bench/results/look_and_press/c<cue_start>_<policy>.json at once, so a stopped run resumes at the next
block. Per episode: success (the cued button held 0.3 s, the other never touched), the stage reached,
chunk latency, the policy's KV-cache bytes at the episode's end (its /diagnostics), limit violations.

Cells of a delay other than 5 dark chunks (the first timing's, UNTAGGED_DELAY) are named
c<cue_start>_d<delay>_<policy>.json and get their own rows (the simulator's default is 22 now).
Each block records the sha256 of the weights that played it. Diagnostics, open loop on the demos'
latents: `probe` (is the cue in each latent frame: the VAE's own memory), `decide` (does the press
chunk follow the cue) and `gists` (is the cue in the cue frames' cached gists, per layer, and how
strongly).

`table` reads every cell there plus the passkey probe's results (bench/results/passkey_uniform*.json)
and writes one table (success with its 95 % Wilson interval, chunk latency, cache bytes; the passkey
accuracy per delay) and a plot: passkey accuracy vs delay per policy, Look-and-Press success per
policy and cue timing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MUJOCO_GL", "egl")  # headless: the simulator's module is imported for the cue of a seed
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from binomial import wilson  # noqa: E402
from memory_training import relative_class_difference  # noqa: E402

from memorywam_ros.sim.stages import LOOK_AND_PRESS_TIMING  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CELLS = RESULTS / "look_and_press"
POLICY_ORDER = ("hybrid", "full", "window", "no_gist", "no_anchor")
GIST_POLICIES = ("hybrid", "no_anchor")  # the passkey/Look-and-Press policies that keep gists
UNTAGGED_DELAY = 5  # the first shipped timing's delay: its cells (c2_hybrid_sh3.json, ...) carry no _d tag
SEED0 = 200_000  # training demos use seeds 1000..; the cue is a function of the seed
TIMING_NAMES = {0: "cue during the anchors (frames 0-1)", 2: "cue after the anchors (frames 2-3)"}


def _rel(path: str | Path) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def weights_digest(model_part: Path) -> str:
    """sha256 (first 16 hex) of the network weights in a checkpoint's model part (the manifest's
    parts["model"]): each block records which weights played it, so a cell resumed with a model
    rebuilt by the same command (or a copy shipped under checkpoints/) shows whether it is the same model."""
    return hashlib.sha256((model_part / "model.safetensors").read_bytes()).hexdigest()[:16]


def timing_tag(cue_start: int, delay_chunks: int) -> str:
    """c<cue start>, plus _d<delay> for every delay but UNTAGGED_DELAY (the first cells' names stay valid)."""
    return f"c{cue_start}" + ("" if delay_chunks == UNTAGGED_DELAY else f"_d{delay_chunks}")


def cell_path(cue_start: int, policy: str, variant: str = "", delay_chunks: int = UNTAGGED_DELAY) -> Path:
    """One cell per (cue timing, delay, policy[, training variant]), e.g. c2_hybrid_sh3.json,
    c2_d22_window.json."""
    return CELLS / f"{timing_tag(cue_start, delay_chunks)}_{policy}{'_' + variant if variant else ''}.json"


def evaluate(args: argparse.Namespace) -> dict:
    """Run blocks of memorywam-demo episodes until the cell holds `--episodes`; returns the cell."""
    from memorywam_ros.ros import demo

    if args.variant and not args.variant.replace("-", "").isalnum():
        raise SystemExit(f"--variant {args.variant!r}: letters, digits and '-' only (it names the cell file)")
    path = cell_path(args.cue_start, args.policy, args.variant, args.delay_chunks)
    cell = json.loads(path.read_text()) if path.is_file() else None
    if cell is not None and cell["model"] != _rel(args.model):
        raise SystemExit(f"{_rel(path)} holds episodes of {cell['model']}, not {_rel(args.model)}: move it away first")
    manifest = json.loads((Path(args.model) / "memorywam.json").read_text())
    digest = weights_digest(Path(args.model) / manifest["parts"]["model"])  # the weights do not change between blocks
    if cell is None:
        cell = {"task": "look_and_press", "policy": args.policy, "variant": args.variant, "cue_start": args.cue_start,
                "cue_frames": args.cue_frames, "delay_chunks": args.delay_chunks, "model": _rel(args.model),
                "memory": manifest.get("model", {}).get("memory") or manifest.get("memory"),
                "command": "python bench/look_and_press.py " + " ".join(sys.argv[1:]), "blocks": []}
    while (done := sum(len(b["per_episode"]) for b in cell["blocks"])) < args.episodes:
        n = min(args.block, args.episodes - done)
        # the sim node uses seed + k for its k-th reset (k >= 1): blocks never share a seed
        ns = demo.build_parser().parse_args([
            "--task", "look_and_press", "--model", str(args.model), "--episodes", str(n),
            "--seed", str(SEED0 + done), "--cue-start", str(args.cue_start), "--cue-frames", str(args.cue_frames),
            "--delay-chunks", str(args.delay_chunks), "--torch-threads", str(args.torch_threads),
            "--log-dir", str(ROOT / "runs" / "look_and_press_logs")])
        summary = demo.run(ns)
        cell["blocks"].append({**{k: summary[k] for k in ("per_episode", "chunk_latency", "violations",
                                                           "cache_bytes_end_max", "commands")},
                               "weights_sha256": digest})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cell, indent=1) + "\n")
        print(f"[look_and_press] {_rel(path)}: {done + n}/{args.episodes} episodes", flush=True)
    return cell


def summarize_cell(cell: dict) -> dict:
    """One table row. `per_cue`: successes / episodes per cue colour (the cue is the episode seed's,
    `cue_of_seed`): a policy that presses one button whatever the panel showed scores all of one cue
    and none of the other, one that reads the cue scores both."""
    from memorywam_ros.sim.look_and_press import CUES, cue_of_seed  # MuJoCo: only when a table is made

    eps = [e for b in cell["blocks"] for e in b["per_episode"]]
    k, n = sum(e["success"] for e in eps), len(eps)
    per_cue = {c: [0, 0] for c in CUES}
    for e in eps:
        tally = per_cue[CUES[cue_of_seed(e["seed"])]]
        tally[0] += bool(e["success"])
        tally[1] += 1
    lat = [b["chunk_latency"].get("p50_ms") for b in cell["blocks"] if b["chunk_latency"].get("n")]
    cache = [e["cache_bytes_end"] for e in eps if e.get("cache_bytes_end") is not None]
    stages: dict[str, int] = {}
    for e in eps:
        stages[e["stage"]] = stages.get(e["stage"], 0) + 1
    return {"policy": cell["policy"], "variant": cell.get("variant", ""), "cue_start": cell["cue_start"],
            "delay_chunks": cell.get("delay_chunks", UNTAGGED_DELAY),
            "model": cell["model"], "episodes": n,
            "successes": k, "success_rate": k / max(n, 1), "ci95": list(wilson(k, n)),
            "latency_p50_ms": float(np.median(lat)) if lat else None,
            "cache_bytes_end_median": float(np.median(cache)) if cache else None,
            "violations": sum(len(b["violations"]) for b in cell["blocks"]), "stages": stages,
            "per_cue": per_cue, "command": reproducing_command(cell["command"], n)}


def reproducing_command(command: str, episodes: int) -> str:
    """The cell's first `eval` command with `--episodes` set to the episodes the cell holds: a cell
    grows by resumed runs (`--episodes 10`, then `--episodes 50`), and the table's command must make the
    row as it stands (eval resumes or starts from the first block; the seeds follow from the count)."""
    command, found = re.subn(r"--episodes \d+", f"--episodes {episodes}", command)
    return command if found else f"{command} --episodes {episodes}"


def passkey_cells() -> list[dict]:
    """The passkey probe's cells (bench/passkey.py's full-size runs), the longest-trained run of each
    (cue, gist init, chunks in the loss, training device, policy, delay); the quick smoke runs are left out."""
    best: dict[tuple, dict] = {}
    for f in sorted(RESULTS.glob("passkey_*.json")):
        d = json.loads(f.read_text())
        knobs = d.get("knobs", {})
        if d.get("preset") != "full" or "cells" not in d:
            continue
        steps = knobs.get("steps")
        cue = knobs.get("cue", "spatial")
        loss = passkey_loss_chunks(knobs)
        device = passkey_device(knobs)
        for c in d["cells"].values():
            gists = passkey_gists(knobs) if c["policy"] in GIST_POLICIES else "–"
            key = (cue, gists, loss, device, c["policy"], c["delay"])
            if key not in best or (steps or 0) > (best[key]["steps"] or 0):
                best[key] = {**c, "steps": steps, "cue": cue, "gists": gists, "loss_chunks": loss, "device": device,
                             "command": d["command"], "file": _rel(f)}
    return sorted(best.values(), key=lambda c: (c["cue"] != "uniform", c["cue"], c["gists"], c["loss_chunks"] != "all",
                                                c["device"], POLICY_ORDER.index(c["policy"]), c["delay"]))


def passkey_gists(knobs: dict) -> str:
    """How a passkey run's gists were made, for the table: "1 learned" (bench/passkey.py's default)."""
    from passkey import gist_knobs  # torch and the model: only when the table is made

    return "{} {}".format(*gist_knobs(knobs))


def passkey_loss_chunks(knobs: dict) -> str:
    """Which chunks a passkey run's action loss covered, for the table: "all" or "last N"."""
    from passkey import supervised_chunks

    n = supervised_chunks(knobs)
    return f"last {n}" if n else "all"


def passkey_device(knobs: dict) -> str:
    """Where a passkey run trained, for the table: "cpu" or its --device."""
    from passkey import train_device

    return train_device(knobs)


def _cell_name(c: dict) -> str:
    return c["policy"] + (f" ({c['variant']})" if c["variant"] else "")


def table(args: argparse.Namespace) -> dict:
    cells = [summarize_cell(json.loads(p.read_text())) for p in sorted(CELLS.glob("c*_*.json"))]
    cells.sort(key=lambda c: (c["cue_start"], c["delay_chunks"], POLICY_ORDER.index(c["policy"]), c["variant"]))
    passkey = passkey_cells()
    lines = ["# Memory you can see: Look-and-Press closed loop and the passkey probe", "",
             "## Look-and-Press on the simulated dual arm (memorywam-demo over ROS 2, 2 CPU cores)", "",
             "| cue timing | dark chunks before the press | policy | success | 95 % CI (Wilson) | success per cue | "
             "stages reached | chunk latency p50 | cache at episode end | limit violations |", "|---" * 10 + "|"]
    for c in cells:
        stages = ", ".join(f"{k}: {v}" for k, v in sorted(c["stages"].items(), key=lambda kv: -kv[1]))
        cache = f"{c['cache_bytes_end_median'] / 1024:.0f} KiB" if c["cache_bytes_end_median"] else "-"
        lat = f"{c['latency_p50_ms']:.0f} ms" if c["latency_p50_ms"] else "-"
        name = _cell_name(c)
        per_cue = ", ".join(f"{cue} {k}/{n}" for cue, (k, n) in c["per_cue"].items())
        lines.append(f"| {TIMING_NAMES.get(c['cue_start'], c['cue_start'])} | {c['delay_chunks']} | {name} | "
                     f"{c['success_rate']:.0%} ({c['successes']}/{c['episodes']}) | {c['ci95'][0]:.0%}–"
                     f"{c['ci95'][1]:.0%} | {per_cue} | {stages} | {lat} | {cache} | {c['violations']} |")
    lines += ["", "Commands (one per cell): " + "; ".join(f"`{c['command']}`" for c in cells), "",
              "## Passkey probe (synthetic latents through the real network and cache)", "",
              "| cue | gists per frame | chunks in the action loss | trained on | policy | D | accuracy | 95 % CI | "
              "training steps | cache KiB | latency / chunk (ms) | file |", "|---" * 12 + "|"]
    for c in passkey:
        lines.append(f"| {c['cue']} | {c['gists']} | {c['loss_chunks']} | {c['device']} | {c['policy']} | "
                     f"{c['delay']} | "
                     f"{c['accuracy']:.0%} ({c['correct']}/{c['episodes']}) | "
                     f"{c['ci95'][0]:.0%}–{c['ci95'][1]:.0%} | {c['steps']} | {c['cache_bytes'] / 1024:.1f} | "
                     f"{c['latency_ms_median']:.0f} | {c['file']} |")
    out = {"look_and_press": cells, "passkey": passkey}
    md = RESULTS / "look_and_press.md"
    md.write_text("\n".join(lines) + "\n")
    (RESULTS / "look_and_press.json").write_text(json.dumps(out, indent=1) + "\n")
    plot(cells, passkey, RESULTS / "look_and_press.png")
    print("\n".join(lines))
    print(f"wrote {_rel(md)}, look_and_press.json, look_and_press.png")
    return out


def _error_bars(rates, cis) -> np.ndarray:
    """(2, n) error bars for matplotlib: each rate's distance down and up to its interval, clipped at 0
    (a Wilson bound of 1 - 1e-17 at 100 % would be a tiny negative distance)."""
    rates, (lo, hi) = np.asarray(rates, dtype=float), np.asarray(cis, dtype=float).T
    return np.clip([rates - lo, hi - rates], 0, None)


def plot(cells: list[dict], passkey: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, (a, b) = plt.subplots(1, 2, figsize=(15, 6), layout="constrained")
    for policy, cue, gists, loss in dict.fromkeys((c["policy"], c["cue"], c["gists"], c["loss_chunks"])
                                                  for c in passkey):
        pts = sorted((c["delay"], c["accuracy"], c["ci95"]) for c in passkey
                     if (c["policy"], c["cue"], c["gists"], c["loss_chunks"]) == (policy, cue, gists, loss))
        d, acc, ci = zip(*pts, strict=True)
        err = _error_bars(acc, ci)
        label = (f"{policy}, {cue}" + (f", {gists} gists" if gists != "–" else "")
                 + (f", loss on {loss} chunks" if loss != "all" else ""))
        # colour: policy; line: cue; marker: how the gists start
        a.errorbar(d, acc, yerr=err, capsize=3, label=label, color=f"C{POLICY_ORDER.index(policy)}",
                   ls={"uniform": "-", "patch": "--"}.get(cue, ":"), marker="s" if "pooled" in gists else "o")
    a.axhline(0.25, color="grey", ls=":", label="chance (K = 4)")
    a.set(xscale="log", xlabel="delay D (latent frames)", ylabel="accuracy", title="passkey probe", ylim=(0, 1.05))
    a.legend(fontsize=6, loc="upper left", bbox_to_anchor=(0, -0.12), ncol=2)  # below the axes: the curves stay visible
    # Look-and-Press: one horizontal bar per cell (top to bottom in the table's order), colour = cue timing
    timings = list(dict.fromkeys((c["cue_start"], c["delay_chunks"]) for c in cells))
    y = -np.arange(len(cells))
    rate = np.array([c["success_rate"] for c in cells])
    err = _error_bars(rate, [c["ci95"] for c in cells])
    colour = [f"C{timings.index((c['cue_start'], c['delay_chunks']))}" for c in cells]
    b.barh(y, rate, 0.7, xerr=err, capsize=3, color=colour)
    b.set_yticks(y, [f"{_cell_name(c)}, n = {c['episodes']}" for c in cells], fontsize=8)
    b.axvline(0.5, color="grey", ls=":", label="a coin flip between the buttons")
    handles = [Patch(color=f"C{i}", label=f"{TIMING_NAMES.get(t[0], t[0])}, {t[1]} dark chunks")
               for i, t in enumerate(timings)]
    b.set(xlabel="success (95 % Wilson interval)", title="Look-and-Press, closed loop over ROS 2", xlim=(0, 1.02))
    b.legend(handles=[*handles, *b.get_legend_handles_labels()[0]], fontsize=8, loc="upper left",
             bbox_to_anchor=(0, -0.12))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def loo_ridge_correct(x: np.ndarray, y: np.ndarray, ridge: float) -> float:
    """Leave-one-out ridge regression on +-1 labels y (n,) from features x (n, F), standardised:
    how many held-out episodes it gets right (a tie, i.e. no information, counts as a coin flip).
    Dual form, (n-1) x (n-1) systems: the same solution as the primal for any F (gist features are
    thousands wide)."""
    x = x.astype(np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    correct = 0.0
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        a = x[keep]
        alpha = np.linalg.solve(a @ a.T + ridge * np.eye(len(a)), y[keep])
        guess = np.sign(x[i] @ (a.T @ alpha))
        correct += 0.5 if guess == 0 else float(guess == y[i])
    return correct


def _write_out(args: argparse.Namespace, out: dict) -> None:
    """--out, when given: the result as JSON."""
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
        print(f"wrote {_rel(args.out)}")


def probe(args: argparse.Namespace) -> dict:
    """Is the cue readable from one latent frame? Leave-one-out ridge classifier per frame index.

    Features: each of the 48 latent channels averaged over a 2 x 2 grid of the frame (192 values:
    the panel is a large uniform colour, so this is what a reader of the whole frame could use),
    standardised; labels: the episode's cue (from its seed). Frames whose latents do not carry the cue
    sit near 50 %. Also how strongly: the two cue classes' mean difference relative to the latents'
    rms (the scenes are deterministic, so the classifier reads any nonzero difference). At the press
    (chunk P = cue start + cue frames + delay) the window policy reaches frames P-2..P
    (num_layers * (N_recent - 1) + 1 = 3 with config/train_look_and_press.yaml): if those carry no
    cue, nothing but the memory (anchors, gists, full) brings it to the decision. The streaming VAE's
    causal convolutions are a memory of their own (their cache chains back ~21 latent frames with the
    tiny random VAE), which this measures.
    """
    from safetensors.numpy import load_file

    from memorywam_ros.sim.look_and_press import cue_of_seed

    files = sorted(Path(args.latents).glob("*.safetensors"))
    if len(files) < 10:
        raise SystemExit(f"{args.latents}: need >= 10 latent files, found {len(files)}")
    feats, labels, latents = [], [], []
    for f in files:
        lat = load_file(str(f))["latents"]  # (F, C, H, W)
        latents.append(lat)
        F, C, H, W = lat.shape
        pooled = lat[:, :, : H // 2 * 2, : W // 2 * 2].reshape(F, C, 2, H // 2, 2, W // 2).mean((3, 5))
        feats.append(pooled.reshape(F, -1))
        labels.append(cue_of_seed(int(f.stem.rsplit("seed_", 1)[1])))
    n_frames = min(x.shape[0] for x in feats)
    y = np.array(labels, dtype=np.float64) * 2 - 1
    decision = args.cue_start + args.cue_frames + args.delay_chunks
    per_frame = []
    for j in range(n_frames):
        k, n = loo_ridge_correct(np.stack([f[j] for f in feats]), y, args.ridge), len(y)
        reach = decision - 2 <= j <= decision
        diff = relative_class_difference(np.stack([x[j] for x in latents]), y)
        per_frame.append({"frame": j, "accuracy": k / n, "ci95": list(wilson(k, n)),
                          "relative_cue_difference": diff, "in_window_at_press": reach})
        print(f"frame {j:2d}: {k}/{n} = {k / n:.0%}, cue difference {diff:.1e} of the latents' rms"
              f"{'   <- window reach at the press' if reach else ''}")
    decay = vae_memory(args.vae) if args.vae else None
    out = {"latents": _rel(args.latents), "episodes": len(y), "cue_balance": float(np.mean(labels)),
           "vae_memory": decay,
           "press_chunk": decision, "ridge": args.ridge, "features": "48 channels x 2x2 spatial means",
           "command": "python bench/look_and_press.py " + " ".join(sys.argv[1:]), "per_frame": per_frame}
    path = RESULTS / f"look_and_press_vae_probe_{timing_tag(args.cue_start, args.delay_chunks)}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {_rel(path)}")
    return out


def decide(args: argparse.Namespace) -> dict:
    """Open loop, no ROS: does the checkpoint's press chunk follow the cue? For each precomputed demo
    episode, the policy observes its latents and joint states up to the press chunk P (the real
    `Policy.observe` / `act` path, committed prefix = the demo's previous commands) and samples chunk P;
    the decision is the cue whose mean demonstrated chunk P is nearer. Cue balance and the two
    templates' distance say how much there is to tell apart."""
    import torch
    from safetensors.numpy import load_file

    from memorywam_ros.runtime.policy import Policy
    from memorywam_ros.sim.look_and_press import CUES, cue_of_seed

    files = sorted(Path(args.latents).glob("*.safetensors"))[: args.limit]
    press = args.cue_start + args.cue_frames + args.delay_chunks
    eps = [(load_file(str(f)), cue_of_seed(int(f.stem.rsplit("seed_", 1)[1]))) for f in files]
    templates = [np.mean([d["actions"][press] for d, c in eps if c == k], 0) for k in range(len(CUES))]
    policy = Policy.from_pretrained(args.model, device="cpu")
    prefix = policy.committed_prefix
    decided, per_cue = [], {name: [0, 0] for name in CUES}
    for d, cue in eps:
        policy.reset(policy.instructions[0])
        for j in range(press + 1):
            policy.observe(latent=torch.from_numpy(d["latents"][j]), joint_state=d["proprio"][j])
        chunk = policy.act(d["actions"][press - 1][-prefix:] if prefix else None)
        guess = int(np.argmin([np.abs(chunk - t).mean() for t in templates]))
        decided.append(guess == cue)
        per_cue[CUES[cue]][0] += int(guess == cue)
        per_cue[CUES[cue]][1] += 1
    k, n = sum(decided), len(decided)
    out = {"model": _rel(args.model), "latents": _rel(args.latents), "press_chunk": press, "episodes": n,
           "correct": k, "accuracy": k / n, "ci95": list(wilson(k, n)), "per_cue_correct": per_cue,
           "template_distance_rad": float(np.abs(templates[0] - templates[1]).mean()),
           "command": "python bench/look_and_press.py " + " ".join(sys.argv[1:])}
    print(json.dumps(out))
    _write_out(args, out)
    return out


def gist_probe(args: argparse.Namespace) -> dict:
    """Does a model write the cue into the gists it caches, and where? Open loop on the demo latents.

    Per episode the policy observes frames 0..P (P: the press chunk) through `Policy.observe` (the
    robot's cache path); then, per frame f in --frames and per layer, the cached keys and values of
    f's gists are the features of a leave-one-out ridge probe of the cue (`loo_ridge_correct`).
    High at the cue frames: the cue was written into their gists and is in the cache at the press,
    so a press chunk at chance means the read was not learned (the passkey probe's D = 32 finding at
    2000 steps). At chance there: the write failed. How strongly the cue is written is the class-mean
    difference relative to the features' rms, beside the same measure on the cue frames' own video
    tokens (read while they are in the window): what the gists could have copied.
    """
    import torch
    from passkey import cached_gist, record_gist_slots
    from safetensors.numpy import load_file

    from memorywam_ros.runtime.policy import Policy
    from memorywam_ros.sim.look_and_press import cue_of_seed

    files = sorted(Path(args.latents).glob("*.safetensors"))[: args.limit]
    press = args.cue_start + args.cue_frames + args.delay_chunks
    policy = Policy.from_pretrained(args.model, device="cpu")
    m = policy.model.rules.num_gists
    if not m:
        raise SystemExit(f"{args.model}: its memory policy keeps no gists")
    frames = [f for f in args.frames if 0 <= f <= press]
    cue_frames = range(args.cue_start, args.cue_start + args.cue_frames)
    L = policy.model.config.tokens_per_frame
    feats: dict[int, list[torch.Tensor]] = {f: [] for f in frames}
    tokens: dict[int, list[torch.Tensor]] = {f: [] for f in cue_frames}  # the cue frames' own video tokens
    labels = []
    for path in files:
        d = load_file(str(path))
        labels.append(cue_of_seed(int(path.stem.rsplit("seed_", 1)[1])))
        policy.reset(policy.instructions[0])
        video_starts: dict[int, int] = {}
        starts = record_gist_slots(policy.cache, video_starts)
        with torch.no_grad():
            for j in range(press + 1):
                policy.observe(latent=torch.from_numpy(d["latents"][j]), joint_state=d["proprio"][j])
                if j in tokens:  # read while the frame is held (its slot is reused once it leaves the window)
                    tokens[j].append(cached_gist(policy.cache, video_starts[j], L))
        for f in frames:
            feats[f].append(cached_gist(policy.cache, starts[f], m))  # (layers, features)
    y = np.array(labels, dtype=np.float64) * 2 - 1

    def readout(x: np.ndarray) -> tuple[list[float], list[float]]:
        """x (episodes, layers, features) -> per layer: probe accuracy, class-mean difference / rms
        (`relative_class_difference`)."""
        acc = [loo_ridge_correct(x[:, layer], y, args.ridge) / len(y) for layer in range(x.shape[1])]
        return acc, [relative_class_difference(x[:, layer], y) for layer in range(x.shape[1])]

    per_frame, cue_tokens = [], []
    for f in frames:
        acc, rel = readout(torch.stack(feats[f]).numpy())
        per_frame.append({"frame": f, "cue_frame": f in cue_frames,
                          "accuracy_per_layer": acc, "relative_cue_difference_per_layer": rel})
        print(f"frame {f:2d} gists, per layer: ridge probe {' '.join(f'{a:.0%}' for a in acc)}, "
              f"cue difference {' '.join(f'{r:.1e}' for r in rel)} of the features' rms")
    for f in cue_frames:
        acc, rel = readout(torch.stack(tokens[f]).numpy())
        cue_tokens.append({"frame": f, "accuracy_per_layer": acc, "relative_cue_difference_per_layer": rel})
        print(f"frame {f:2d} video tokens (what its gists attend to), per layer: cue difference "
              f"{' '.join(f'{r:.1e}' for r in rel)} of the features' rms")
    out = {"model": _rel(args.model), "latents": _rel(args.latents), "episodes": len(y), "press_chunk": press,
           "num_gists": m, "ridge": args.ridge, "features": "cached keys and values of the frame's gists, per layer",
           "command": "python bench/look_and_press.py " + " ".join(sys.argv[1:]), "per_frame": per_frame,
           "cue_frame_video_tokens": cue_tokens}
    _write_out(args, out)
    return out


def vae_memory(vae_dir: str, frames: int = 30) -> dict:
    """How long the streaming VAE remembers a colour: stream two synthetic episodes (a fixed random
    texture whose top 100 rows show orange or blue in latent frames 0-1, dark after) through
    `StreamingVAEEncoder` and report, per latent frame, the rms of the two episodes' latent
    difference relative to the latents' rms (0 once the causal conv caches no longer reach the cue)."""
    import torch

    from memorywam_ros.runtime.vae import StreamingVAEEncoder

    torch.set_num_threads(1)
    enc = StreamingVAEEncoder.from_pretrained(vae_dir)
    base = (np.random.default_rng(0).random((384, 320, 3)) * 120).astype(np.uint8)
    runs = []
    for colour in ((183, 76, 0), (0, 133, 183)):
        lit, dark = base.copy(), base.copy()
        lit[:100], dark[:100] = colour, 5
        enc.reset()
        lat = [enc.encode(lit[None])[:, 0]]
        lat += [enc.encode(np.stack([lit if j <= 1 else dark] * 4))[:, 0] for j in range(1, frames)]
        runs.append(torch.stack(lat).double())
    rel = ((runs[0] - runs[1]).pow(2).mean((1, 2, 3)).sqrt() / runs[0].pow(2).mean((1, 2, 3)).sqrt()).tolist()
    last = max((j for j, r in enumerate(rel) if r > 0), default=-1)
    print("VAE memory (relative cue difference per latent frame, cue in frames 0-1): "
          + " ".join(f"{r:.1e}" for r in rel))
    return {"vae": _rel(vae_dir), "relative_difference": rel, "last_nonzero_frame": last}


def _timing_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The cue timing every subcommand but `table` takes (the simulator's, LOOK_AND_PRESS_TIMING)."""
    parser.add_argument("--cue-start", type=int, required=True)
    parser.add_argument("--cue-frames", type=int, default=LOOK_AND_PRESS_TIMING["cue_frames"])
    parser.add_argument("--delay-chunks", type=int, default=LOOK_AND_PRESS_TIMING["delay_chunks"])
    return parser


def _open_loop_args(parser: argparse.ArgumentParser, limit: int) -> argparse.ArgumentParser:
    """`decide` and `gists`: a checkpoint, the demos' latents, the cue timing, how many, where to write."""
    parser.add_argument("--model", required=True)
    parser.add_argument("--latents", required=True, help="memorywam-precompute output of the Look-and-Press demos")
    _timing_args(parser)
    parser.add_argument("--limit", type=int, default=limit, help="episodes (the first N files)")
    parser.add_argument("--out", default=None, help="write the JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    e = _timing_args(sub.add_parser("eval", help="closed-loop episodes of one checkpoint (resumable)"))
    e.add_argument("--model", required=True)
    e.add_argument("--policy", required=True, choices=POLICY_ORDER, help="the memory policy it was trained with")
    e.add_argument("--variant", default="", help="training variant beside the policy (e.g. sd5: state dropout 0.5); "
                   "names its own cell")
    e.add_argument("--episodes", type=int, default=50)
    e.add_argument("--block", type=int, default=25, help="episodes per memorywam-demo run (saved after each)")
    e.add_argument("--torch-threads", type=int, default=1)
    sub.add_parser("table", help="the table and plot from every cell")
    q = _timing_args(sub.add_parser("probe", help="is the cue readable from each latent frame (the VAE's own memory)?"))
    q.add_argument("--latents", required=True, help="memorywam-precompute output of the Look-and-Press demos")
    q.add_argument("--ridge", type=float, default=10.0)
    q.add_argument("--vae", default=None, help="also measure this VAE's memory on a synthetic colour cue")
    _open_loop_args(sub.add_parser("decide", help="open loop on demo latents: does the press follow the cue?"), 20)
    g = _open_loop_args(sub.add_parser("gists", help="open loop on demo latents: is the cue in the cached gists?"), 50)
    g.add_argument("--frames", type=int, nargs="+", default=[1, 2, 3, 4, 12, 24, 26], help="whose gists to probe")
    g.add_argument("--ridge", type=float, default=10.0)
    a = p.parse_args(argv)
    if a.mode == "gists":
        gist_probe(a)
        return 0
    if a.mode == "decide":
        decide(a)
        return 0
    if a.mode == "probe":
        probe(a)
        return 0
    if a.mode == "eval":
        evaluate(a)
    table(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
