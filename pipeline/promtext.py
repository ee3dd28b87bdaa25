"""Parser for the Prometheus text exposition format (version 0.0.4).

Used only off the hot path: by ``otelsnap convert`` and by tests that start
from real node_exporter text. Returns samples in file order plus the
``# TYPE`` / ``# HELP`` / ``# UNIT`` metadata per family.

A sample that repeats an earlier one (same name, labels and timestamp) is
left out with a warning naming both lines. The first one is kept, as
Prometheus keeps the first sample it stores for a series and timestamp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class ExpositionError(ValueError):
    """A line that is not valid exposition text; names the line number."""

    def __init__(self, lineno: int, line: str, reason: str) -> None:
        super().__init__(f"line {lineno}: {reason}: {line[:120]!r}")
        self.lineno = lineno


@dataclass(slots=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float
    timestamp_ms: int | None = None


@dataclass(slots=True)
class Exposition:
    samples: list[Sample] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    # Problems that did not stop parsing, each naming its line.
    warnings: list[str] = field(default_factory=list)


# Type names a "# TYPE" line may use. "untyped" (text format 0.0.4) is the
# same as "unknown" (OpenMetrics).
TYPES = (
    "counter",
    "gauge",
    "histogram",
    "summary",
    "unknown",
    "untyped",
    "info",
    "stateset",
    "gaugehistogram",
)


_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def parse_value(text: str) -> float:
    """Parse a sample value, accepting Go's spellings of NaN and infinities."""
    lowered = text.lower()
    if lowered in ("nan",):
        return math.nan
    if lowered in ("+inf", "inf"):
        return math.inf
    if lowered == "-inf":
        return -math.inf
    return float(text)


def _parse_labels(line: str, pos: int, lineno: int) -> tuple[dict[str, str], int]:
    """Parse ``{a="b",...}`` starting at ``line[pos] == '{'``; return labels and end."""
    labels: dict[str, str] = {}
    pos += 1
    n = len(line)
    while True:
        while pos < n and line[pos] in " \t,":
            pos += 1
        if pos < n and line[pos] == "}":
            return labels, pos + 1
        eq = line.find("=", pos)
        if eq < 0:
            if line.find("}", pos) < 0:
                raise ExpositionError(lineno, line, "label set is not closed: add '}' after the last label")
            raise ExpositionError(lineno, line, "label without '='")
        name = line[pos:eq].strip()
        pos = eq + 1
        if pos >= n or line[pos] != '"':
            raise ExpositionError(lineno, line, f"label {name!r} value not quoted")
        pos += 1
        chars: list[str] = []
        while True:
            if pos >= n:
                raise ExpositionError(lineno, line, f"label {name!r} value not closed")
            ch = line[pos]
            if ch == "\\" and pos + 1 < n:
                chars.append(_ESCAPES.get(line[pos + 1], "\\" + line[pos + 1]))
                pos += 2
                continue
            if ch == '"':
                pos += 1
                break
            chars.append(ch)
            pos += 1
        labels[name] = "".join(chars)


def parse(text: str) -> Exposition:
    """Parse exposition text into samples and family metadata."""
    out = Exposition()
    first_lines: dict[tuple, int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            _parse_comment(line, out, lineno)
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace >= 0 and (space < 0 or brace < space):
            name = line[:brace]
            labels, end = _parse_labels(line, brace, lineno)
            rest = line[end:].split()
        else:
            parts = line.split()
            name, labels, rest = parts[0], {}, parts[1:]
        if not name or not rest:
            raise ExpositionError(lineno, line, "expected 'name[{labels}] value [timestamp]'")
        try:
            value = parse_value(rest[0])
            ts = int(rest[1]) if len(rest) > 1 else None
        except ValueError as exc:
            raise ExpositionError(lineno, line, f"invalid number ({exc})") from None
        identity = (name, tuple(sorted(labels.items())), ts)
        first = first_lines.setdefault(identity, lineno)
        if first != lineno:
            out.warnings.append(
                f"line {lineno}: duplicate sample of {name}{_render_labels(labels)} "
                f"(first on line {first}); kept the first"
            )
            continue
        out.samples.append(Sample(name, labels, value, ts))
    return out


def _render_labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _parse_comment(line: str, out: Exposition, lineno: int) -> None:
    parts = line[1:].strip().split(None, 2)
    if len(parts) < 2:
        return
    keyword, family = parts[0], parts[1]
    rest = parts[2] if len(parts) > 2 else ""
    if keyword == "TYPE":
        declared = rest.strip()
        if declared not in TYPES:
            raise ExpositionError(
                lineno, line, f"unknown type {declared!r} for {family}; use one of {', '.join(TYPES)}"
            )
        out.types[family] = declared
    elif keyword == "HELP":
        out.helps[family] = rest
    elif keyword == "UNIT":
        out.units[family] = rest.strip()
