"""``otelsnap convert``: Prometheus text scrapes → one OTLP recording.

    otelsnap convert --out rec.otlprec --strip-prefix otel_ \\
        scrape1.prom@2025-12-22T10:00:00Z scrape2.prom@+15s

Each scrape file becomes one recorded Export request, converted as a
Collector's prometheus receiver would convert it (pipeline.convert), with
the scrape's time as every point's timestamp and as the request's arrival
time (plus ``--arrival-delay-ms``). One converter serves all scrapes, so
series that disappear get staleness markers and ``--start-time
first-point`` keeps start times across scrapes, as one collector would.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import os
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from google.protobuf import json_format

from pipeline import promtext
from pipeline.convert import (
    NODE_EXPORTER_TYPES,
    START_TIME_MODES,
    ConvertOptions,
    Converter,
    parse_type_table,
)
from pipeline.recording import CONTENT_TYPE_JSON, CONTENT_TYPE_PROTOBUF, RecordingWriter

_UNITS_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
# A Unix time after 2200-01-01T00:00:00Z is taken as a number in the wrong
# unit (milliseconds read as seconds), not as a real scrape time.
LATEST_SCRAPE_NS = 7_258_118_400 * 1_000_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


class TimeSpecError(ValueError):
    """A scrape time that is neither RFC 3339, Unix seconds nor +DURATION."""


def parse_duration_ns(text: str) -> int:
    """Parse ``15s``, ``500ms``, ``1.5m``, ``2h`` into nanoseconds."""
    for unit in sorted(_UNITS_NS, key=len, reverse=True):
        if text.endswith(unit):
            number = text[: -len(unit)]
            try:
                return int(Decimal(number) * _UNITS_NS[unit])
            except InvalidOperation:
                break
    raise TimeSpecError(f"invalid duration {text!r}: use a number with ns, us, ms, s, m or h (e.g. 15s)")


def parse_time_ns(text: str, previous_ns: int | None = None, number_unit: str = "s") -> int:
    """Parse a scrape time: RFC 3339 (``2025-12-22T10:00:00.250Z``), a Unix
    time in ``number_unit`` (``1766397600.25`` in s) or ``+DURATION`` after
    ``previous_ns``."""
    text = text.strip()
    if text.startswith("+"):
        if previous_ns is None:
            raise TimeSpecError(f"relative time {text!r} needs an absolute time on an earlier scrape")
        return previous_ns + parse_duration_ns(text[1:])
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = None
    if number is not None:
        if not number.is_finite():
            raise TimeSpecError(f"invalid time {text!r}: use a finite Unix time, RFC 3339 or +DURATION")
        time_ns = int(number * _UNITS_NS[number_unit])
        if time_ns > LATEST_SCRAPE_NS:
            raise TimeSpecError(_implausible_time(text, number, number_unit))
        return time_ns
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise TimeSpecError(
            f"invalid time {text!r}: use RFC 3339 (2025-12-22T10:00:00Z), Unix seconds or +DURATION"
        ) from None
    if moment.tzinfo is None:
        raise TimeSpecError(f"invalid time {text!r}: add a time zone, e.g. Z for UTC")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _implausible_time(text: str, number: Decimal, number_unit: str) -> str:
    """Explain a Unix time after the year 2200 and name the unit it probably has."""
    message = f"time {text} is after the year 2200 as Unix {_UNIT_NAMES[number_unit]}"
    finer = list(_UNIT_NAMES)[list(_UNIT_NAMES).index(number_unit) + 1:]
    for unit in finer:
        if number * _UNITS_NS[unit] <= LATEST_SCRAPE_NS:
            return f"{message}; it looks like {_UNIT_NAMES[unit]}: use --time-unit {unit}"
    return f"{message}; check the number"


def format_time_ns(time_ns: int) -> str:
    """Format Unix nanoseconds as RFC 3339 UTC with milliseconds."""
    moment = _EPOCH + dt.timedelta(microseconds=time_ns // 1_000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class Scrape:
    path: str
    time_ns: int


def parse_scrape_args(
    specs: list[str],
    start_ns: int | None = None,
    interval_ns: int | None = None,
    previous_ns: int | None = None,
    number_unit: str = "s",
) -> list[Scrape]:
    """Turn ``FILE[@TIME]`` arguments into scrapes with absolute times.

    A file without ``@TIME`` comes ``interval_ns`` after the previous scrape
    (the first one at ``start_ns``); ``previous_ns`` is the time of a scrape
    before the first spec, if any.
    """
    scrapes: list[Scrape] = []
    previous = previous_ns
    for spec in specs:
        path, at, when = spec.rpartition("@")
        if not at:
            path = spec
            if previous is None:
                if start_ns is None:
                    raise TimeSpecError(f"{spec}: no scrape time: write {spec}@TIME or give --start")
                time_ns = start_ns
            else:
                if interval_ns is None:
                    raise TimeSpecError(f"{spec}: no scrape time: write {spec}@+15s or give --interval")
                time_ns = previous + interval_ns
        else:
            time_ns = parse_time_ns(when, previous, number_unit)
        if previous is not None and time_ns <= previous:
            raise TimeSpecError(f"{spec}: scrape time must be later than the previous scrape's")
        scrapes.append(Scrape(path, time_ns))
        previous = time_ns
    return scrapes


def read_times_file(path: str, number_unit: str = "s") -> list[Scrape]:
    """Read a times file: one ``SCRAPE_FILE TIME`` per line, ``#`` comments.

    Relative scrape paths are relative to the times file's folder; TIME may
    be RFC 3339, a Unix time in ``number_unit`` or +DURATION after the
    previous line.
    """
    base = Path(path).parent
    specs = []
    for lineno, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TimeSpecError(f"{path}:{lineno}: expected 'SCRAPE_FILE TIME', got {raw.strip()!r}")
        specs.append(f"{base / parts[0]}@{parts[1]}")
    return parse_scrape_args(specs, number_unit=number_unit)


@dataclass
class ConvertSummary:
    requests: int = 0
    points: int = 0
    resources: set = field(default_factory=set)
    metric_names: set = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)


def _read_text(path: str) -> str:
    if path.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    return Path(path).read_text(encoding="utf-8")


def count_points(request) -> int:
    """Count the data points of an ExportMetricsServiceRequest."""
    total = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind = metric.WhichOneof("data")
                if kind:
                    total += len(getattr(metric, kind).data_points)
    return total


def convert_scrapes(
    scrapes: list[Scrape],
    out: str | os.PathLike,
    options: ConvertOptions,
    *,
    arrival_delay_ns: int = 0,
    transport: str = "grpc",
    json_body: bool = False,
    compression: str = "gzip",
) -> ConvertSummary:
    """Convert scrape files in order into a recording at ``out``.

    The recording is written to a temporary file in the same directory and
    renamed to ``out`` only when every scrape converted. Raises ValueError
    naming the file and line on invalid text and OSError on unreadable
    files; ``out`` is then left as it was.
    """
    out = os.fspath(out)
    temp_path = _temporary_path(out)
    try:
        summary = _write_recording(
            scrapes, temp_path, options, arrival_delay_ns, transport, json_body, compression
        )
        os.chmod(temp_path, _final_mode(out))
        os.replace(temp_path, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_path)
        raise
    return summary


def _temporary_path(out: str) -> str:
    """Create an empty file next to ``out`` that keeps its ``.gz`` ending."""
    directory, name = os.path.split(out)
    suffix = ".tmp.gz" if out.endswith(".gz") else ".tmp"
    try:
        handle, path = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=directory or ".")
    except OSError as exc:
        raise OSError(f"cannot write {out}: {exc.strerror or exc}") from None
    os.close(handle)
    return path


def _final_mode(out: str) -> int:
    """Return the permission bits ``out`` keeps, or those a new file gets under the umask."""
    try:
        return stat.S_IMODE(os.stat(out).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _write_recording(
    scrapes: list[Scrape],
    path: str,
    options: ConvertOptions,
    arrival_delay_ns: int,
    transport: str,
    json_body: bool,
    compression: str,
) -> ConvertSummary:
    converter = Converter(options)
    summary = ConvertSummary()
    content_type = CONTENT_TYPE_JSON if json_body else CONTENT_TYPE_PROTOBUF
    with RecordingWriter(path, flush_each=False) as writer:
        for scrape in scrapes:
            try:
                exposition = promtext.parse(_read_text(scrape.path))
            except promtext.ExpositionError as exc:
                raise ValueError(f"{scrape.path}: {exc}") from None
            summary.warnings.extend(f"{scrape.path}: {warning}" for warning in exposition.warnings)
            request = converter.convert(exposition, scrape.time_ns)
            if json_body:
                body = json_format.MessageToJson(request, indent=None).encode()
            else:
                body = request.SerializeToString()
            writer.write(scrape.time_ns + arrival_delay_ns, transport, content_type, compression, body)
            summary.requests += 1
            summary.points += count_points(request)
            for rm in request.resource_metrics:
                summary.resources.add(
                    tuple((kv.key, kv.value.string_value) for kv in rm.resource.attributes)
                )
                for sm in rm.scope_metrics:
                    summary.metric_names.update(m.name for m in sm.metrics)
    summary.warnings.extend(converter.warnings)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "TIME is RFC 3339 (2025-12-22T10:00:00Z), a Unix time (1766397600.5; unit\n"
        "set by --time-unit) or +DURATION after the previous scrape (+15s, +500ms, +1m).\n\n"
        "example:\n"
        "  otelsnap convert --out rec.otlprec --strip-prefix otel_ \\\n"
        "      scrape1.prom@2025-12-22T10:00:00Z scrape2.prom@+15s"
    )
    parser.add_argument(
        "scrapes", nargs="*", metavar="FILE[@TIME]",
        help="Prometheus text scrapes in time order (.gz accepted)",
    )
    parser.add_argument("--out", required=True, help="recording to write (.otlprec; .gz compresses it)")
    parser.add_argument("--times", metavar="FILE", help="file of 'SCRAPE_FILE TIME' lines, instead of or before FILE[@TIME]")
    parser.add_argument(
        "--time-unit", choices=["s", "ms", "us", "ns"], default="s",
        help="unit of TIMEs written as plain numbers (default: s)",
    )
    parser.add_argument("--start", metavar="TIME", help="time of the first scrape when it has no @TIME")
    parser.add_argument("--interval", metavar="DURATION", help="gap between scrapes without @TIME (e.g. 15s)")
    parser.add_argument("--strip-prefix", default="", metavar="PREFIX", help="remove PREFIX from metric names (e.g. otel_)")
    parser.add_argument(
        "--types", metavar="FILE",
        help="type table for families without '# TYPE': 'GLOB TYPE' lines, first match wins "
        "(default: node_exporter's types)",
    )
    parser.add_argument("--job", default="", help="job for samples without a job label")
    parser.add_argument("--instance", default="", help="instance (host:port) for samples without an instance label")
    parser.add_argument("--scheme", default="http", help="url.scheme resource attribute (default: http)")
    parser.add_argument(
        "--start-time", choices=[m.replace("_", "-") for m in START_TIME_MODES], default="zero",
        help="zero: start_time_unix_nano 0 as collectors >= 0.140 send; first-point: a series' "
        "first point time, as collectors up to 0.139 send (default: zero)",
    )
    parser.add_argument("--no-staleness-markers", action="store_true", help="do not mark series that disappear between scrapes")
    parser.add_argument(
        "--scrape-series",
        action="store_true",
        help="add the scrape loop's Gauges (up, scrape_duration_seconds, scrape_samples_*, scrape_series_added) to every target",
    )
    parser.add_argument(
        "--scrape-duration-s",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="value of scrape_duration_seconds with --scrape-series, in seconds (default: 0)",
    )
    parser.add_argument("--transport", choices=["grpc", "http"], default="grpc", help="recorded transport (default: grpc)")
    parser.add_argument("--json", action="store_true", help="record OTLP/JSON bodies instead of protobuf")
    parser.add_argument(
        "--compression", choices=["gzip", "none"], default="gzip",
        help="recorded original compression; bodies are stored uncompressed either way (default: gzip, "
        "the collector exporter's default)",
    )
    parser.add_argument("--arrival-delay-ms", type=float, default=0.0, help="arrival time after the scrape time, in ms (default: 0)")


def main(args: argparse.Namespace) -> int:
    try:
        unit = args.time_unit
        scrapes = read_times_file(args.times, unit) if args.times else []
        start_ns = parse_time_ns(args.start, number_unit=unit) if args.start else None
        interval_ns = parse_duration_ns(args.interval) if args.interval else None
        if args.scrapes:
            previous_ns = scrapes[-1].time_ns if scrapes else None
            scrapes += parse_scrape_args(args.scrapes, start_ns, interval_ns, previous_ns, unit)
        if not scrapes:
            print("otelsnap convert: no scrape files given: pass FILE@TIME or --times FILE", file=sys.stderr)
            return 2
        type_table = NODE_EXPORTER_TYPES
        if args.types:
            type_table = parse_type_table(Path(args.types).read_text(), args.types)
        options = ConvertOptions(
            strip_prefix=args.strip_prefix,
            type_table=type_table,
            job=args.job,
            instance=args.instance,
            scheme=args.scheme,
            start_time=args.start_time.replace("-", "_"),
            staleness_markers=not args.no_staleness_markers,
            scrape_series=args.scrape_series,
            scrape_duration_s=args.scrape_duration_s,
        )
        summary = convert_scrapes(
            scrapes,
            args.out,
            options,
            arrival_delay_ns=int(args.arrival_delay_ms * 1_000_000),
            transport=args.transport,
            json_body=args.json,
            compression="" if args.compression == "none" else args.compression,
        )
    except (TimeSpecError, ValueError, OSError) as exc:
        print(f"otelsnap convert: {exc}", file=sys.stderr)
        return 1
    for warning in summary.warnings:
        print(f"otelsnap convert: warning: {warning}", file=sys.stderr)
    print(
        f"wrote {args.out}: {summary.requests} requests, {len(summary.resources)} resources, "
        f"{len(summary.metric_names)} metric names, {summary.points} points "
        f"({format_time_ns(scrapes[0].time_ns)} to {format_time_ns(scrapes[-1].time_ns)})",
        file=sys.stderr,
    )
    return 0
