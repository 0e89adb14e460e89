"""Training samples from precomputed latents (precompute.py): consecutive latent frames with their
absolute frame ids, action chunks, proprio and the instruction embedding.

A sample is one episode's frames, chosen by `mode`:
  * "episode": frames 0 .. min(N, max_frames) - 1 of the episode. Frames past max_frames are
    never trained (nor the RoPE offsets the robot meets there): the dataset warns with counts;
  * "window":  `window` consecutive frames from a random start (the whole episode if shorter).
    With window = max_frames - n_init this is "whole episodes when they fit, random windows of
    long ones" at a bounded sequence length (config/train_paper.yaml does this). The start is
    uniform in [-(window-1), N-1] and then clipped to the episode, so the last frame (the task's
    end) lies in the window as often as a frame in the middle: probability window/(N+window-1)
    for both, and up to twice that within `window` of either end (a uniform start gave the last
    frame only 1/(N-window+1): at N=200, window=62, 0.7 % against 24 %).
    A window not starting at frame 0 gets the episode's anchor frames 0 .. n_init-1 prepended,
    because the memory rules are by absolute frame id (model/memory.py): with the anchors in the
    sequence every frame of the window sees what the robot's cache would hold, except the gists
    of the skipped frames between anchors and window (inherent to windows; "episode" mode with a
    large max_frames trains on exactly the robot's cache).
One epoch = one sample per episode; the window start is a function of (seed, epoch, index) only,
so a resumed run sees the same samples as an uninterrupted one whatever the worker layout.

Sample fields (n frames; K = 16 actions per chunk):
  latents (n, C, h, w) float32 | frame_ids (n,) int64 absolute latent-frame ids
  actions (n, K, A) normalised | action_mask (n, K) bool (False past the episode's end)
  proprio (n, S) normalised    | video_mask (n-1,) bool: frame i+1 is the frame right after i,
  text (T, D) instruction      |   so "predict frame i+1 from frame i" is a real target
                               |   (False from the last anchor to the first window frame)
  committed (n, P, A) normalised, only with committed_prefix P > 0: the commands the robot still
    executes while frame j's chunk is computed (observation lead P): the last P of chunk j-1
    (rows 16j-P .. 16j-1, read from the episode whatever the window), and for frame 0 the joint
    state of row 0 (the arm holds its start pose: the node's hold target)

`collate` pads a batch to its longest sample: padded frames get ids after the sample's last id,
so by the causal-by-id memory rules no real token ever sees them, and every mask is False there.
The paper trains with batch size 1 per GPU; that is the default and needs no padding at all.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch.utils.data import Dataset

from memorywam_ros.runtime.instructions import InstructionStore
from memorywam_ros.runtime.normalization import Normalizer

from .precompute import META_NAME

MODES = ("episode", "window")
log = logging.getLogger(__name__)


def window_frames(num_frames: int, start: int, length: int, n_init: int) -> list[int]:
    """Frame indices of a window [start, start+length) with the anchors 0..n_init-1 in front."""
    frames = list(range(start, min(start + length, num_frames)))
    anchors = list(range(min(n_init, start)))
    return anchors + frames


class LatentDataset(Dataset):
    def __init__(
        self,
        latents_dir: str | Path,
        mode: str = "window",
        window: int = 8,
        max_frames: int = 64,
        n_init: int = 2,
        normalizer: Normalizer | None = None,
        seed: int = 0,
        committed_prefix: int = 0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: choose one of {MODES}")
        self.dir = Path(latents_dir)
        meta_path = self.dir / META_NAME
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.dir}: {META_NAME} missing (run memorywam-precompute first)")
        self.meta = json.loads(meta_path.read_text())
        self.files = sorted(self.dir.glob("*.safetensors"))
        if not self.files:
            raise FileNotFoundError(f"{self.dir}: no latent episodes")
        self.mode, self.window, self.max_frames, self.n_init, self.seed = mode, window, max_frames, n_init, seed
        self.committed_prefix = committed_prefix
        lead = int(self.meta.get("observation_lead", 0))
        if committed_prefix and committed_prefix != lead:
            raise ValueError(f"committed_prefix {committed_prefix} needs latents precomputed with observation lead "
                             f"{committed_prefix}; {self.dir} has observation_lead {lead} (memorywam-precompute "
                             "--observation-lead)")
        self.epoch = 0
        self.lengths, self.instructions = [], []
        for path in self.files:
            with safe_open(str(path), framework="pt") as f:
                self.lengths.append(f.get_slice("latents").get_shape()[0])
                self.instructions.append(f.metadata()["instruction"])
        self.cut = self._report_long_episodes()
        self.store = InstructionStore(self.dir / "instructions")
        self.encoder_id = self.meta["instruction_encoder"]
        self._text: dict[str, torch.Tensor] = {}
        self.normalizer = normalizer if normalizer is not None else self.compute_normalizer()

    def __len__(self) -> int:
        return len(self.files)

    def _report_long_episodes(self) -> tuple[int, int]:
        """(episodes, latent frames) that mode "episode" cuts off at max_frames; warns when any."""
        total = sum(self.lengths)
        if self.mode == "window":
            long = sum(n > self.window for n in self.lengths)
            if long:
                log.info("%d of %d episodes are longer than window=%d latent frames: trained in random windows with "
                         "the %d anchor frame(s) prepended", long, len(self.lengths), self.window, self.n_init)
            return 0, 0
        cut = [n - self.max_frames for n in self.lengths if n > self.max_frames]
        if cut:
            log.warning(
                "%d of %d episodes are longer than max_frames=%d latent frames: %d of %d latent frames (%.0f%%) are "
                "never trained in mode=episode, the longest episode has %d; use mode=window (window=%d keeps "
                "samples at %d frames) or raise max_frames", len(cut), len(self.lengths), self.max_frames, sum(cut),
                total, 100 * sum(cut) / total, max(self.lengths), self.max_frames - self.n_init, self.max_frames)
        return len(cut), sum(cut)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def compute_normalizer(self) -> Normalizer:
        """State statistics over every latent frame's proprio, action statistics over every valid
        chunk step (= every action row the trainer sees), across the whole dataset."""
        states, actions = [], []
        for path in self.files:
            with safe_open(str(path), framework="np") as f:
                states.append(f.get_tensor("proprio"))
                actions.append(f.get_tensor("actions")[f.get_tensor("action_mask")])
        return Normalizer.from_arrays(np.concatenate(states), np.concatenate(actions))

    def instruction_embeddings(self) -> dict[str, torch.Tensor]:
        """text -> (T, D) for every instruction of the dataset (what the export ships)."""
        return {text: self.text(text) for text in sorted(set(self.instructions))}

    def text(self, instruction: str) -> torch.Tensor:
        if instruction not in self._text:
            self._text[instruction] = self.store.get(instruction, self.encoder_id)
        return self._text[instruction]

    def frames(self, index: int) -> list[int]:
        """Which latent frames of episode `index` form this epoch's sample."""
        n = self.lengths[index]
        if self.mode == "episode":
            return list(range(min(n, self.max_frames)))
        if n <= self.window:
            return list(range(n))
        rng = np.random.default_rng((self.seed, self.epoch, index))
        # clipped: starts 0 and n-window take the windows that would hang over an end, so the end
        # frames are in the window with probability window / (n + window - 1), like middle ones
        start = min(max(int(rng.integers(1 - self.window, n)), 0), n - self.window)
        return window_frames(n, start, self.window, self.n_init)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ids = self.frames(index)
        idx = torch.tensor(ids)
        with safe_open(str(self.files[index]), framework="pt") as f:
            latents = _rows(f, "latents", ids).float()
            all_actions = f.get_tensor("actions")
            actions, mask, proprio = all_actions[idx], f.get_tensor("action_mask")[idx], f.get_tensor("proprio")[idx]
            committed = self._committed(all_actions, f.get_tensor("proprio")[0], idx) if self.committed_prefix else None
        norm = self.normalizer
        extra = {"committed": norm.normalize_action(committed.float())} if committed is not None else {}
        return {
            "latents": latents,
            "frame_ids": idx,
            "actions": norm.normalize_action(actions.float()),
            "action_mask": mask.bool(),
            "proprio": norm.normalize_state(proprio.float()),
            "video_mask": idx[1:] == idx[:-1] + 1,
            "text": self.text(self.instructions[index]),
            "episode": index,
            **extra,
        }

    def _committed(self, actions: torch.Tensor, state0: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """(n, P, A) raw: chunk j-1's last P commands for frame j, the row-0 joint state for frame 0."""
        p, a = self.committed_prefix, actions.shape[-1]
        if state0.shape[-1] != a:
            raise ValueError(f"committed_prefix needs the joint state in command space: state has "
                             f"{state0.shape[-1]} values, actions {a}")
        prev = actions[(idx - 1).clamp(min=0), -p:]  # (n, P, A)
        return torch.where((idx == 0)[:, None, None], state0.to(prev.dtype).expand(p, a), prev)


def _rows(f: Any, name: str, ids: list[int]) -> torch.Tensor:
    """Read only the needed rows of a large tensor, one slice per contiguous run of ids."""
    sl, parts, start = f.get_slice(name), [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or ids[i] != ids[i - 1] + 1:
            parts.append(sl[ids[start] : ids[i - 1] + 1])
            start = i
    return torch.cat(parts)


def collate(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack samples, right-padding frames (and text tokens, with zeros as umT5 padding) to the longest."""
    n = max(s["frame_ids"].shape[0] for s in samples)
    t = max(s["text"].shape[0] for s in samples)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in (*samples[0], "frame_valid")}
    for s in samples:
        m = s["frame_ids"].shape[0]
        pad = n - m
        last = int(s["frame_ids"][-1])
        out["frame_ids"].append(torch.cat((s["frame_ids"], torch.arange(last + 1, last + 1 + pad))))
        out["frame_valid"].append(torch.arange(n) < m)
        keys = ("latents", "actions", "action_mask", "proprio", "video_mask", "committed")
        for key in (k for k in keys if k in s):
            value = s[key]
            out[key].append(torch.cat((value, value.new_zeros((pad, *value.shape[1:])))))
        out["text"].append(torch.nn.functional.pad(s["text"], (0, 0, 0, t - s["text"].shape[0])))
        out["episode"].append(torch.tensor(s["episode"]))
    return {k: torch.stack(v) for k, v in out.items()}
