"""From first-pass streams (streams.py) to episode plans: clock checks, the 10 Hz grid, gaps.

Invariants (DESIGN §1): rows of an episode are a uniform 10 Hz grid, so no latent frame or
action chunk ever spans a gap in the recording; frames from different times are never paired.
Rules, per bag:

1. Stamps, per stream source, in storage (= receive) order (`sampling.clock_breaks`):
   * an isolated message out of line with both neighbours by more than the stream's `max_age_s`
     (e.g. one uninitialised header) is dropped (counted `backward`);
   * a stamp more than `max_age_s` before its predecessor is a clock jump (counted `backward`):
     the bag is split at that message's receive time into parts aligned on their own; a part
     only pairs messages whose clocks agree (rule 3), so e.g. head frames whose stamps went back
     4 s never meet wrist frames of those 4 s-earlier times;
   * a smaller step back is delivery order, sorted into place (counted `reordered`);
   * a stamp equal to an earlier one keeps the first message (`first_per_stamp`; counted
     `repeated`; joint duplicates with different values also `conflicting`, with a warning).
2. Grid: per part (and per split-topic segment) at `control_rate_hz` on its head stamps,
   anchored on the first (sampling.make_grid).
3. As-of sampling within each stream's `max_age_s`; in addition the picked messages' latencies
   (receive time - stamp) must agree within `max_latency_spread_s`: otherwise one stream's
   clock is off and the row would pair different times; it is dropped (counted `clock`).
4. Gaps: a grid point where a stream has no fresh message (or rule 3 drops it) ends the
   episode; the next kept grid point starts a new one (`<bag>_part01`, ...), so stamps_ns of
   every episode are exactly 1/rate apart (precompute refuses anything else). Episodes shorter
   than `min_episode_rows` (default 17 = two latent frames: the least that trains one full
   action chunk and one next-frame video target) are dropped and counted (`short`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from .config import ConvertConfig
from .episodes import CAMERAS
from .sampling import (
    NS,
    StreamCounts,
    StreamStats,
    asof,
    clock_breaks,
    first_per_stamp,
    make_grid,
    runs,
    split_segments,
    window_stats,
)
from .streams import FirstPass

STREAMS: tuple[str, ...] = (*CAMERAS, "state", "action")
GRID_LIMIT = 10  # a grid more than 10x the head's message count (+100) means a broken head clock


@dataclass
class Track:
    """One source cleaned for as-of sampling: sorted by stamp, one message per stamp."""

    stream: str
    topic: str
    stamps: np.ndarray  # int64 sorted, unique
    recv: np.ndarray  # receive time of each message
    index: np.ndarray  # storage ordinal of each message on its topic (pass 2 decodes by it)
    values: np.ndarray | None = None  # joint values (n, width); None for cameras


@dataclass
class EpisodePlan:
    segment: int  # split-topic segment / clock part of the bag this episode comes from
    part: int  # index among the kept episodes of that segment (split at gaps)
    grid: np.ndarray  # stamps_ns: contiguous grid points, exactly 1/rate apart
    first_grid_index: int  # index of row 0 on its segment's grid
    cam_rows: dict[str, np.ndarray]  # camera -> storage ordinal per row
    cam_stamps: dict[str, np.ndarray]  # camera -> stamp of that message (checked in pass 2)
    state: np.ndarray
    action: np.ndarray
    stats: dict[str, StreamStats]
    parts: int = 1  # kept episodes of its segment


@dataclass
class BagPlan:
    episodes: list[EpisodePlan] = field(default_factory=list)
    counts: dict[str, StreamCounts] = field(default_factory=lambda: {s: StreamCounts() for s in STREAMS})
    segments: int = 0  # split-topic segments and clock parts that had head frames
    gaps: int = 0  # gaps inside a segment (each split an episode)
    clock: int = 0  # grid points dropped because the picked messages' clocks disagree
    short: int = 0  # pieces shorter than min_episode_rows, dropped
    short_rows: int = 0
    notes: list[str] = field(default_factory=list)


Source = tuple[str, str, np.ndarray, np.ndarray, "np.ndarray | None", int]


def _sources(fp: FirstPass, cfg: ConvertConfig) -> list[Source]:
    """(stream, topic, stamps, recv, values, max_age_ns) per source, storage order."""
    out = [(n, c.topic, c.stamps, c.recv, None, int(cfg.cameras[n].max_age_s * NS)) for n, c in fp.cameras.items()]
    for name, sources, age in (("state", fp.state, cfg.state.max_age_s), ("action", fp.action, cfg.action.max_age_s)):
        out += [(name, s.cfg.key, s.stamps, s.recv, s.values, int(age * NS)) for s in sources]
    return out


def _clean(fp: FirstPass, cfg: ConvertConfig, plan: BagPlan) -> list[list[Track]]:
    """Rule 1: tracks per clock part of the bag (split at the receive times of clock jumps)."""
    sources, bounds, usable = _sources(fp, cfg), [], []
    t_first = min(int(s[3][0]) for s in sources if s[3].size)
    for stream, topic, stamps, recv, _, age in sources:
        outliers, jumps = clock_breaks(stamps, age)
        plan.counts[stream].backward += int(outliers.size + jumps.size)
        keep = np.ones(stamps.size, dtype=bool)
        keep[outliers] = False
        usable.append(keep)
        if outliers.size:
            plan.notes.append(f"{topic}: {outliers.size} message(s) stamped out of line with their neighbours "
                              f"(first: message {outliers[0]}): dropped")
        for i in jumps.tolist():
            back = (int(stamps[i - 1]) - int(stamps[i])) / NS
            plan.notes.append(
                f"{topic}: stamps jump back {back:.3f} s at message {i} ({(int(recv[i]) - t_first) / NS:.2f} s into "
                "the bag): the bag is split there and each part aligned on its own"
            )
            bounds.append(int(recv[i]))
    edges = [-(2**63), *sorted(set(bounds)), 2**63 - 1]
    parts: list[list[Track]] = []
    for lo, hi in itertools.pairwise(edges):
        tracks = []
        for (stream, topic, stamps, recv, values, _), keep in zip(sources, usable):
            idx = np.flatnonzero(keep & (recv >= lo) & (recv < hi))
            sel, counts = first_per_stamp(stamps[idx], None if values is None else values[idx])
            plan.counts[stream].add(counts)
            idx = idx[sel]
            tracks.append(Track(stream, topic, stamps[idx], recv[idx], idx, None if values is None else values[idx]))
        parts.append(tracks)
    _note_duplicates(plan, sources)
    return parts


def _note_duplicates(plan: BagPlan, sources: list[Source]) -> None:
    for stream in STREAMS:
        c = plan.counts[stream]
        topics = ", ".join(dict.fromkeys(s[1] for s in sources if s[0] == stream))
        if c.repeated:
            conflict = (f"; {c.conflicting} of them with DIFFERENT values than the kept message (two publishers?)"
                        if c.conflicting else "")
            plan.notes.append(f"{stream} ({topics}): {c.repeated} message(s) repeat an earlier stamp: kept the first "
                              f"of each{conflict}")
        if c.reordered:
            plan.notes.append(f"{stream} ({topics}): {c.reordered} message(s) stamped before their predecessor "
                              "(within max_age_s): sorted by stamp")


def _plan_segment(
    tracks: list[Track], head: np.ndarray, cfg: ConvertConfig, plan: BagPlan, segment: int, label: str
) -> None:
    """Rules 2-4 for one segment's head stamps: append its episodes to `plan`."""
    grid = make_grid(head, cfg.control_rate_hz)
    if grid.size > GRID_LIMIT * head.size + 100:
        plan.notes.append(f"{label}: head stamps span {(int(head[-1]) - int(head[0])) / NS:.1f} s with only "
                          f"{head.size} frames (broken head clock?): skipped")
        return
    ages = {n: int(cfg.cameras[n].max_age_s * NS) for n in CAMERAS}
    ages.update(state=int(cfg.state.max_age_s * NS), action=int(cfg.action.max_age_s * NS))
    valid = {s: np.ones(grid.size, dtype=bool) for s in STREAMS}
    picks, latency = [], []
    for t in tracks:
        idx, ok = asof(t.stamps, grid, ages[t.stream])
        valid[t.stream] &= ok
        pick = np.clip(idx, 0, None)
        picks.append(pick)
        latency.append(t.recv[pick] - t.stamps[pick] if t.stamps.size else np.zeros(grid.size, np.int64))
    fresh = np.logical_and.reduce(list(valid.values()))
    lat = np.stack(latency)
    spread = lat.max(0) - lat.min(0)
    in_step = spread <= int(cfg.max_latency_spread_s * NS)
    keep = fresh & in_step
    for s in STREAMS:
        plan.counts[s].dropped += int((~valid[s]).sum())
    clock = int((fresh & ~in_step).sum())
    plan.clock += clock
    if clock:
        worst = int(np.argmax(np.where(fresh, spread, -1)))
        a, b = int(np.argmax(lat[:, worst])), int(np.argmin(lat[:, worst]))
        plan.notes.append(
            f"{label}: {clock} grid point(s) dropped: the picked messages' latencies (receive - stamp) differ by up to "
            f"{spread[worst] / NS:.3f} s ({tracks[a].topic} vs {tracks[b].topic}; max_latency_spread_s "
            f"{cfg.max_latency_spread_s}): their clocks disagree, so they are not from the same time"
        )
    pieces = runs(keep)
    gaps = max(0, len(pieces) - 1)
    plan.gaps += gaps
    kept: list[EpisodePlan] = []
    for start, stop in pieces:
        if stop - start < cfg.min_episode_rows:
            plan.short += 1
            plan.short_rows += stop - start
            continue
        rows = slice(start, stop)
        t0, t1 = int(grid[start]), int(grid[stop - 1])
        cams = {t.stream: (t, p) for t, p in zip(tracks, picks) if t.values is None}
        joints = {s: [(t, p) for t, p in zip(tracks, picks) if t.stream == s] for s in ("state", "action")}
        stats = {c: window_stats(t.stamps, t0, t1) for c, (t, _) in cams.items()}
        for s, pairs in joints.items():
            per = [window_stats(t.stamps, t0, t1) for t, _ in pairs]
            stats[s] = StreamStats(min(p.messages for p in per), max(p.largest_gap_s for p in per))
        kept.append(
            EpisodePlan(
                segment=segment,
                part=len(kept),
                grid=grid[rows],
                first_grid_index=start,
                cam_rows={c: t.index[p[rows]] for c, (t, p) in cams.items()},
                cam_stamps={c: t.stamps[p[rows]] for c, (t, p) in cams.items()},
                state=np.concatenate([t.values[p[rows]] for t, p in joints["state"]], axis=1),
                action=np.concatenate([t.values[p[rows]] for t, p in joints["action"]], axis=1),
                stats=stats,
            )
        )
    for e in kept:
        e.parts = len(kept)
    plan.episodes += kept
    if gaps:
        missing = ", ".join(f"{s} {int((~valid[s][pieces[0][0]:pieces[-1][1]]).sum())}" for s in STREAMS
                            if (~valid[s][pieces[0][0]:pieces[-1][1]]).any())
        plan.notes.append(f"{label}: split into {len(pieces)} pieces at {gaps} gap(s) in the recording (grid points "
                          f"without a fresh message: {missing or 'none'}; clock: {clock})")
    if not pieces:
        missing = ", ".join(f"{s}: {int((~valid[s]).sum())}" for s in STREAMS if (~valid[s]).any())
        plan.notes.append(f"{label}: 0 frames after alignment (grid points missing per stream: {missing or 'none'}; "
                          f"clock: {clock})")


def plan_bag(fp: FirstPass, cfg: ConvertConfig, split_marks: np.ndarray | None) -> BagPlan:
    """Every episode of one bag, with the counts of everything dropped on the way."""
    plan = BagPlan()
    parts = _clean(fp, cfg, plan)
    marks = split_marks if split_marks is not None else np.zeros(0, np.int64)
    for tracks in parts:
        head = next(t for t in tracks if t.stream == "head")
        if head.stamps.size == 0:
            continue
        for seg_stamps in split_segments(head.stamps, marks):
            label = f"segment {plan.segments}" if (split_marks is not None or len(parts) > 1) else "bag"
            _plan_segment(tracks, seg_stamps, cfg, plan, plan.segments, label)
            plan.segments += 1
    if plan.short:
        plan.notes.append(f"{plan.short} piece(s) shorter than min_episode_rows={cfg.min_episode_rows} dropped "
                          f"({plan.short_rows} rows)")
    return plan
