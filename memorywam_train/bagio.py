"""Reading rosbag2 bags with `rosbags` (no ROS): bag directories and single .db3/.mcap files.

Why not just `rosbags.rosbag2.Reader(path).messages()`:

* Bags written by real rosbag2 can list messages in metadata.yaml that `Reader(<directory>)`
  then never yields: rosbags matches the metadata's connections against the storage file's on
  the offered-QoS strings, and those differ between rosbag2 versions (see
  ../shared/testdata/SOURCES.md; the ros2/rosbag2 talker bags show it). `BagSource.messages`
  counts what it iterated per topic; a topic that metadata says has N > 0 messages but that
  yielded none is read again straight from the storage file(s), and if that also yields nothing
  it is an error, never a silently empty episode.
* Fewer messages than metadata.yaml promises means a truncated/corrupt bag: an error.
* Custom types (ARX `arx5_arm_msg/msg/RobotStatus`, `arm_control/msg/JointControl`) come from the
  definitions stored in the bag (rosbag2 >= Iron stores them) or from `.msg` files.
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosbags.interfaces import MessageDefinitionFormat
from rosbags.rosbag2 import Reader
from rosbags.rosbag2 import reader as _reader_mod
from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

log = logging.getLogger(__name__)

_DISTROS = {
    "humble": Stores.ROS2_HUMBLE,
    "iron": Stores.ROS2_IRON,
    "jazzy": Stores.ROS2_JAZZY,
    "kilted": Stores.ROS2_KILTED,
}
DEFAULT_DISTRO = "kilted"


class BagError(RuntimeError):
    """A bag that cannot be read (missing, corrupt, truncated, unknown types). `str()` names the
    bag; `reason` is the message without it, for callers that print the bag path themselves."""

    def __init__(self, reason: str, path: Path | None = None) -> None:
        self.reason, self.path = reason, path
        super().__init__(f"{path}: {reason}" if path is not None else reason)


@dataclass(frozen=True)
class TopicInfo:
    topic: str
    msgtype: str
    count: int  # as declared by metadata / storage summary


def msg_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (searched recursively) into .msg files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(p.rglob("*.msg"))
        elif p.is_file():
            out.append(p)
        else:
            raise BagError(f"message definition {p} does not exist")
    return out


def types_from_msg_files(paths: Iterable[str | Path]) -> dict[str, Any]:
    """Parse `<pkg>/msg/<Type>.msg` files; the type name comes from the path."""
    typs: dict[str, Any] = {}
    for f in msg_files(paths):
        if f.parent.name != "msg" or f.suffix != ".msg":
            raise BagError(f"{f}: .msg files must live at <package>/msg/<Type>.msg to name their type")
        name = f"{f.parent.parent.name}/msg/{f.stem}"
        try:
            typs.update(get_types_from_msg(f.read_text(), name))
        except Exception as exc:
            raise BagError(f"{f}: cannot parse message definition: {exc}") from exc
    return typs


def _storage_files(path: Path) -> list[Path]:
    meta = path / "metadata.yaml"
    files: list[Path] = []
    if meta.exists():
        import yaml

        try:
            info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
            files = [path / Path(x).name for x in info.get("relative_file_paths", [])]
            if (info.get("compression_mode") or "").lower() == "file":
                # file-compressed storage (.mcap.zstd) cannot be opened as a plain storage file
                return []
        except Exception:
            files = []
    if not files:
        files = sorted([*path.glob("*.mcap"), *path.glob("*.db3")])
    return [f for f in files if f.exists()]


def header_stamp_from_cdr(raw: bytes | memoryview) -> int:
    """header.stamp (ns) of a CDR message whose first field is std_msgs/Header, without decoding
    the rest (images are large; their stamps are needed long before their pixels)."""
    little = bytes(raw[1:2]) == b"\x01"
    sec, nsec = struct.unpack_from("<iI" if little else ">iI", raw, 4)
    return sec * 1_000_000_000 + nsec


class BagSource:
    """One rosbag2 bag (directory or storage file), opened for repeated message passes."""

    def __init__(
        self,
        path: str | Path,
        msg_paths: Sequence[str | Path] = (),
        distro: str | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagError("no such bag", self.path)
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            storage = sorted(f.name for f in (*self.path.glob("*.mcap"), *self.path.glob("*.db3")))
            if not storage:
                raise BagError("not a rosbag2 bag: no metadata.yaml and no .mcap/.db3 storage file", self.path)
            raise BagError(
                f"no metadata.yaml next to {', '.join(storage)} (a recording that was killed before it closed?): "
                "convert the storage file itself (e.g. memorywam-convert "
                f"{self.path / storage[0]}) or recreate metadata.yaml with `ros2 bag reindex {self.path}`",
                self.path,
            )
        if self.path.is_file() and self.path.suffix not in (".mcap", ".db3"):
            raise BagError("not a rosbag2 storage file (expected .mcap or .db3)", self.path)
        self.notes: list[str] = []
        self._fallback_topics: set[str] = set()
        self._message_compressed = False
        try:
            with Reader(self.path) as reader:
                self.topics: dict[str, TopicInfo] = {}
                for c in reader.connections:
                    prev = self.topics.get(c.topic)
                    count = c.msgcount + (prev.count if prev else 0)
                    self.topics[c.topic] = TopicInfo(c.topic, c.msgtype, count)
                self.ros_distro = reader.ros_distro
                self._message_compressed = reader.compression_mode == "message"
                conns = list(reader.connections)
        except BagError:
            raise
        except Exception as exc:
            hint = ""
            if "magic" in str(exc).lower():
                hint = "; an mcap recording that did not finish cleanly can be repaired with `mcap recover`"
            raise BagError(
                f"cannot open bag, corrupt or truncated? ({type(exc).__name__}: {exc}){hint}", self.path
            ) from exc
        if self.path.is_dir():
            # Directory readers only get definitions from the storage files; read them from
            # there too so custom types resolve even when metadata.yaml is the one opened.
            for f in _storage_files(self.path):
                try:
                    with Reader(f) as r:
                        conns += list(r.connections)
                except Exception:
                    pass
        self.typestore = self._build_typestore(conns, msg_paths, distro)

    # ------------------------------------------------------------------ types

    def _build_typestore(self, conns: list[Any], msg_paths: Sequence[str | Path], distro: str | None) -> Typestore:
        name = (distro or self.ros_distro or DEFAULT_DISTRO).lower()
        if name not in _DISTROS:
            if distro:
                raise BagError(f"unknown ROS distro {distro!r} (known: {', '.join(_DISTROS)})")
            # e.g. 'rosbags' (bags written by the rosbags library) or a distro newer than ours:
            # the standard messages we read have the same layout in all of them
            log.debug("%s: ros_distro %r unknown, using %s types", self.path, name, DEFAULT_DISTRO)
            name = DEFAULT_DISTRO
        store = get_typestore(_DISTROS[name])
        add: dict[str, Any] = {}
        # Definitions stored in the bag first: they are what was recorded. Standard types already
        # in the store are kept (identical CDR layout across Humble..Kilted for what we read).
        for c in conns:
            if (
                c.msgdef.format == MessageDefinitionFormat.NONE
                or not c.msgdef.data.strip()  # writers without definitions store ''
                or c.msgtype in store.fielddefs
            ):
                continue
            try:
                if c.msgdef.format == MessageDefinitionFormat.MSG:
                    parsed = get_types_from_msg(c.msgdef.data, c.msgtype)
                else:
                    parsed = {}
                    sep = "=" * 80 + "\n"
                    for block in c.msgdef.data.split(sep)[1:] or [c.msgdef.data]:
                        parsed.update(get_types_from_idl(block.split("\n", 1)[-1]))
            except Exception as exc:  # an unparsable embedded definition only matters if used
                self.notes.append(f"cannot parse stored definition of {c.msgtype}: {exc}")
                continue
            add.update({k: v for k, v in parsed.items() if k not in store.fielddefs})
        if msg_paths:
            extra = types_from_msg_files(msg_paths)
            add.update({k: v for k, v in extra.items() if k not in store.fielddefs and k not in add})
        if add:
            try:
                store.register(add)
            except Exception as exc:
                raise BagError(f"cannot register message types {sorted(add)}: {exc}", self.path) from exc
        return store

    def has_type(self, msgtype: str) -> bool:
        return msgtype in self.typestore.fielddefs

    def has_header(self, msgtype: str) -> bool:
        fields = self.typestore.fielddefs[msgtype][1]
        return bool(fields) and fields[0][0] == "header" and fields[0][1][1] == "std_msgs/msg/Header"

    def deserialize(self, raw: bytes | memoryview, msgtype: str) -> Any:
        return self.typestore.deserialize_cdr(raw, msgtype)

    # --------------------------------------------------------------- messages

    def _iter_reader(self, path: Path, topics: set[str], decompress: bool) -> Iterator[tuple[str, int, bytes]]:
        with Reader(path) as reader:
            conns = [c for c in reader.connections if c.topic in topics]
            if not conns:
                return
            for conn, t, raw in reader.messages(connections=conns):
                if decompress:  # per-message zstd ("message" compression mode)
                    raw = _reader_mod.zstd.decompress(raw)
                yield conn.topic, t, raw

    def _iter_fallback(self, topics: set[str]) -> Iterator[tuple[str, int, bytes]]:
        files = _storage_files(self.path) if self.path.is_dir() else []
        for f in files:
            yield from self._iter_reader(f, topics, self._message_compressed)

    def messages(self, topics: Iterable[str]) -> Iterator[tuple[str, int, bytes]]:
        """Yield (topic, receive time ns, raw CDR) for `topics`, per topic in storage order.

        Raises BagError when a topic yields fewer messages than the bag declares (truncated or
        corrupt), after trying the storage files directly for topics that yielded none.
        """
        wanted = {t for t in topics if t in self.topics}
        seen: Counter[str] = Counter()
        try:
            primary = wanted - self._fallback_topics
            if primary:
                for topic, t, raw in self._iter_reader(self.path, primary, False):
                    seen[topic] += 1
                    yield topic, t, raw
            empty = {t for t in primary if seen[t] == 0 and self.topics[t].count > 0 and self.path.is_dir()}
            if empty:
                self._fallback_topics |= empty
                self.notes.append(
                    f"metadata.yaml lists {sum(self.topics[t].count for t in empty)} messages on "
                    f"{sorted(empty)} that the directory reader did not yield (QoS metadata mismatch); "
                    "read the storage file(s) directly"
                )
            later = wanted & self._fallback_topics
            if later:
                for topic, t, raw in self._iter_fallback(later):
                    seen[topic] += 1
                    yield topic, t, raw
        except BagError:
            raise
        except Exception as exc:
            raise BagError(
                f"error while reading messages, bag corrupt or truncated? ({type(exc).__name__}: {exc})", self.path
            ) from exc
        short = {t: (seen[t], self.topics[t].count) for t in wanted if seen[t] < self.topics[t].count}
        if short:
            desc = ", ".join(f"{t}: read {a} of {b}" for t, (a, b) in sorted(short.items()))
            raise BagError(f"bag truncated or corrupt, fewer messages than declared ({desc})", self.path)
