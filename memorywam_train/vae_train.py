"""`memorywam-train-vae`: fit the tiny Wan2.2-layout VAE to simulator frames, foreground weighted.

    memorywam-train-vae EPISODES_DIR --init CKPT_DIR --out CKPT_DIR [--steps 2000] [--fg-weight 10]

Why (issue 16, bench/results/sim_levers.md): the simulated dual arm's checkpoints encode their
frames with the tiny VAE of `wan22_vae_config(tiny=True)` at *random* weights. It passes the cube
as a ~4 % change at one or two of the 480 latent pixels of frame 0, and no policy trained on those
latents reads where the cube is, not even on its own five training episodes. A VAE trained to
reconstruct the frames must put the cube into its latents to lower the loss, and weighting the
loss towards the pixels that are not static background makes the small moving things (cube,
arms) count as much as the large table. The real robot keeps the real Wan2.2 weights; this is a
simulator-only stand-in for them, shipped inside the checkpoint like the random one was.

What is trained (diffusers `AutoencoderKLWan`, the init checkpoint's `vae/`, every weight):
  * clips as the robot encodes them: one mosaic (latent frame 0: a random row of a random
    episode), or five (frame 0 + one chunk of 4 through the temporal downsampling: an episode's
    first latent frames, precompute's `mosaic_rows`), alternating step by step so both the
    single-frame path and the temporal convs learn; `vae.encode` chunks a clip exactly as the
    streaming encoder does (test/test_train_dataset.py);
  * a random crop (multiples of 16 px at a 16 px grid, so latent pixels stay aligned) keeps a
    step affordable on a CPU core: the VAE is convolutional, the crop only bounds its context;
  * the latent is the posterior mode, as precompute and the robot use it, so this is a plain
    autoencoder: no sampling, no KL term. Its scale is fixed afterwards instead (below);
  * loss = mean squared error over the background pixels + fg_weight · over the foreground
    pixels, each averaged over its own pixels (`weighted_reconstruction_loss`), so the foreground's
    share does not shrink with its area. Foreground = a pixel more than FG_THRESHOLD from the
    per-pixel median *over the episodes at the same row* (`background`): what tells one episode
    from another at the same time step (at row 0 only the cube; later also where the arms went).

After training, the per-channel mean and standard deviation of the latents of every episode
(precompute's `encode_episode`: the streaming encoder, frame by frame) replace the Wan2.2
statistics in the VAE config, so the normalised latents the DiT sees have zero mean and unit
variance per channel on these data (the random VAE's latents had an rms of 0.42 under the real
Wan2.2 statistics). OUT is the init checkpoint with this `vae/`; `memorywam-precompute --vae OUT`
encodes with it and the trainer's export ships it. Resumable: the state (VAE, AdamW, step, sample
generator) is kept in OUT/.vae_train_state.pt every 100 steps. Beside the VAE:
`vae_train.json` (the losses, the reconstruction error on 4 fixed mosaics before and after,
background and foreground apart) and `vae_train.png` (an episode's first mosaic through the init
and the trained VAE).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

FG_THRESHOLD = 0.1  # in the VAE's [-1, 1] units (~13 / 255): the largest channel difference from the median
STATE = ".vae_train_state.pt"


# ------------------------------------------------------------------------------------ data
class Mosaics:
    """The episodes' mosaics as the VAE sees them (uint8 (H, W, 3), precompute's composition)."""

    def __init__(self, episodes: Sequence[Path], image_size: tuple[int, int]):
        from .episodes import EpisodeReader

        if not episodes:
            raise ValueError("no episodes to train the VAE on")
        self.readers = [EpisodeReader(p) for p in episodes]
        self.image_size = image_size

    def mosaic(self, episode: int, row: int) -> np.ndarray:
        from memorywam_ros.runtime.mosaic import compose_mosaic

        from .episodes import CAMERAS

        reader = self.readers[episode]
        return compose_mosaic(*(reader.images(c, row, row + 1)[0] for c in CAMERAS), *self.image_size)

    def clip(self, rng: np.random.Generator, frames: int) -> tuple[np.ndarray, list[int]]:
        """((T, H, W, 3), rows): 1 mosaic (any row of any episode) or 5 (an episode's latent frames 0 and 1)."""
        from .precompute import mosaic_rows

        e = int(rng.integers(len(self.readers)))
        if frames == 1:
            rows = [int(rng.integers(len(self.readers[e])))]
        else:
            last = len(self.readers[e]) - 1
            rows = [min(r, last) for j in (0, 1) for r in mosaic_rows(j)]
        return np.stack([self.mosaic(e, r) for r in rows]), rows


def background(mosaics: Mosaics, max_episodes: int = 25) -> torch.Tensor:
    """(R, 3, H, W) float16 in [-1, 1]: per row index, the per-pixel median over the episodes at that row.

    Episodes start in the same pose and run the same script, so what differs from this median at
    the same time step is what tells one episode from another: at row 0 only the cube, later the
    cube and where the arms went for it. A median over all rows instead marks the wrist cameras'
    whole moving views (measured: 37 % of frame 0's pixels, the cube ~0.5 %)."""
    from memorywam_ros.runtime.mosaic import mosaics_to_tensor

    readers = range(min(max_episodes, len(mosaics.readers)))
    rows = max(len(mosaics.readers[e]) for e in readers)
    out = []
    for r in range(rows):
        have = [e for e in readers if r < len(mosaics.readers[e])]
        out.append(mosaics_to_tensor(np.stack([mosaics.mosaic(e, r) for e in have])).median(dim=1).values.half())
    return torch.stack(out)


def foreground(x: torch.Tensor, bg: torch.Tensor, threshold: float = FG_THRESHOLD) -> torch.Tensor:
    """x (B, 3, T, H, W), bg (T, 3, H, W) the background of each frame's row -> bool (B, T, H, W)."""
    return (x - bg.float().permute(1, 0, 2, 3)[None]).abs().amax(dim=1) > threshold


def row_background(bg: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """The background of these rows (T, 3, H, W); rows past the longest median episode use its last row."""
    return bg[[min(r, len(bg) - 1) for r in rows]]


def weighted_reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, fg: torch.Tensor,
                                 fg_weight: float) -> tuple[torch.Tensor, float, float]:
    """mean over background pixels of the squared error + fg_weight · the same over foreground pixels.

    Squared error averaged over the 3 colour channels per pixel; a side with no pixels adds 0.
    Returns (loss, background MSE, foreground MSE) (the last two detached, NaN when empty)."""
    err = (recon.float() - x.float()).pow(2).mean(dim=1)  # (B, T, H, W)
    parts = []
    for mask in (~fg, fg):
        n = mask.sum()
        parts.append((err * mask).sum() / n if n > 0 else err.new_zeros(()))
    bg_mse = float(parts[0].detach()) if (~fg).any() else math.nan
    fg_mse = float(parts[1].detach()) if fg.any() else math.nan
    return parts[0] + fg_weight * parts[1], bg_mse, fg_mse


def random_crop(x: torch.Tensor, fg: torch.Tensor, crop: tuple[int, int] | None, rng: np.random.Generator,
                grid: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random (h, w) window of x (B, 3, T, H, W) and fg (B, T, H, W), its corner on a `grid` px lattice."""
    if crop is None:
        return x, fg
    h, w = crop
    H, W = x.shape[-2:]
    if h % grid or w % grid or h > H or w > W:
        raise ValueError(f"crop {crop} must be multiples of {grid} within the mosaic {H}x{W}")
    top = int(rng.integers((H - h) // grid + 1)) * grid
    left = int(rng.integers((W - w) // grid + 1)) * grid
    return x[..., top:top + h, left:left + w], fg[..., top:top + h, left:left + w]


# ------------------------------------------------------------------------------------ training
def reconstruct(vae, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) -> the decoded posterior mode, same shape (the latent precompute stores)."""
    return vae.decode(vae.encode(x).latent_dist.mode()).sample


def latent_statistics(vae, mosaics: Mosaics) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the raw latent mode over every latent frame of every episode.

    Encoded with precompute's `encode_episode` through the streaming encoder (what the trainer will
    see), with the VAE's statistics set to the identity for the duration."""
    from memorywam_ros.runtime.vae import StreamingVAEEncoder

    from .precompute import encode_episode

    z = vae.config.z_dim
    vae.register_to_config(latents_mean=[0.0] * z, latents_std=[1.0] * z)
    encoder = StreamingVAEEncoder(vae)
    lat = torch.cat([torch.from_numpy(encode_episode(r, encoder, mosaics.image_size)["latents"])
                     .permute(1, 0, 2, 3).reshape(z, -1) for r in mosaics.readers], dim=1)
    return lat.mean(1).tolist(), lat.std(1).clamp_min(1e-6).tolist()


def evaluate(vae, clips: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Reconstruction MSE on fixed whole mosaics (from the training episodes) with their rows' backgrounds,
    background and foreground pixels apart."""
    bg_err, fg_err = [], []
    with torch.no_grad():
        for x, bg in clips:
            _, b, f = weighted_reconstruction_loss(reconstruct(vae, x), x, foreground(x, bg), 1.0)
            bg_err.append(b)
            fg_err.append(f)
    return {"background_mse": float(np.nanmean(bg_err)), "foreground_mse": float(np.nanmean(fg_err))}


def preview(vaes: dict[str, object], mosaic: np.ndarray, path: Path) -> None:
    """PNG: one mosaic and its reconstruction by each VAE (e.g. the init's and the trained one), side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from memorywam_ros.runtime.mosaic import mosaics_to_tensor

    x = mosaics_to_tensor(mosaic[None])[None]
    panels = {"input": x}
    with torch.no_grad():
        panels.update({name: reconstruct(vae, x).clamp(-1, 1) for name, vae in vaes.items()})
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 4))
    for ax, (name, im) in zip(axes, panels.items()):
        ax.imshow((im[0, :, 0].permute(1, 2, 0).float().numpy() + 1) / 2)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def train_vae(episodes_dir: Path, init: Path, out: Path, steps: int = 2000, fg_weight: float = 10.0,
              lr: float = 5e-4, crop: tuple[int, int] | None = (192, 160), seed: int = 0,
              checkpoint_every: int = 100, background_episodes: int = 25, progress: bool = True) -> dict:
    """Train the init checkpoint's VAE on the episodes' mosaics; write OUT = init with the trained `vae/`."""
    from diffusers import AutoencoderKLWan

    from memorywam_ros.runtime.mosaic import mosaics_to_tensor

    from .fsdp import load_state_file, save_state_file
    from .precompute import resolve_vae
    from .train import TrainConfig, lr_at

    vae_dir, image_size = resolve_vae(Path(init))
    paths = sorted(Path(episodes_dir).glob("*.hdf5"))
    mosaics = Mosaics(paths, image_size)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    bg = background(mosaics, background_episodes)
    held = np.random.default_rng(seed + 2)
    eval_clips = [(mosaics_to_tensor(c)[None], row_background(bg, rows))
                  for c, rows in (mosaics.clip(held, 1) for _ in range(4))]
    vae = AutoencoderKLWan.from_pretrained(str(vae_dir), low_cpu_mem_usage=False).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = TrainConfig(steps=steps, lr=lr, min_lr=lr / 10, warmup_steps=min(50, steps))
    out = Path(out)
    state_path, start, history = out / STATE, 0, []
    identity = {"episodes": [p.name for p in paths], "init": str(vae_dir), "steps": steps, "fg_weight": fg_weight,
                "lr": lr, "crop": list(crop) if crop else None, "seed": seed}
    state = load_state_file(state_path, identity)
    if state is not None:
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        start, history = state["step"], state["history"]
        print(f"[train-vae] resuming at step {start}", flush=True)
    elif out.exists():
        raise SystemExit(f"{out} exists and holds no VAE training state: choose another --out")
    before = evaluate(vae, eval_clips) if start == 0 else None
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for step in range(start, steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, schedule)
        clip, rows = mosaics.clip(rng, 1 if step % 2 == 0 else 5)
        x = mosaics_to_tensor(clip)[None]  # (1, 3, T, H, W)
        x, fg = random_crop(x, foreground(x, row_background(bg, rows)), crop, rng)
        loss, bg_mse, fg_mse = weighted_reconstruction_loss(reconstruct(vae, x), x, fg, fg_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        history.append([float(loss.detach()), bg_mse, fg_mse])
        if progress and (step + 1) % 50 == 0:
            tail = np.nanmean(np.array(history[-50:]), axis=0)
            print(f"[train-vae] step {step + 1}/{steps} loss {tail[0]:.4f} background {tail[1]:.4f} "
                  f"foreground {tail[2]:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            save_state_file(state_path, identity, {"vae": vae.state_dict(), "optimizer": opt.state_dict(),
                                                   "rng": rng.bit_generator.state, "step": step + 1,
                                                   "history": history})
    vae.eval()
    after = evaluate(vae, eval_clips)
    mean, std = latent_statistics(vae, mosaics)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    for part in Path(init).iterdir():  # the init checkpoint, its vae/ replaced
        if part.name != "vae" and not (out / part.name).exists():
            (shutil.copytree if part.is_dir() else shutil.copy2)(part, out / part.name)
    shutil.rmtree(out / "vae", ignore_errors=True)
    vae.save_pretrained(out / "vae")
    report = {"identity": identity, "image_size": list(image_size), "foreground_threshold": FG_THRESHOLD,
              "train_s_this_run": time.perf_counter() - t0, "eval_before": before, "eval_after": after,
              "latents_mean": mean, "latents_std": std, "history_every_50": history[49::50]}
    (out / "vae_train.json").write_text(json.dumps(report, indent=1) + "\n")
    init_vae = AutoencoderKLWan.from_pretrained(str(vae_dir), low_cpu_mem_usage=False).eval()
    preview({"init VAE": init_vae, "trained VAE": vae}, mosaics.mosaic(0, 0), out / "vae_train.png")
    state_path.unlink(missing_ok=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="memorywam-train-vae", description=__doc__.split("\n\n")[0])
    p.add_argument("episodes", type=Path, help="folder of converted episodes (*.hdf5)")
    p.add_argument("--init", type=Path, required=True, help="checkpoint whose vae/ is the starting point")
    p.add_argument("--out", type=Path, required=True, help="new checkpoint folder (init with the trained vae/)")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--fg-weight", type=float, default=10.0, help="weight of the foreground pixels' mean error")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--crop", type=int, nargs=2, default=[192, 160], metavar=("H", "W"),
                   help="training crop (multiples of 16); 0 0 = whole mosaics")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    crop = tuple(args.crop) if all(args.crop) else None
    report = train_vae(args.episodes, args.init, args.out, args.steps, args.fg_weight, args.lr, crop, args.seed)
    before, after = report["eval_before"], report["eval_after"]
    if before:
        print(f"reconstruction MSE background {before['background_mse']:.4f} -> {after['background_mse']:.4f}, "
              f"foreground {before['foreground_mse']:.4f} -> {after['foreground_mse']:.4f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
