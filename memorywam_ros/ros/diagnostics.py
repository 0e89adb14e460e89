"""diagnostic_msgs helpers: one DiagnosticStatus per concern, values formatted consistently."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

__all__ = ["LEVELS", "make_array", "make_status"]

LEVELS = {"ok": DiagnosticStatus.OK, "warn": DiagnosticStatus.WARN, "error": DiagnosticStatus.ERROR}


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def make_status(name: str, hardware_id: str, level: str, message: str, values: Mapping[str, Any]):
    status = DiagnosticStatus()
    status.level = LEVELS[level]
    status.name = name
    status.hardware_id = hardware_id
    status.message = message
    status.values = [KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()]
    return status


def make_array(stamp: Any, statuses: list[Any]):
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = statuses
    return arr


def values_of(status: Any) -> dict[str, str]:
    """DiagnosticStatus → {key: value} (tests and tools)."""
    return {kv.key: kv.value for kv in status.values}


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1e3


def publish_diagnostics(node: Any) -> None:
    """The policy node's /diagnostics: state, latency, inter-chunk gap, deadline misses, hold ticks
    per chunk and the margin (lead x control period - latency; p99: against the p99 latency), cache,
    inputs."""
    now = node.now_s()
    lat, gap = node.stats["latency"], node.stats["gap"]
    level = {"disabled": "ok", "running": "ok", "holding": "warn", "error": "error"}[node.state]
    values: dict[str, Any] = {
        "state": node.state,
        "reason": node.reason,
        "instruction": node.instruction,
        "chunks_executed": node.counters["chunks"],
        "chunks_rejected": node.counters["rejected"],
        "inference_errors": node.counters["errors"],
        "stalls": node.counters["stalls"],  # holds for stale inputs / an untrusted joint state
        "latency_last_ms": _ms(lat.last),
        "latency_p50_ms": _ms(lat.percentile(50)),
        "latency_p99_ms": _ms(lat.percentile(99)),
        "mosaic_last_ms": _ms(node.stats["mosaic"].last),
        "model_last_ms": _ms(node.stats["model"].last),
    }
    for k, v in node.last_latency.items():
        values[f"model_{k}_ms"] = _ms(float(v))
    hold, lead_s = node.stats["hold_ticks"], node.lead * node.step_s
    values.update({
        "chunk_gap_last_ms": _ms(gap.last),
        "chunk_gap_p50_ms": _ms(gap.percentile(50)),
        "chunk_gap_p99_ms": _ms(gap.percentile(99)),
        # the lead schedule: inference has lead x control period before its chunk is due
        "observation_lead": node.lead,
        "deadline_misses": node.counters["deadline_misses"],
        "deadline_chunks": node.counters["deadline_chunks"],
        "hold_ticks_total": node.counters["hold_ticks"],
        "hold_ticks_last": None if hold.last is None else int(hold.last),
        "hold_ticks_p50": hold.percentile(50),
        "hold_ticks_p99": hold.percentile(99),
        "deadline_margin_last_ms": None if lat.last is None else _ms(lead_s - lat.last),
        "deadline_margin_p99_ms": None if lat.percentile(99) is None else _ms(lead_s - lat.percentile(99)),
        "cache_bytes": node.cache_bytes,
        "command_rate_hz": node.command_meter.rate(now),
        # the command thread itself: periods it could not run in (no command sent) and its worst
        # lateness since the previous diagnostics message (a loaded machine, a GIL-holding callback)
        "control_ticks_skipped": node._control_loop.skipped,
        "control_tick_late_max_ms": _ms(node._control_loop.take_late()),
    })
    name = node.get_fully_qualified_name()
    msg = node.reason or node.state
    statuses = [make_status(f"{name}: policy", "memorywam", level, f"{node.state}: {msg}", values)]

    in_values: dict[str, Any] = {}
    stale = node._stale(now)
    for cname, cam in node.cameras.items():
        in_values[f"{cname}.topic"] = cam.topic
        in_values[f"{cname}.rate_hz"] = cam.meter.rate(now)
        in_values[f"{cname}.age_ms"] = _ms(cam.age(now))
        in_values[f"{cname}.dropped"] = cam.dropped
    for src in node.joints.sources:
        key = f"joints:{src.spec.topic}"
        in_values[f"{key}.rate_hz"] = src.meter.rate(now)
        in_values[f"{key}.age_ms"] = _ms(src.meter.age(now))
        in_values[f"{key}.dropped"] = src.dropped
    in_level = "warn" if stale else "ok"
    in_msg = f"stale: {', '.join(stale)}" if stale else "all inputs fresh"
    statuses.append(make_status(f"{name}: inputs", "memorywam", in_level, in_msg, in_values))
    node._diag_pub.publish(make_array(node.get_clock().now().to_msg(), statuses))
