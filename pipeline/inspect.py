"""``otelsnap inspect``: what a recording contains.

    otelsnap inspect testdata/atlhyper-six-nodes/two-scrapes.otlprec

Prints the time span, the requests by transport, the resources
(service.name / service.instance.id) and every metric name with its type
and point count. ``--json`` prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from pipeline.convert_cli import format_time_ns
from pipeline.model import MetricKind
from pipeline.recording import RecordingError, RecordingReader


@dataclass
class MetricStats:
    kind: str
    prom_type: str = ""
    points: int = 0
    stale_points: int = 0
    series: set = field(default_factory=set)


@dataclass
class RecordingStats:
    """Totals over a recording, filled by ``scan``."""

    requests: int = 0
    body_bytes: int = 0
    points: int = 0
    stale_points: int = 0
    rejected_points: int = 0
    undecodable_requests: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    transports: dict[str, int] = field(default_factory=dict)
    # (service.name, service.instance.id) → [requests, points]
    resources: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    metrics: dict[str, MetricStats] = field(default_factory=dict)
    error: RecordingError | None = None


def _kind_name(metric) -> str:
    if metric.kind is MetricKind.SUM:
        return "sum (monotonic)" if metric.monotonic else "sum"
    return metric.kind.value


def scan(path: str | os.PathLike) -> RecordingStats:
    """Read a whole recording and count what it holds.

    A recording that cannot be read to its end keeps the counts of the
    records before the bad one and sets ``error``.
    """
    stats = RecordingStats()
    reader = RecordingReader(path)
    try:
        for record in reader:
            _add_record(stats, record)
    except RecordingError as exc:
        stats.error = exc
    finally:
        reader.close()
    return stats


def _add_record(stats: RecordingStats, record) -> None:
    stats.requests += 1
    stats.body_bytes += len(record.body)
    stats.first_ns = record.received_ns if stats.first_ns is None else min(stats.first_ns, record.received_ns)
    stats.last_ns = record.received_ns if stats.last_ns is None else max(stats.last_ns, record.received_ns)
    label = f"{record.transport} {record.content_type or '?'}" + (f" {record.compression}" if record.compression else "")
    stats.transports[label] = stats.transports.get(label, 0) + 1
    try:
        result = record.decode()
    except (DecodeError, json_format.ParseError):
        stats.undecodable_requests += 1
        return
    stats.rejected_points += result.rejected
    seen_resources = set()
    for rm in result.batch:
        resource = (rm.attrs.get("service.name", ""), rm.attrs.get("service.instance.id", ""))
        counts = stats.resources.setdefault(resource, [0, 0])
        if resource not in seen_resources:
            counts[0] += 1
            seen_resources.add(resource)
        for metric in rm.metrics:
            entry = stats.metrics.get(metric.name)
            if entry is None:
                entry = stats.metrics[metric.name] = MetricStats(_kind_name(metric), metric.prom_type)
            stale = sum(1 for v in metric.values if v is None)
            entry.points += len(metric.values)
            entry.stale_points += stale
            entry.series.update((resource, tuple(sorted(a.items()))) for a in metric.attrs)
            counts[1] += len(metric.values)
            stats.points += len(metric.values)
            stats.stale_points += stale


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    lines = []
    for row in [headers, *rows]:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def render_text(path: str, stats: RecordingStats) -> str:
    """Render the stats as the table ``otelsnap inspect`` prints."""
    lines = [f"recording: {path}"]
    if stats.first_ns is not None:
        span_s = (stats.last_ns - stats.first_ns) / 1e9
        lines.append(
            f"time span: {format_time_ns(stats.first_ns)} to {format_time_ns(stats.last_ns)} ({span_s:.3f} s)"
        )
    lines.append(f"requests: {stats.requests} ({stats.body_bytes} body bytes)")
    for label, n in sorted(stats.transports.items()):
        lines.append(f"  {label}: {n}")
    lines.append(
        f"points: {stats.points} (staleness markers {stats.stale_points}, "
        f"rejected by the decoder {stats.rejected_points})"
    )
    if stats.undecodable_requests:
        lines.append(f"requests that are not valid OTLP: {stats.undecodable_requests}")
    lines.append("")
    lines.append(f"resources: {len(stats.resources)}")
    rows = [[name, inst, str(c[0]), str(c[1])] for (name, inst), c in sorted(stats.resources.items())]
    lines += _table(["service.name", "service.instance.id", "requests", "points"], rows, {2, 3})
    lines.append("")
    lines.append(f"metrics: {len(stats.metrics)}")
    rows = [
        [name, m.kind, m.prom_type or "-", str(len(m.series)), str(m.points), str(m.stale_points)]
        for name, m in sorted(stats.metrics.items())
    ]
    lines += _table(["name", "type", "prometheus.type", "series", "points", "stale"], rows, {3, 4, 5})
    return "\n".join(lines)


def render_json(path: str, stats: RecordingStats) -> bytes:
    body = {
        "recording": path,
        "requests": stats.requests,
        "first_received_unix_nano": stats.first_ns,
        "last_received_unix_nano": stats.last_ns,
        "points": stats.points,
        "stale_points": stats.stale_points,
        "rejected_points": stats.rejected_points,
        "transports": stats.transports,
        "resources": [
            {"service.name": n, "service.instance.id": i, "requests": c[0], "points": c[1]}
            for (n, i), c in sorted(stats.resources.items())
        ],
        "metrics": {
            name: {
                "type": m.kind,
                "prometheus.type": m.prom_type,
                "series": len(m.series),
                "points": m.points,
                "stale_points": m.stale_points,
            }
            for name, m in sorted(stats.metrics.items())
        },
        "error": None if stats.error is None else {"offset": stats.error.offset, "message": stats.error.reason},
    }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", metavar="FILE", help="recording to read (.otlprec or .otlprec.gz)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def main(args: argparse.Namespace) -> int:
    try:
        stats = scan(args.recording)
    except OSError as exc:
        print(f"otelsnap inspect: cannot read {args.recording}: {exc}", file=sys.stderr)
        return 1
    if stats.error is not None and stats.requests == 0:
        # Nothing was read (not a recording, or damaged from the first record): no empty tables.
        print(f"otelsnap inspect: {args.recording}: {stats.error}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.buffer.write(render_json(args.recording, stats) + b"\n")
    else:
        print(render_text(args.recording, stats))
    if stats.error is not None:
        print(
            f"otelsnap inspect: {args.recording}: {stats.error} "
            f"({stats.error.records_read} records read before it)",
            file=sys.stderr,
        )
        return 1
    return 0
