"""Structured logging: one event name plus key=value fields per line.

    event("export_failed", endpoint=url, status=503, attempt=2)
    → level=warning logger=otelsnap.master event=export_failed endpoint=http://… status=503 attempt=2

Values with spaces or quotes are quoted. ``every_s`` rate-limits an event
per (logger, event, key) so a flood of the same error logs once per window
and reports how many were suppressed.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


def _render(value: Any) -> str:
    text = str(value)
    if text == "" or any(c in text for c in ' "=\n'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def format_fields(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={_render(v)}" for k, v in fields.items() if v is not None)


class KeyValueFormatter(logging.Formatter):
    """Format records as ``ts=… level=… logger=… event=… k=v …``."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        event_fields = getattr(record, "event_fields", None)
        if event_fields is not None:
            fields.update(event_fields)
        else:
            fields["msg"] = record.getMessage()
        line = format_fields(fields)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


KeyValueFormatter.converter = time.gmtime


def setup_logging(level: str = "info") -> None:
    """Send key=value lines to stderr at ``level``."""
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


_last_logged: dict[tuple, list] = {}
_lock = threading.Lock()


def event(
    logger: logging.Logger,
    name: str,
    level: int = logging.INFO,
    every_s: float = 0.0,
    key: Any = None,
    exc_info: Any = None,
    **fields: Any,
) -> None:
    """Log event ``name`` with ``fields``; with ``every_s``, at most once per window."""
    if not logger.isEnabledFor(level):
        return
    if every_s > 0:
        now = time.monotonic()
        slot = (logger.name, name, key)
        with _lock:
            entry = _last_logged.get(slot)
            if entry is not None and now - entry[0] < every_s:
                entry[1] += 1
                return
            suppressed = entry[1] if entry is not None else 0
            _last_logged[slot] = [now, 0]
        if suppressed:
            fields["suppressed"] = suppressed
    logger.log(level, name, extra={"event_fields": {"event": name, **fields}}, exc_info=exc_info)
