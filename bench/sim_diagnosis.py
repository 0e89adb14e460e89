"""Why the simulated TransferCube policy fails, measured (issue 16, item 1).

    .venv/bin/python bench/sim_diagnosis.py probe                      # ~1 min: is the cube's position readable?
    .venv/bin/python bench/sim_diagnosis.py open-loop --episodes 10    # ~1 min: teacher-forced error per chunk
    .venv/bin/python bench/sim_diagnosis.py ideal --episodes 20        # ~3 min: closed loop, the sim waits
    .venv/bin/python bench/sim_diagnosis.py readout --seeds 90         # ~3 min: does chunk 0 look at the cube?
    .venv/bin/python bench/sim_diagnosis.py fit --latents runs/sim_pipeline/latents   # ~1 min: fits its training set?
    .venv/bin/python bench/sim_diagnosis.py failures bench/results/realtime_closed_loop_l0.json   # breakdown

`probe` (can the cube position be read?): for `--seeds` simulator seeds (0.., disjoint from the
demos' 1000.. and the evaluations' 5000..) the first observation (home pose, cube at its sampled
pose) is rendered at each `--fovy` head framing, composed into the 384x320 mosaic and encoded by
the checkpoint's VAE exactly as the node does (latent frame 0). A ridge regression (features
standardised, penalty chosen by 5-fold cross-validation on the first 2/3 of the seeds) maps the
features to the cube's (x, y); the table reports the held-out RMSE in cm against predicting the
mean (the sampler is uniform over 20x20 cm: ~5.8 cm per axis). Features: the whole latent
(48x24x20), the latent's head region, and the head tile's pixels at 1/4 resolution (the reference:
a red blob's position is nearly linear in its pixels).

`open-loop` (teacher forcing on unseen scripted episodes): each scripted episode (seeds
`--seed`.., disjoint from the demos) is run once, rendering the rows the node observes for the
checkpoint's observation lead; the policy is fed those observations (latent frame j = the mosaics
of `frame_rows(j, 16, lead)`, its proprio the joint state of `obs_row(j)`) and its chunk j is
compared with the scripted commands of rows 16j..16j+15. Reported per chunk index: mean absolute
error of the arm joints (rad) and the grippers, and where the right tool point would be at the
grasp (rows 24-30, forward kinematics of the targets) against the demonstration's, in cm; all
against two references that do not look at the
cube: `hold` (every target = the joint state at the observation) and `mean plan` (the
demonstrations' time-indexed mean command, over `--baseline-seeds` scripted episodes of the
training seeds 1000..). A model that learned "the average reach" sits at `mean plan`.

`ideal` (closed loop without real time): the policy drives `AlohaSim` directly and the simulator
waits while it computes, with the checkpoint's observation schedule (latent frame j from the rows
`frame_rows(j, 16, lead)`, chunk j executed on rows 16j..16j+15 at 10 Hz, zero-order hold): no
latency, no hold, no ROS. What it reaches is the model's own closed-loop quality; the gap to the
ROS closed loop is what real time costs. Counts the chunks whose first target is farther from the
measured joints than the robot file's max_start_distance (the node would refuse them), and the
boundary step |first target of chunk j+1 - last of chunk j| (max over joints) against the steps
inside chunks. A committed-prefix model is given the running chunk's last ℓ targets (the hold pose
before the first chunk), as the node does; in `open-loop` the demonstration's.

`readout` (does the first chunk depend on the cube? the one chunk planned from the image alone:
at the first observation the arms are at home, the proprio and the committed prefix are the same
in every episode): for `--seeds` seeds (0..) the model's chunk 0 against the scripted plan's
first 16 targets. Reports (1) the follow slope of the right tool point at the chunk's end on the
demonstration's (1: goes where the demo goes, 0: the same plan whatever the image) and the spread
of both across seeds; (2) how much the chunk changes when the head tile is black; (3) ridge
readouts of the cube (x, y) (as in `probe`) from the model's own features: the video expert's last
layer on frame 0 (all tokens: a position-aware readout; their mean: what a readout that does not
know which token it reads gets) and the action expert's last layer on the chunk at the last
denoising step (the tokens the action head decodes). Video tokens that hold the cube and action
tokens that do not locate the loss in the action expert's read of the video.

`fit` (does the model use the image on its own training episodes?): every episode of the
training latents (`--latents`, the run's precomputed set) through the training forward, teacher
forced, with each chunk's actions at pure noise (sigma 1): x0 = noise - velocity, averaged over
`--draws` noise draws, is the conditional mean the sampler starts from. Per chunk index, R^2 of
that prediction against the across-episode spread of the demonstrated chunks (arm joints,
normalised units): 1 = it reproduces how episodes differ, 0 = it predicts their mean. Twice: with
the proprio and committed prefix as trained, and with both zeroed (what `state_dropout` trains),
where only the images can tell episodes apart.

Also reported: how far apart the episodes' first images are in the model's input (frame 0's
latents: rms of their across-episode deviation, overall and at the most varying latent pixel,
against the latents' rms).

`failures`: the closed-loop breakdown of a `bench/realtime.py closed-loop` / `memorywam-demo
--results` JSON: the highest reward stage per episode (sim/stages.py: never touched the cube,
grasp failed, no hand-over, hand-over failed, success), and per stage how many episodes had a
chunk refused (start distance) or a stall.

Writes bench/results/sim_diagnosis_<mode>.json (paths relative to the repository).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from binomial import wilson

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEFAULT_MODEL = ROOT / "checkpoints" / "sim_transfer_cube"


def _rel(path: str | Path) -> str:
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def ridge_probe(x: np.ndarray, y: np.ndarray, train: int, folds: int = 5) -> dict:
    """Ridge regression x -> y fitted on the first `train` rows (penalty by k-fold CV), scored on
    the rest: RMSE per target column and the mean predictor's RMSE, in y's units."""
    x = x.astype(np.float64)
    mu, sd = x[:train].mean(0), x[:train].std(0) + 1e-8
    x = (x - mu) / sd
    xtr, ytr, xte, yte = x[:train], y[:train], x[train:], y[train:]

    def fit(a: np.ndarray, b: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
        bm = b.mean(0)
        k = a @ a.T  # dual form: n << features
        alpha = np.linalg.solve(k + lam * np.eye(len(a)), b - bm)
        return a.T @ alpha, bm

    lams = [10.0**e * x.shape[1] for e in range(-4, 3)]
    idx = np.arange(train) % folds
    cv = []
    for lam in lams:
        err = 0.0
        for f in range(folds):
            w, b0 = fit(xtr[idx != f], ytr[idx != f], lam)
            err += float(((xtr[idx == f] @ w + b0 - ytr[idx == f]) ** 2).sum())
        cv.append(err)
    lam = lams[int(np.argmin(cv))]
    w, b0 = fit(xtr, ytr, lam)
    rmse = np.sqrt(((xte @ w + b0 - yte) ** 2).mean(0))
    base = np.sqrt(((ytr.mean(0) - yte) ** 2).mean(0))
    return {"rmse": rmse.tolist(), "mean_predictor_rmse": base.tolist(), "penalty": lam, "test": len(yte)}


def _load_policy(args: argparse.Namespace):
    """The checkpoint as the node runs it (CPU, `--torch-threads`) and its observation lead ℓ."""
    import torch

    from memorywam_ros.runtime.policy import Policy

    torch.set_num_threads(args.torch_threads)
    manifest = json.loads((Path(args.model) / "memorywam.json").read_text())
    return Policy.from_pretrained(args.model, device="cpu"), int(manifest.get("observation_lead", 0))


def probe(args: argparse.Namespace) -> dict:
    import torch

    from memorywam_ros.runtime.mosaic import compose_mosaic
    from memorywam_ros.runtime.policy import Policy
    from memorywam_ros.sim.aloha import AlohaSim

    torch.set_num_threads(args.torch_threads)
    policy = Policy.from_pretrained(args.model, device="cpu")
    h, w = policy.image_size
    out: dict = {"mode": "probe", "model": _rel(args.model), "seeds": args.seeds, "framings": {}}
    for fovy in args.fovy:
        feats: dict[str, list[np.ndarray]] = {"latent": [], "latent_head": [], "head_pixels": []}
        cubes = []
        t0 = time.perf_counter()
        with AlohaSim(head_fovy_deg=fovy) as sim:
            for seed in range(args.seeds):
                sim.reset(seed, render=False)
                cubes.append(sim.env_state[:2].copy())
                im = sim.render()
                mosaic = compose_mosaic(im["top"], im["left_wrist"], im["right_wrist"], h, w)
                policy.vae.reset()
                with torch.no_grad():
                    lat = policy.vae.encode(mosaic[None])[:, 0].float().numpy()  # (C, h/16, w/16)
                rows = lat.shape[1] // 3  # mosaic: wrists on the top third, head below
                feats["latent"].append(lat.reshape(-1))
                feats["latent_head"].append(lat[:, rows:].reshape(-1))
                head = im["top"].astype(np.float32)
                feats["head_pixels"].append(head.reshape(head.shape[0] // 4, 4, head.shape[1] // 4, 4, 3)
                                            .mean((1, 3)).reshape(-1))
        y = np.array(cubes) * 100.0  # cm
        train = 2 * args.seeds // 3
        res = {name: ridge_probe(np.stack(x), y, train) for name, x in feats.items()}
        out["framings"][f"{fovy:g}"] = {"features": res, "seconds": time.perf_counter() - t0}
    print(f"cube (x, y) from the first observation: ridge probe, {args.seeds - 2 * args.seeds // 3} held-out seeds "
          f"(RMSE cm; the mean predictor: see last column)")
    print("| head fovy | whole latent | latent head region | head pixels /4 | mean predictor |\n|---|---|---|---|---|")
    for fovy, r in out["framings"].items():
        f = r["features"]
        cells = [f"{f[k]['rmse'][0]:.2f} / {f[k]['rmse'][1]:.2f}" for k in ("latent", "latent_head", "head_pixels")]
        base = f["latent"]["mean_predictor_rmse"]
        print(f"| {fovy}° | {' | '.join(cells)} | {base[0]:.2f} / {base[1]:.2f} |")
    return out


def open_loop(args: argparse.Namespace) -> dict:
    from memorywam_ros.runtime.chunk_executor import frame_rows, obs_row
    from memorywam_ros.runtime.mosaic import compose_mosaic
    from memorywam_ros.sim.aloha import AlohaSim
    from memorywam_ros.sim.scripted import ARM_JOINTS, ArmIK, ScriptedTransferCube, run_scripted_episode, scripted_rows

    policy, lead = _load_policy(args)
    k = policy.chunk_size
    h, w = policy.image_size
    arm = ARM_JOINTS
    grip = np.array([6, 13])
    with AlohaSim(head_fovy_deg=args.fovy) as sim:
        plans = [run_scripted_episode(sim, s).targets for s in range(1000, 1000 + args.baseline_seeds)]
        t_max = max(len(p) for p in plans)
        mean_plan = np.mean([np.pad(p, ((0, t_max - len(p)), (0, 0)), mode="edge") for p in plans], axis=0)
        ik = ArmIK(sim.model, 1)  # the right arm picks the cube
        grasp = np.arange(24, 31)  # rows 2.4-3.0 s: the scripted tool point sits on the cube, fingers closing
        tool_err: dict[str, list[float]] = {"model": [], "hold": [], "mean plan": []}
        errs: dict[str, list[list[float]]] = {"model": [], "hold": [], "mean plan": []}
        grip_errs: dict[str, list[list[float]]] = {"model": [], "hold": [], "mean plan": []}
        for seed in range(args.seed, args.seed + args.episodes):
            n_rows = ScriptedTransferCube().num_steps
            frames = range(1 + (n_rows - 1) // k)
            need = {r for j in frames for r in frame_rows(j, k, lead)}
            ep = scripted_rows(sim, seed, render_rows=need)
            policy.reset(policy.instructions[0])
            for j in frames:
                mosaics = np.stack([compose_mosaic(ep.images[r]["top"], ep.images[r]["left_wrist"],
                                                   ep.images[r]["right_wrist"], h, w) for r in frame_rows(j, k, lead)])
                policy.observe(mosaics, ep.qpos[obs_row(j, k, lead)])
                p = policy.committed_prefix  # teacher forcing: the demonstration's commands still running
                committed = (ep.targets[k * j - p : k * j] if j else np.tile(ep.qpos[0], (p, 1))) if p else None
                chunk = policy.act(committed=committed)
                rows = np.arange(k * j, min(k * (j + 1), n_rows))
                if not rows.size:
                    continue
                truth = ep.targets[rows]
                preds = {"model": chunk[: rows.size], "hold": np.tile(ep.qpos[obs_row(j, k, lead)], (rows.size, 1)),
                         "mean plan": mean_plan[np.minimum(rows, t_max - 1)]}
                for name, p in preds.items():
                    at = [i for i, r in enumerate(rows) if r in grasp]
                    for i in at:  # right tool point of the prediction vs the demonstration's, cm
                        tool_err[name].append(float(np.linalg.norm(ik.tool_pose(p[i, 7:13])[0]
                                                                   - ik.tool_pose(truth[i, 7:13])[0])) * 100)
                    while len(errs[name]) <= j:
                        errs[name].append([])
                        grip_errs[name].append([])
                    errs[name][j].append(float(np.abs(p[:, arm] - truth[:, arm]).mean()))
                    grip_errs[name][j].append(float(np.abs(p[:, grip] - truth[:, grip]).mean()))
    table = {name: [float(np.mean(e)) for e in per] for name, per in errs.items()}
    gtable = {name: [float(np.mean(e)) for e in per] for name, per in grip_errs.items()}
    out = {"mode": "open-loop", "model": _rel(args.model), "observation_lead": lead, "episodes": args.episodes,
           "seeds": [args.seed, args.seed + args.episodes - 1], "baseline_seeds": args.baseline_seeds,
           "head_fovy_deg": args.fovy, "arm_mae_rad": table, "gripper_mae": gtable,
           "arm_mae_rad_all": {n: float(np.mean([x for e in per for x in e])) for n, per in errs.items()},
           "grasp_tool_error_cm": {n: {"mean": float(np.mean(v)), "p90": float(np.percentile(v, 90))}
                                   for n, v in tool_err.items()}}
    print(f"teacher-forced action error, {args.episodes} unseen scripted episodes (seeds {args.seed}..), ℓ = {lead}")
    print("| chunk | " + " | ".join(f"{n} arm rad / gripper" for n in table) + " |\n|---|" + "---|" * len(table))
    for j in range(len(table["model"])):
        print(f"| {j} | " + " | ".join(f"{table[n][j]:.3f} / {gtable[n][j]:.2f}" for n in table) + " |")
    print("| all | " + " | ".join(f"{out['arm_mae_rad_all'][n]:.3f}" for n in table) + " |")
    print("right tool point at the grasp (rows 24-30) vs the demonstration's, cm mean / p90: " + ", ".join(
        f"{n} {v['mean']:.1f} / {v['p90']:.1f}" for n, v in out["grasp_tool_error_cm"].items()))
    return out


def ideal(args: argparse.Namespace) -> dict:
    """Closed loop without real time: the simulator waits while the policy computes (no ROS)."""
    from memorywam_ros.runtime.chunk_executor import frame_rows, obs_row
    from memorywam_ros.runtime.mosaic import compose_mosaic
    from memorywam_ros.runtime.robot_config import RobotConfig
    from memorywam_ros.sim.aloha import AlohaSim
    from memorywam_ros.sim.stages import MAX_REWARD, REWARD_STAGES

    policy, lead = _load_policy(args)
    robot = RobotConfig.from_yaml(ROOT / "config" / "robots" / "aloha_sim.yaml")
    max_start = np.asarray(robot.max_start_distance, dtype=np.float64)
    k = policy.chunk_size
    h, w = policy.image_size
    rows_max = round(args.seconds * 10)
    need = {r for j in range(rows_max // k + 1) for r in frame_rows(j, k, lead)}
    episodes = []
    with AlohaSim(head_fovy_deg=args.fovy) as sim:
        for seed in range(args.seed, args.seed + args.episodes):
            sim.reset(seed, render=False)
            policy.reset(policy.instructions[0])
            seen: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            far = 0
            chunk = None
            boundary, inside = [], []
            for r in range(rows_max):
                if r in need:  # the observation of row r: after r commands
                    im = sim.render()
                    seen[r] = (compose_mosaic(im["top"], im["left_wrist"], im["right_wrist"], h, w), sim.qpos)
                if r % k == 0:
                    j = r // k
                    policy.observe(np.stack([seen[q][0] for q in frame_rows(j, k, lead)]), seen[obs_row(j, k, lead)][1])
                    p = policy.committed_prefix  # the running chunk's last p commands (the hold pose at the start)
                    committed = (chunk[-p:] if chunk is not None else np.tile(sim.qpos, (p, 1))) if p else None
                    previous, chunk = chunk, policy.act(committed=committed)
                    far += int(np.any(np.abs(chunk[0] - sim.qpos) > max_start))
                    if previous is not None:
                        boundary.append(float(np.abs(chunk[0] - previous[-1]).max()))
                    inside += np.abs(np.diff(chunk, axis=0)).max(axis=1).tolist()
                assert chunk is not None
                sim.step(sim.clip_targets(chunk[r % k]), 0.1, render=False)
                if sim.success:
                    break
            episodes.append({"seed": seed, "success": sim.success, "max_reward": sim.max_reward,
                             "stage": REWARD_STAGES["transfer_cube"][min(sim.max_reward, MAX_REWARD)],
                             "chunks": r // k + 1, "chunks_over_start_distance": far,
                             "boundary_steps": boundary, "in_chunk_steps": inside})
            print(f"seed {seed}: {episodes[-1]['stage']}, {far} chunk(s) the node would refuse", flush=True)
    n = len(episodes)
    succ = sum(e["success"] for e in episodes)
    stages = {name: sum(min(e["max_reward"], MAX_REWARD) == i for e in episodes)
              for i, name in enumerate(REWARD_STAGES["transfer_cube"])}
    lo, hi = wilson(succ, n)
    steps = {name: {"p50": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99))} if v else {}
             for name, v in (("boundary", [x for e in episodes for x in e["boundary_steps"]]),
                             ("in_chunk", [x for e in episodes for x in e["in_chunk_steps"]]))}
    for e in episodes:
        del e["boundary_steps"], e["in_chunk_steps"]
    print(f"ideal-timing closed loop, ℓ = {lead}, committed prefix {policy.committed_prefix}: {succ}/{n} success "
          f"(95 % Wilson [{lo:.0%}, {hi:.0%}]); stages {stages}; boundary step p50/p99 "
          f"{steps['boundary'].get('p50', float('nan')):.3f}/{steps['boundary'].get('p99', float('nan')):.3f} rad, "
          f"in-chunk {steps['in_chunk'].get('p50', float('nan')):.3f}/{steps['in_chunk'].get('p99', float('nan')):.3f}")
    return {"mode": "ideal", "model": _rel(args.model), "observation_lead": lead, "head_fovy_deg": args.fovy,
            "committed_prefix": policy.committed_prefix, "episodes": n, "successes": succ, "wilson95": [lo, hi],
            "stages": stages, "step_rad": steps, "per_episode": episodes}


def follow_slope(demo: np.ndarray, model: np.ndarray) -> list[float]:
    """Per axis, the least-squares slope of the model's points (S, D) on the demonstration's: 1 when
    the model goes where the demonstration goes, 0 when it goes to the same place whatever the
    episode (blind), between for a shrunken guess."""
    return [float(np.polyfit(demo[:, a], model[:, a], 1)[0]) for a in range(demo.shape[1])]


def _capture_last_block(blocks, store: dict, key: str) -> None:
    """Record the output of the last block of an expert each time it runs (`store[key]`). The
    experts call their blocks' pieces directly (no module __call__, so no forward hook fires):
    this wraps the instance's `finish`, on this policy object only."""
    block = blocks[-1]
    finish = block.finish

    def wrapped(*a, **kw):
        out = finish(*a, **kw)
        store[key] = out.detach().float().clone()
        return out

    block.finish = wrapped


def readout(args: argparse.Namespace) -> dict:
    """Does the first chunk depend on where the cube is? (The one chunk planned from the image alone.)"""
    import torch

    from memorywam_ros.runtime.chunk_executor import frame_rows
    from memorywam_ros.runtime.mosaic import compose_mosaic
    from memorywam_ros.sim.aloha import AlohaSim
    from memorywam_ros.sim.scripted import ARM_JOINTS, ArmIK, ScriptedTransferCube

    policy, lead = _load_policy(args)
    k = policy.chunk_size
    h, w = policy.image_size
    L = policy.model.config.tokens_per_frame
    p = policy.committed_prefix
    store: dict[str, torch.Tensor] = {}
    _capture_last_block(policy.model.video.blocks, store, "video")
    _capture_last_block(policy.model.action.blocks, store, "action")
    cubes, demo_tool, model_tool, blind_delta = [], [], [], []
    feats: dict[str, list[np.ndarray]] = {"video tokens (last layer, frame 0)": [],
                                          "video tokens (last layer, frame 0), mean": [],
                                          "action tokens (last layer, last step), mean": [],
                                          "action tokens (last layer, last step), all": []}
    demo_chunks = []
    n = len(frame_rows(0, k, lead))  # chunk 0's observation: the first image, as the node sees it
    with AlohaSim(head_fovy_deg=args.fovy) as sim:
        ik = ArmIK(sim.model, 1)
        for seed in range(args.seed, args.seed + args.seeds):
            sim.reset(seed, render=False)
            cubes.append(sim.env_state[:2] * 100.0)
            im = sim.render()
            q0 = sim.qpos
            committed = np.tile(q0, (p, 1)) if p else None
            out = {}
            for name, head in (("real", im["top"]), ("black head", np.zeros_like(im["top"]))):
                policy.reset(policy.instructions[0])
                policy.observe(np.stack([compose_mosaic(head, im["left_wrist"], im["right_wrist"], h, w)] * n), q0)
                out[name] = policy.act(committed=committed)
                if name == "real":
                    feats["video tokens (last layer, frame 0)"].append(store["video"][0, :L].reshape(-1).numpy())
                    feats["video tokens (last layer, frame 0), mean"].append(store["video"][0, :L].mean(0).numpy())
                    a = store["action"][0, p:]
                    feats["action tokens (last layer, last step), mean"].append(a.mean(0).numpy())
                    feats["action tokens (last layer, last step), all"].append(a.reshape(-1).numpy())
            blind_delta.append(float(np.abs(out["real"][:, ARM_JOINTS] - out["black head"][:, ARM_JOINTS]).mean()))
            model_tool.append(ik.tool_pose(out["real"][k - 1, 7:13])[0][:2] * 100.0)
            demo = ScriptedTransferCube()
            demo.reset(sim)
            rows = [demo.act(sim) for _ in range(k)]  # the plan's first chunk (the sim is not stepped)
            demo_chunks.append(np.array(rows))
            demo_tool.append(ik.tool_pose(rows[-1][7:13])[0][:2] * 100.0)
    y = np.array(cubes)
    dt, mt = np.array(demo_tool), np.array(model_tool)
    train = 2 * args.seeds // 3
    probes = {name: ridge_probe(np.stack(x), y, train) for name, x in feats.items()}
    slope = follow_slope(dt, mt)
    dc = np.array(demo_chunks)
    out_d = {"mode": "readout", "model": _rel(args.model), "observation_lead": lead, "committed_prefix": p,
             "head_fovy_deg": args.fovy, "seeds": [args.seed, args.seed + args.seeds - 1],
             "tool_at_chunk0_end_cm": {"follow_slope_xy": slope,
                                        "model_spread_std_xy": mt.std(0).tolist(),
                                        "demo_spread_std_xy": dt.std(0).tolist(),
                                        "error_mean": float(np.linalg.norm(mt - dt, axis=1).mean())},
             "chunk0_arm_rad": {"real_vs_black_head_mean_abs": float(np.mean(blind_delta)),
                                "demo_spread_mean_abs": float(np.abs(dc - dc.mean(0))[..., ARM_JOINTS].mean())},
             "cube_xy_probes_cm": probes}
    print(f"chunk 0 from the first image, {args.seeds} seeds from {args.seed} (ℓ = {lead}, prefix {p})")
    print(f"right tool point at the chunk's end: follow slope x/y {slope[0]:.2f} / {slope[1]:.2f} "
          f"(1 = goes where the demo goes, 0 = blind); spread std model {mt.std(0).round(2).tolist()} "
          f"vs demos {dt.std(0).round(2).tolist()} cm; error {out_d['tool_at_chunk0_end_cm']['error_mean']:.1f} cm")
    print(f"arm targets, real image vs black head tile: {np.mean(blind_delta):.4f} rad mean |diff| "
          f"(the demos' chunk 0 varies {out_d['chunk0_arm_rad']['demo_spread_mean_abs']:.4f} rad around its mean)")
    base = next(iter(probes.values()))["mean_predictor_rmse"]  # the same for every feature set
    print(f"cube (x, y) ridge readout, {args.seeds - train} held-out seeds, RMSE cm (mean predictor "
          f"{base[0]:.2f} / {base[1]:.2f}):")
    for name, r in probes.items():
        print(f"  {name}: {r['rmse'][0]:.2f} / {r['rmse'][1]:.2f}")
    return out_d


def r2_per_chunk(pred: list[np.ndarray], target: list[np.ndarray]) -> list[float]:
    """Per episode (chunks_e, ...) arrays -> per chunk index i, over the episodes that have chunk i:
    1 - SSE / (spread of the targets across those episodes). 1: reproduces how episodes differ; 0: their mean."""
    out = []
    for i in range(max(len(t) for t in target)):
        have = [e for e, t in enumerate(target) if len(t) > i]
        t = np.stack([target[e][i] for e in have])
        pr = np.stack([pred[e][i] for e in have])
        out.append(float(1.0 - ((pr - t) ** 2).sum() / max(((t - t.mean(0)) ** 2).sum(), 1e-12)))
    return out


def fit(args: argparse.Namespace) -> dict:
    """R^2 of the model's chunk (from pure noise) on its training episodes, with and without the state."""
    import torch

    from memorywam_ros.model.flow_matching import timestep
    from memorywam_ros.sim.scripted import ARM_JOINTS
    from memorywam_train.dataset import LatentDataset, collate

    policy, _ = _load_policy(args)
    model = policy.model
    ds = LatentDataset(args.latents, mode="episode", max_frames=args.max_frames, n_init=model.config.memory.n_init,
                       normalizer=policy.normalizer, committed_prefix=model.config.action.committed_prefix)
    batches = [collate([ds[e]]) for e in range(len(ds))]
    # chunks with every action row valid (the last chunk of an episode runs past its end)
    valid = [int(b["action_mask"][0].all(-1).sum()) for b in batches]
    target = [b["actions"][0, :v].numpy()[..., ARM_JOINTS] for b, v in zip(batches, valid)]
    n = max(valid)
    # how much the first images differ in the model's input: frame 0's latents across episodes
    x0 = np.stack([b["latents"][0, 0].numpy() for b in batches])  # (E, C, H, W)
    dev = np.sqrt(((x0 - x0.mean(0)) ** 2).mean(0).mean(0))  # (H, W) per latent pixel
    signal = {"latent_rms": float(np.sqrt((x0**2).mean())), "across_episode_rms": float(np.sqrt((dev**2).mean())),
              "across_episode_rms_max_pixel": float(dev.max())}
    out = {"mode": "fit", "model": _rel(args.model), "latents": _rel(args.latents), "episodes": len(ds),
           "frame0_latent_signal": signal,
           "episodes_per_chunk": [sum(v > i for v in valid) for i in range(n)], "draws": args.draws,
           "target_spread_rms": [float(np.stack([t[i] for t in target if len(t) > i]).std(0).mean())
                                 for i in range(n)]}
    for name, keep in (("with state", 1.0), ("state zeroed", 0.0)):
        pred = []
        for e, b in enumerate(batches):
            gen, acc = torch.Generator().manual_seed(e), 0.0
            committed = b["committed"] * keep if "committed" in b else None
            with torch.no_grad():
                for _ in range(args.draws):
                    noise = torch.randn(b["actions"].shape, generator=gen)
                    v = model(b["latents"], b["text"], b["proprio"] * keep, noise,
                              timestep(torch.ones(noise.shape[:2])), frame_ids=b["frame_ids"],
                              committed=committed).action_velocity
                    acc = acc + (noise - v) / args.draws  # x0 at sigma 1 (velocity_target = noise - x0)
            pred.append(acc[0, : valid[e]].numpy()[..., ARM_JOINTS])
        out[name] = r2_per_chunk(pred, target)
    print(f"{_rel(args.model)} on its training latents {_rel(args.latents)}: {len(ds)} episodes")
    print(f"frame 0's latents differ across episodes by {signal['across_episode_rms']:.4f} rms (latent rms "
          f"{signal['latent_rms']:.3f}; most at one latent pixel {signal['across_episode_rms_max_pixel']:.3f})")
    print("| chunk | " + " | ".join(str(i) for i in range(n)) + " |\n" + "|---" * (n + 1) + "|")
    print("| episodes | " + " | ".join(str(x) for x in out["episodes_per_chunk"]) + " |")
    print("| target spread (rms) | " + " | ".join(f"{x:.3f}" for x in out["target_spread_rms"]) + " |")
    for name in ("with state", "state zeroed"):
        print(f"| R^2 {name} | " + " | ".join(f"{x:.2f}" for x in out[name]) + " |")
    return out


def failures(args: argparse.Namespace) -> dict:
    from memorywam_ros.sim.stages import REWARD_STAGES

    data = json.loads(Path(args.results_json).read_text())
    eps = data.get("per_episode")
    if not eps or "max_reward" not in eps[0]:
        raise SystemExit(f"{args.results_json}: no per-episode max_reward (run with this version's demo/bench)")
    stages = REWARD_STAGES["transfer_cube"]
    rows = []
    for k, name in enumerate(stages):
        sel = [e for e in eps if min(e["max_reward"], len(stages) - 1) == k]
        rows.append({"stage": name, "episodes": len(sel),
                     "with_refused_chunk": sum((e.get("chunks_rejected") or 0) > 0 for e in sel),
                     "with_stall": sum((e.get("stalls") or 0) > 0 for e in sel),
                     "refused_chunks": sum(e.get("chunks_rejected") or 0 for e in sel)})
    print(f"closed-loop failure breakdown: {_rel(args.results_json)}, {len(eps)} episodes")
    print("| highest stage | episodes | with a refused chunk | with a stall | refused chunks |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stage']} | {r['episodes']} | {r['with_refused_chunk']} | {r['with_stall']} | "
              f"{r['refused_chunks']} |")
    return {"mode": "failures", "source": _rel(args.results_json), "episodes": len(eps), "stages": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    pr = sub.add_parser("probe")
    pr.add_argument("--seeds", type=int, default=150)
    pr.add_argument("--fovy", type=float, nargs="+", default=[78.0, 50.0], help="head framings to compare")
    ol = sub.add_parser("open-loop")
    ol.add_argument("--episodes", type=int, default=10)
    ol.add_argument("--seed", type=int, default=3000)
    ol.add_argument("--baseline-seeds", type=int, default=20)
    ol.add_argument("--fovy", type=float, default=None,
                    help="head framing (default: the checkpoint's sim.json, else gym-aloha's 78)")
    ie = sub.add_parser("ideal")
    ie.add_argument("--episodes", type=int, default=10)
    ie.add_argument("--seed", type=int, default=6000)
    ie.add_argument("--seconds", type=float, default=19.2, help="episode length (12 chunks)")
    ie.add_argument("--fovy", type=float, default=None,
                    help="head framing (default: the checkpoint's sim.json, else gym-aloha's 78)")
    ro = sub.add_parser("readout")
    ro.add_argument("--seeds", type=int, default=90)
    ro.add_argument("--seed", type=int, default=0)
    ro.add_argument("--fovy", type=float, default=None,
                    help="head framing (default: the checkpoint's sim.json, else gym-aloha's 78)")
    fi = sub.add_parser("fit")
    fi.add_argument("--latents", required=True, help="the training run's latents (memorywam-precompute --out)")
    fi.add_argument("--max-frames", type=int, default=16, help="latent frames per episode (the config's max_frames)")
    fi.add_argument("--draws", type=int, default=4)
    for q in (pr, ol, ie, ro, fi):
        q.add_argument("--model", default=str(DEFAULT_MODEL))
        q.add_argument("--torch-threads", type=int, default=2)
    fa = sub.add_parser("failures")
    fa.add_argument("results_json")
    for q in (pr, ol, ie, ro, fi, fa):
        q.add_argument("--out", default=None, help="JSON path (default bench/results/sim_diagnosis_<mode>.json)")
    args = p.parse_args(argv)
    if args.mode in ("open-loop", "ideal", "readout"):  # the framing the checkpoint's demos were recorded with
        from memorywam_ros.sim.aloha import GYM_ALOHA_HEAD_FOVY_DEG
        from memorywam_ros.sim.sim_setup import head_fovy_for

        args.fovy = head_fovy_for(args.model, args.fovy) or GYM_ALOHA_HEAD_FOVY_DEG
    os.environ.setdefault("MUJOCO_GL", "egl")
    result = {"probe": probe, "open-loop": open_loop, "ideal": ideal, "readout": readout, "fit": fit,
              "failures": failures}[args.mode](args)
    result["command"] = " ".join(["bench/sim_diagnosis.py", *(argv if argv is not None else sys.argv[1:])])
    out = Path(args.out) if args.out else RESULTS / f"sim_diagnosis_{args.mode.replace('-', '_')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {_rel(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
