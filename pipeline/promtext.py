"""Parser for the Prometheus text exposition format (version 0.0.4).

Used only off the hot path: by ``otelsnap convert`` and by tests that start
from real node_exporter text. Returns samples in file order plus the
``# TYPE`` / ``# HELP`` / ``# UNIT`` metadata per family.
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
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            _parse_comment(line, out)
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
        out.samples.append(Sample(name, labels, value, ts))
    return out


def _parse_comment(line: str, out: Exposition) -> None:
    parts = line[1:].strip().split(None, 2)
    if len(parts) < 2:
        return
    keyword, family = parts[0], parts[1]
    rest = parts[2] if len(parts) > 2 else ""
    if keyword == "TYPE":
        out.types[family] = rest.strip()
    elif keyword == "HELP":
        out.helps[family] = rest
    elif keyword == "UNIT":
        out.units[family] = rest.strip()
