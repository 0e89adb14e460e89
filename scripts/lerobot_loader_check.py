"""Check our LeRobot import/export against LeRobot's own code (run in a venv WITH `lerobot`).

Not a CI test: `lerobot` 0.4.4 (the newest for Python 3.11) pins torch<2.11 and cannot live in
our venv (torch 2.13). A separate venv that held it here (x86_64, Python 3.11; torch 2.14.1 and
torchvision 0.29.1 lie on the build machines' disk, so nothing multi-GB is downloaded; lerobot is
installed without its pins, so this is LeRobot's own code, with a newer torch than it asks for):

    python3 -m venv /tmp/lerobot-venv && P=/tmp/lerobot-venv/bin/python
    $P -m pip install torch==2.14.1 torchvision==0.29.1
    $P -m pip install --no-deps lerobot==0.4.4 torchcodec==0.14.0
    $P -m pip install "datasets>=4,<5" "huggingface-hub>=0.34.2,<0.36" "av>=15,<16" "jsonlines>=4,<5" \
        draccus==0.10.0 "einops>=0.8,<0.9" "deepdiff>=7,<9" termcolor imageio pandas pyarrow accelerate h5py
    apt-get install libavcodec59 libavformat59 libavutil57 libswscale6 libswresample4 libavdevice59 libavfilter8
    HF_HUB_OFFLINE=1 $P scripts/lerobot_loader_check.py ...

It does two things:

    python scripts/lerobot_loader_check.py create OUT_DIR [--fps 30] [--episodes 2] [--frames 31]
        LeRobot's own writer (LeRobotDataset.create / add_frame / save_episode / finalize) makes
        an ALOHA-layout v3.0 dataset whose values say which frame they are (as in
        test/lerobot_helpers.py): state[i, j] = e * 1000 + i + j / 100, action = state + 0.5,
        image red = (e * 40 + i * 9) % 240, green = 40 + 60 * camera. Import it with
        memorywam-import-lerobot in our venv.
    python scripts/lerobot_loader_check.py open DATASET_DIR EPISODES_DIR
        LeRobot's own loader (LeRobotDataset) opens our export; every item is compared with the
        HDF5 episodes it came from: state/action exactly, images by PSNR. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

CAMS = ("cam_high", "cam_left_wrist", "cam_right_wrist", "cam_low")
MOTORS = [
    f"{side}_{j}"
    for side in ("left", "right")
    for j in ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper")
]


def create(out: Path, fps: int, episodes: int, frames: int) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        f"observation.images.{c}": {"dtype": "video", "shape": (64, 64, 3), "names": ["height", "width", "channels"]}
        for c in CAMS
    }
    for key in ("observation.state", "action"):
        features[key] = {"dtype": "float32", "shape": (14,), "names": {"motors": MOTORS}}
    ds = LeRobotDataset.create("local/lerobot_written", fps=fps, features=features, root=out, robot_type="aloha")
    tasks = ("insert the peg", "fold the towel")
    for e in range(episodes):
        for i in range(frames):
            state = (e * 1000 + i + np.arange(14) / 100).astype(np.float32)
            frame = {"observation.state": state, "action": state + np.float32(0.5), "task": tasks[e % 2]}
            for k, c in enumerate(CAMS):
                rgb = np.empty((64, 64, 3), np.uint8)
                rgb[..., 0], rgb[..., 1], rgb[..., 2] = (e * 40 + i * 9) % 240, 40 + 60 * k, 100
                frame[f"observation.images.{c}"] = rgb
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()
    print(json.dumps({"created": str(out), "fps": fps, "episodes": episodes, "frames": frames}))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def open_export(dataset: Path, episodes: Path) -> int:
    import h5py
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/memorywam_export", root=dataset)
    files = sorted(episodes.glob("*.hdf5"))
    rows = []  # (file, row) per LeRobot frame, in order: one LeRobot episode per gap-free run
    for f in files:
        with h5py.File(f, "r") as h:
            n = h["stamps_ns"].shape[0]
        rows += [(f, i) for i in range(n)]
    if len(ds) != len(rows):
        print(json.dumps({"error": f"LeRobot sees {len(ds)} frames, the episodes have {len(rows)}"}))
        return 1
    worst: dict[str, float] = {}
    exact = True
    handles = {f: h5py.File(f, "r") for f in files}
    for k in range(len(ds)):
        item = ds[k]
        f, i = rows[k]
        h = handles[f]
        exact &= np.array_equal(item["observation.state"].numpy(), h["state"][i])
        exact &= np.array_equal(item["action"].numpy(), h["action"][i])
        exact &= item["task"] == h.attrs["instruction"]
        for cam in ("head", "left_wrist", "right_wrist"):
            img = (item[f"observation.images.{cam}"].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
            worst[cam] = min(worst.get(cam, float("inf")), psnr(img, h[f"images/{cam}"][i]))
    print(
        json.dumps(
            {
                "frames": len(ds),
                "episodes": ds.num_episodes,
                "fps": ds.fps,
                "video_backend": ds.video_backend,
                "state_action_task_exact": bool(exact),
                "min_psnr_db": worst,
            }
        )
    )
    return 0 if exact else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("out", type=Path)
    c.add_argument("--fps", type=int, default=30)
    c.add_argument("--episodes", type=int, default=2)
    c.add_argument("--frames", type=int, default=31)
    o = sub.add_parser("open")
    o.add_argument("dataset", type=Path)
    o.add_argument("episodes", type=Path)
    args = p.parse_args()
    if args.cmd == "create":
        create(args.out, args.fps, args.episodes, args.frames)
        return 0
    return open_export(args.dataset, args.episodes)


if __name__ == "__main__":
    sys.exit(main())
