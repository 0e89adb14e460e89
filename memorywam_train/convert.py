"""`memorywam-convert`: rosbag2 bags (sqlite3 or mcap; directories or single files) -> episodes.

    memorywam-convert BAG... --out DIR [--config topics.yaml] [--instruction TEXT]
                      [--msg DEFINITION.msg ...] [--overwrite] [--split-topic TOPIC]

Per bag (see config.py for the topic mapping, sampling.py for the timing rules):
1. check the configured topics exist ("no camera topics" names the topics found otherwise);
2. first pass: camera stamps (header.stamp read straight from the CDR bytes), joint vectors;
3. alignment (alignment.py has the rules): repeated stamps keep the first message, clock jumps
   split the bag, a 10 Hz grid on the head-camera stamps (one per part / marker segment), every
   stream sampled as-of within its max age. A grid point with a stale or missing stream is a
   GAP: the episode ends there and the next good grid point starts a new one
   (`<bag>_part00.hdf5`, `<bag>_part01.hdf5`, ...), because the rows of an episode must be a
   uniform 10 Hz grid (DESIGN §1: no latent frame or chunk spans a gap; precompute refuses
   files that are not). Pieces shorter than `min_episode_rows` are dropped. Everything dropped
   is counted per stream in the summary table and the report, and warned about;
4. second pass: decode only the camera frames on the grid and stream them into the HDF5 file
   (episodes.py schema). A bag that yields zero frames is an error, never an empty episode.

State = measured joints, action = commanded joints (command topic or master-arm status), both
sampled as-of at the grid times: action[t] is the latest command at or before t.

Bags that fail (corrupt, truncated, wrong topics) are reported and skipped; the others convert;
the exit code is 1 if anything failed. Existing episodes are kept unless --overwrite.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .alignment import STREAMS, BagPlan, EpisodePlan, plan_bag
from .bagio import BagError, BagSource, header_stamp_from_cdr
from .config import ConfigError, ConvertConfig, default_config_path, load_config
from .episodes import CAMERAS, EpisodeError, EpisodeWriter
from .images import ImageDecodeError, decode_image_msg
from .sampling import StreamCounts, StreamStats
from .streams import ConversionError, FirstPass, check_topics, first_pass

log = logging.getLogger(__name__)
ACTION_CONVENTION = (
    "as-of: state[t] = latest measured joints at or before stamps_ns[t]; action[t] = latest "
    "commanded joints (command topic or master arm) at or before stamps_ns[t]"
)


@dataclass
class EpisodeReport:
    path: Path
    frames: int
    instruction: str
    streams: dict[str, StreamStats]


@dataclass
class ConversionReport:
    bag: Path
    episodes: list[EpisodeReport] = field(default_factory=list)
    error: str | None = None  # without the bag path (the caller prints it once)
    notes: list[str] = field(default_factory=list)
    plan: BagPlan | None = None  # counts of what alignment dropped (None if it never ran)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.episodes)

    @property
    def frames(self) -> int:
        return sum(e.frames for e in self.episodes)


def bag_name(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def _instruction_for(fp: FirstPass, end_ns: int, cli: str | None, cfg: ConvertConfig) -> str | None:
    if cli:
        return cli
    # the latest instruction message at or before the episode's end (published at the start,
    # or re-published during the episode)
    text = next((s for t, s in reversed(fp.instructions) if t <= end_ns and s.strip()), None)
    if text is None and fp.instructions:
        text = fp.instructions[-1][1] or None
    return text or cfg.instruction


def convert_bag(
    path: str | Path,
    config: ConvertConfig,
    out_dir: str | Path,
    *,
    instruction: str | None = None,
    overwrite: bool = False,
    split_topic: str | None = None,
    msg_paths: Sequence[str | Path] = (),
    distro: str | None = None,
    progress: bool = False,
    name: str | None = None,
) -> ConversionReport:
    """Convert one bag into episode file(s) under `out_dir`. Never raises for a bad bag: the
    report carries the error (`report.ok` is False)."""
    path = Path(path)
    report = ConversionReport(bag=path)
    try:
        _convert(
            path,
            config,
            Path(out_dir),
            report,
            instruction,
            overwrite,
            split_topic or config.split_topic,
            # config msg_paths are a convenience: skip them where not installed
            [*(p for p in config.msg_paths if p.exists()), *msg_paths],
            distro,
            progress,
            name,
        )
    except BagError as exc:
        report.error = exc.reason  # the bag path is the report's own
    except (ConversionError, ImageDecodeError, EpisodeError, OSError) as exc:
        report.error = str(exc)
    except Exception as exc:  # a broken bag can make any decoder raise; keep the batch going
        log.debug("unexpected error converting %s", path, exc_info=True)
        report.error = f"{type(exc).__name__}: {exc}"
    if report.error is None and not report.episodes:
        report.error = "no episodes written"
    return report


def _convert(
    path: Path,
    cfg: ConvertConfig,
    out_dir: Path,
    report: ConversionReport,
    instruction: str | None,
    overwrite: bool,
    split_topic: str | None,
    msg_paths: list[Path | str],
    distro: str | None,
    progress: bool,
    name: str | None,
) -> None:
    bag = BagSource(path, msg_paths=msg_paths, distro=distro)
    types = check_topics(bag, cfg, split_topic)
    if not (instruction or cfg.instruction or (cfg.instruction_topic and cfg.instruction_topic in bag.topics)):
        raise ConversionError(
            "no instruction: pass --instruction, set `instruction` in the config, or record "
            f"{cfg.instruction_topic or 'an instruction topic'} (std_msgs/String)"
        )
    bar = _bar(progress, sum(bag.topics[t].count for t in types), f"read {bag_name(path)}")
    try:
        fp = first_pass(bag, cfg, types, split_topic, (lambda n: bar.update(n - bar.n)) if bar else None)
    finally:
        if bar:
            bar.close()
    report.notes += bag.notes

    bag_plan = plan_bag(fp, cfg, fp.split_marks if split_topic else None)
    report.plan = bag_plan
    report.notes += bag_plan.notes
    stem = name or bag_name(path)
    numbered = split_topic is not None or bag_plan.segments > 1
    plans: list[tuple[Path, EpisodePlan, str]] = []
    for ep in bag_plan.episodes:
        text = _instruction_for(fp, int(ep.grid[-1]), instruction, cfg)
        if not text:
            raise ConversionError(
                f"segment {ep.segment}: no instruction (no --instruction, no message, none in config)"
            )
        plans.append((out_dir / f"{episode_stem(stem, ep, numbered)}.hdf5", ep, text))
    if not plans:
        raise ConversionError(
            f"0 frames: no episode of at least min_episode_rows={cfg.min_episode_rows} grid points with every "
            "stream fresh; " + "; ".join(bag_plan.notes)
        )
    existing = [p for p, _, _ in plans if p.exists()]
    if existing and not overwrite:
        raise ConversionError(f"{existing[0]} exists (use --overwrite to replace it)")

    # second pass: decode the needed frames straight into the files
    need: dict[str, dict[int, list[tuple[int, int, int]]]] = {c: {} for c in CAMERAS}
    for e, (_, plan, _) in enumerate(plans):
        for cam in CAMERAS:
            for row, (ordinal, stamp) in enumerate(zip(plan.cam_rows[cam].tolist(), plan.cam_stamps[cam].tolist())):
                need[cam].setdefault(ordinal, []).append((e, row, stamp))
    writers = [EpisodeWriter(p, int(plan.grid.size), dof=cfg.dof) for p, plan, _ in plans]
    try:
        topic_cam = {fp.cameras[c].topic: c for c in CAMERAS}
        ordinals = dict.fromkeys(topic_cam, 0)
        total = sum(len(v) for v in need.values())
        bar = _bar(progress, total, f"decode {stem}")
        for topic, _, raw in bag.messages(list(topic_cam)):
            cam = topic_cam[topic]
            k = ordinals[topic]
            ordinals[topic] += 1
            targets = need[cam].get(k)
            if not targets:
                continue
            if fp.cameras[cam].header_stamps and header_stamp_from_cdr(raw) != targets[0][2]:
                # pass 2 must see the messages in pass 1's order; never pair pixels with a wrong row
                raise ConversionError(f"{topic}: message order differs between reading passes")
            try:
                rgb = decode_image_msg(bag.deserialize(raw, fp.cameras[cam].msgtype), fp.cameras[cam].msgtype)
            except ImageDecodeError as exc:
                raise ImageDecodeError(f"{topic} message {k}: {exc}") from None
            for e, row, _ in targets:
                writers[e].write_frame(cam, row, rgb)
            if bar:
                bar.update(1)
        if bar:
            bar.close()
        for w, (out, plan, text) in zip(writers, plans):
            streams = {
                n: {"topic": _topic_of(cfg, n), **plan.stats[n].as_dict(), **bag_plan.counts[n].as_dict()}
                for n in STREAMS
            }
            w.finish(
                plan.state,
                plan.action,
                plan.grid,
                {
                    "instruction": text,
                    "source": str(path.resolve()),
                    "control_rate_hz": float(cfg.control_rate_hz),
                    "action_convention": ACTION_CONVENTION,
                    "streams": streams,
                    "segment": {"index": plan.segment, "part": plan.part, "parts": plan.parts,
                                "first_grid_index": plan.first_grid_index},
                    "created_by": "memorywam-convert",
                },
            )
            report.episodes.append(EpisodeReport(out, int(plan.grid.size), text, plan.stats))
    except BaseException:
        for w in writers:
            if w._tmp.exists():
                w.abort()
        raise


def episode_stem(stem: str, ep: EpisodePlan, numbered: bool) -> str:
    """`<bag>`; `<bag>_ep<k>` per marker segment / clock part; `_part<p>` when gaps split it."""
    base = f"{stem}_ep{ep.segment:03d}" if numbered else stem
    return f"{base}_part{ep.part:02d}" if ep.parts > 1 else base


def _topic_of(cfg: ConvertConfig, stream: str) -> str:
    if stream in cfg.cameras:
        return cfg.cameras[stream].topic
    sources = cfg.state.sources if stream == "state" else cfg.action.sources
    return ", ".join(s.key for s in sources)


def _bar(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="msg", leave=False, dynamic_ncols=True)


def summary_table(reports: Sequence[ConversionReport]) -> Any:
    """rich Table: per bag one row of counts per stream (grid points dropped / repeated stamps /
    backward stamps), then one row per episode (frames, largest gap between messages)."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="memorywam-convert", show_lines=False)
    table.add_column("bag / episode", overflow="fold")
    table.add_column("frames", justify="right")
    for s in STREAMS:
        table.add_column(s.replace("_", " "), justify="right")
    totals = StreamCounts()
    gaps = short = short_rows = clock = 0
    for r in reports:
        if r.plan is not None:
            p = r.plan
            for c in p.counts.values():
                totals.add(c)
            gaps, short, short_rows, clock = gaps + p.gaps, short + p.short, short_rows + p.short_rows, clock + p.clock
            cells = [f"{p.counts[s].dropped} / {p.counts[s].repeated} / {p.counts[s].backward}" for s in STREAMS]
            extra = f" ({p.gaps} gaps, {p.short} short dropped, {p.clock} clock)" if p.gaps + p.short + p.clock else ""
            table.add_row(f"{escape(r.bag.name)}{extra}", "", *cells)
        if r.error:
            table.add_row(f"{escape(r.bag.name)} [red]FAILED[/red]", "0", *[""] * len(STREAMS))
            continue
        for e in r.episodes:
            cells = [f"{e.streams[s].largest_gap_s * 1000:.0f} ms" for s in STREAMS]
            table.add_row(f"  {escape(e.path.name)}", str(e.frames), *cells)
    ok = [r for r in reports if r.ok]
    table.caption = (
        "bag rows per stream: grid points dropped / repeated stamps / backward stamps; episode rows: largest gap "
        f"between messages. {len(ok)}/{len(reports)} bags converted, {sum(len(r.episodes) for r in ok)} episodes, "
        f"{sum(r.frames for r in ok)} frames; {gaps} gaps split episodes, {short} short pieces dropped "
        f"({short_rows} rows), {clock} grid points with disagreeing clocks; {totals.repeated} repeated stamps "
        f"({totals.conflicting} with conflicting values), {totals.backward} backward stamps"
    )
    return table


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="memorywam-convert",
        description="Convert rosbag2 bags (mcap/sqlite3, directories or single files) to MemoryWAM episodes (HDF5).",
    )
    p.add_argument("bags", nargs="+", type=Path, metavar="BAG", help="bag directory or .mcap/.db3 file")
    p.add_argument("--out", required=True, type=Path, help="output directory for <bag>.hdf5 episodes")
    p.add_argument("--config", type=Path, default=None, help="topic mapping YAML (default: config/record_topics.yaml)")
    p.add_argument("--instruction", default=None, help="instruction text (wins over topic and config)")
    p.add_argument(
        "--msg",
        action="append",
        default=[],
        type=Path,
        metavar="DEFINITION.msg",
        help="custom message definition at <pkg>/msg/<Type>.msg, or a folder of them (repeatable)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing episode files")
    p.add_argument("--split-topic", default=None, help="start a new episode at each message on this topic")
    p.add_argument(
        "--distro",
        default=None,
        choices=["humble", "iron", "jazzy", "kilted"],
        help="type store for standard messages (default: the bag's ros_distro, else kilted)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console
    from rich.markup import escape

    # messages are printed with soft_wrap: rich would otherwise break them at the console width (80
    # columns in a log file), mid-phrase, and a user grepping the log for the error would miss it
    console = Console(stderr=True)
    try:
        cfg = load_config(args.config or default_config_path())
    except ConfigError as exc:
        console.print(f"[red]config error:[/red] {escape(str(exc))}", soft_wrap=True)
        return 2
    reports: list[ConversionReport] = []
    names: dict[str, Path] = {}
    for bag in args.bags:
        stem = bag_name(bag)
        if stem in names:
            reports.append(ConversionReport(bag, error=f"output name {stem!r} already used by {names[stem]}"))
            continue
        names[stem] = bag
        r = convert_bag(
            bag,
            cfg,
            args.out,
            instruction=args.instruction,
            overwrite=args.overwrite,
            split_topic=args.split_topic,
            msg_paths=args.msg,
            distro=args.distro,
            progress=not args.quiet and sys.stderr.isatty(),
        )
        for note in r.notes:
            console.print(f"[yellow]{escape(str(bag))}:[/yellow] {escape(note)}", soft_wrap=True)
        if r.error:  # the error never repeats the bag path
            console.print(f"[red]{escape(str(bag))}: {escape(r.error)}[/red]", soft_wrap=True)
        reports.append(r)
    console.print(summary_table(reports))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
