"""The ``file`` and ``stdout`` exporters: one JSON line per item.

A line for a Snapshot is exactly its body as the master exporter sends it
(a node body carries "node_name"). A line for a ResourceMetrics item, from a
pipeline without a snapshot builder used as a tap, is::

    {"resource": {...}, "metrics": [{"name", "kind", "points": [
        {"attributes", "time_unix_nano", "value", "delta", "interval_s"}]}]}

``value`` is null for a point without a sample (staleness marker) and, as in
OTLP's JSON encoding, the strings "NaN", "Infinity" or "-Infinity" for
non-finite floats. Histogram and summary points carry their count as
``value``. Lines are serialized with orjson, so integers stay integers.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
from dataclasses import dataclass

import orjson

from pipeline.component import ComponentContext, ConfigError, EmptyConfig, Exporter, Item, Snapshot
from pipeline.config import raise_errors
from pipeline.exporters.queue import MIB
from pipeline.logs import event
from pipeline.model import Metric, ResourceMetrics


@dataclass
class FileExporterConfig:
    """Options of the ``file`` exporter.

    ``path`` is the file to append to. ``flush_each_batch`` flushes after
    every export call (otherwise when the write buffer fills and at
    shutdown). ``max_size_mib`` above 0 rotates the file before a line would
    take it past that size: ``path`` becomes ``path.1``, ``path.1`` becomes
    ``path.2``, and so on, keeping ``max_files`` rotated files.
    """

    path: str = ""
    flush_each_batch: bool = True
    max_size_mib: float = 0.0
    max_files: int = 5

    def validate(self) -> None:
        errors: list[ConfigError] = []
        if not self.path:
            errors.append(ConfigError("path", "missing path: set the file to write JSON Lines to"))
        if self.max_size_mib < 0:
            errors.append(
                ConfigError(
                    "max_size_mib", f"invalid value {self.max_size_mib}: use 0 (no rotation) or a size above 0"
                )
            )
        if self.max_files < 1:
            errors.append(ConfigError("max_files", f"invalid value {self.max_files}: use 1 or more"))
        raise_errors(errors)


def item_line(item: Item) -> bytes:
    """Serialize one item as a JSON line without the newline."""
    if isinstance(item, Snapshot):
        return orjson.dumps(item.body)
    return orjson.dumps(resource_metrics_object(item))


def resource_metrics_object(rm: ResourceMetrics) -> dict:
    """Build the JSON object of a ResourceMetrics line."""
    return {"resource": rm.attrs, "metrics": [_metric_object(m) for m in rm.metrics]}


def _metric_object(metric: Metric) -> dict:
    n = len(metric.values)
    deltas = metric.deltas or (None,) * n
    intervals = metric.intervals or (None,) * n
    points = [
        {
            "attributes": attrs,
            "time_unix_nano": time_ns,
            "value": _json_float(value),
            "delta": _json_float(delta),
            "interval_s": interval,
        }
        for attrs, time_ns, value, delta, interval in zip(
            metric.attrs, metric.times, metric.values, deltas, intervals
        )
    ]
    return {"name": metric.name, "kind": metric.kind.value, "points": points}


def _json_float(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


class _JsonLinesExporter(Exporter):
    """Shared work of the file and stdout exporters: serialize, write, count."""

    def __init__(self, config, context: ComponentContext) -> None:
        super().__init__(config, context)
        self.id = context.component_id
        self._lock = threading.Lock()
        self._buffered = 0  # lines written but not flushed yet

    def export(self, items: list[Item], now_ns: int) -> None:
        """Write one line per item; a failed write is counted and logged, not raised."""
        if not items:
            return
        lines = [item_line(item) + b"\n" for item in items]
        with self._lock:
            earlier = self._buffered
            try:
                written = self._write(lines)
            except (OSError, ValueError) as err:
                # Counts the batch and the earlier unflushed lines as lost,
                # although some of them may have reached the file.
                self._discard()
                self._write_failed(err, earlier + len(lines))
                return
        self.telemetry.add("otelsnap_exporter_written_lines", written, exporter=self.id)

    def _write_failed(self, err: Exception, lines: int) -> None:
        self.telemetry.add("otelsnap_exporter_dropped_lines", lines, exporter=self.id, reason="write_error")
        event(self.log, "write_failed", logging.ERROR, every_s=60, exporter=self.id, lines=lines, error=err)

    def _write(self, lines: list[bytes]) -> int:
        """Write ``lines``; return how many reached the output (earlier buffered ones included)."""
        raise NotImplementedError

    def _discard(self) -> None:
        """Drop what a failed write left buffered."""


class FileExporter(_JsonLinesExporter):
    """Append JSON Lines to a file, with optional rotation by size."""

    type_name = "file"
    Config = FileExporterConfig

    def __init__(self, config: FileExporterConfig, context: ComponentContext) -> None:
        super().__init__(config, context)
        self._file = None
        self._size = 0
        self._max_bytes = int(config.max_size_mib * MIB)

    def start(self) -> None:
        """Open ``path`` for appending; raise ConfigError naming the option when it cannot be opened."""
        directory = os.path.dirname(self.config.path)
        try:
            if directory:
                os.makedirs(directory, exist_ok=True)
            # A process killed while writing can leave half a line at the end.
            _truncate_partial_line(self.config.path)
            self._open()
        except OSError as err:
            # makedirs reports a file in place of the directory as "File exists".
            reason = f"{directory!r} is not a directory" if isinstance(err, FileExistsError) else err.strerror or err
            raise ConfigError(
                f"exporters.{self.id}.path",
                f"cannot open {self.config.path!r} for writing: {reason}; "
                "set a path in a directory otelsnap can write to",
            ) from err
        event(self.log, "exporter_started", exporter=self.id, path=self.config.path)

    def _open(self) -> None:
        self._file = open(self.config.path, "ab")
        self._size = self._file.tell()

    def _write(self, lines: list[bytes]) -> int:
        if self._file is None:
            raise ValueError(f"exporter {self.id} is not started or already shut down")
        for line in lines:
            if self._max_bytes and self._size and self._size + len(line) > self._max_bytes:
                self._rotate()
            self._file.write(line)
            self._size += len(line)
            self._buffered += 1
        if not self.config.flush_each_batch:
            return 0
        self._file.flush()
        return self._flushed()

    def _flushed(self) -> int:
        written, self._buffered = self._buffered, 0
        return written

    def _rotate(self) -> None:
        """Shift path.N to path.N+1 (the oldest is overwritten) and start a new file."""
        self._file.close()
        self.telemetry.add("otelsnap_exporter_written_lines", self._flushed(), exporter=self.id)
        path = self.config.path
        for index in range(self.config.max_files - 1, 0, -1):
            if os.path.exists(f"{path}.{index}"):
                os.replace(f"{path}.{index}", f"{path}.{index + 1}")
        os.replace(path, f"{path}.1")
        self._open()

    def _discard(self) -> None:
        """Reopen the file after a failed write, dropping the buffer and any partial last line."""
        self._buffered = 0
        if self._file is None:
            return
        try:
            self._file.close()
        except OSError:
            pass  # closing flushes again; the buffered lines are the loss counted here
        try:
            _truncate_partial_line(self.config.path)
            self._open()
        except OSError as err:
            self._file = None
            event(self.log, "reopen_failed", logging.ERROR, exporter=self.id, path=self.config.path, error=err)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            if self._file is None:
                return
            try:
                self._file.close()
            except OSError as err:
                self._write_failed(err, self._flushed())
            else:
                self.telemetry.add("otelsnap_exporter_written_lines", self._flushed(), exporter=self.id)
            self._file = None


def _truncate_partial_line(path: str) -> None:
    """Cut a regular file back to its last newline, so every line stays valid JSON."""
    if not os.path.isfile(path):
        return
    with open(path, "r+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        position = end
        while position > 0:
            start = max(0, position - 65536)
            handle.seek(start)
            chunk = handle.read(position - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            position = start
        else:
            keep = 0
        if keep != end:
            handle.truncate(keep)


class StdoutExporter(_JsonLinesExporter):
    """Write JSON Lines to standard output, flushed after every batch.

    When the reader of standard output exits (``otelsnap replay rec | head``),
    the exporter logs ``stdout_closed`` once at info level and counts the
    lines of that and every later batch as dropped, without writing them.
    """

    type_name = "stdout"
    Config = EmptyConfig

    def __init__(self, config, context: ComponentContext) -> None:
        super().__init__(config, context)
        self._stdout_closed = False

    def _write(self, lines: list[bytes]) -> int:
        if self._stdout_closed:
            self._count_closed(len(lines))
            return 0
        # sys.stdout is looked up on every call so redirection works.
        out = sys.stdout
        try:
            out.write(b"".join(lines).decode("utf-8"))
            out.flush()
        except BrokenPipeError:
            # NOTE: part of the batch may have reached the reader before the
            # pipe closed; the whole batch is counted as dropped.
            self._stdout_closed = True
            _point_stdout_at_devnull()
            self._count_closed(len(lines))
            event(
                self.log, "stdout_closed", logging.INFO, exporter=self.id,
                hint="the reader of standard output exited; later lines are dropped",
            )  # fmt: skip
            return 0
        return len(lines)

    def _count_closed(self, lines: int) -> None:
        self.telemetry.add("otelsnap_exporter_dropped_lines", lines, exporter=self.id, reason="stdout_closed")

    def shutdown(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            if self._stdout_closed:
                return
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                self._stdout_closed = True
                _point_stdout_at_devnull()


def _point_stdout_at_devnull() -> None:
    """Send later writes to standard output to /dev/null, so Python's flush at exit does not fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError):
        pass  # a replaced sys.stdout without a file descriptor (tests)
