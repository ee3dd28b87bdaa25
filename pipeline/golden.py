"""Compare produced snapshots with a golden JSON Lines file, field by field.

Both sides are JSON Lines as the ``file`` exporter writes them: one
snapshot body per line (a node body carries ``node_name`` and
``timestamp``), or a ``{"resource", "metrics"}`` object for a pipeline
without a snapshot builder. Lines are matched by identity, not position:
node bodies by (node_name, timestamp), resource lines by their resource
attributes and first point time, other lines by their position.

A difference names the line and the field path, for example
``desk-zero[timestamp=2025-12-22T10:00:15.000Z].cpu.usage_percent``;
entries of a list of objects are named by an identifying field when one
exists (``networks[interface=eth0].rx_rate``), else by index. Floats are
equal within ``tolerance``, relative (and absolute below magnitude 1);
ints, strings, booleans and null must match exactly, and an int is never
equal to a float because the wire contract distinguishes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

# Fields that identify an entry of a list of objects, tried in this order;
# the first combination present on every entry and unique among them wins.
_ENTRY_KEYS: tuple[tuple[str, ...], ...] = (
    ("interface",),
    ("device",),
    ("name", "label"),
    ("name",),
    ("service_key",),
    ("namespace", "name"),
    ("src_ns", "src_name", "dst_ns", "dst_name"),
    ("status_code", "classification"),
    ("code", "method"),
)


@dataclass(slots=True)
class Difference:
    path: str
    expected: Any
    actual: Any
    note: str = ""

    def render(self) -> str:
        text = f"{self.path}: expected {_show(self.expected)}, actual {_show(self.actual)}"
        return f"{text} ({self.note})" if self.note else text


_MISSING = object()


def _show(value: Any) -> str:
    if value is _MISSING:
        return "<missing>"
    text = orjson.dumps(value).decode()
    return text if len(text) <= 120 else text[:117] + "..."


def read_json_lines(path: str | Path) -> list[Any]:
    """Parse a JSON Lines file; raise ValueError naming the line on bad JSON."""
    out = []
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc})") from None
    return out


def line_label(body: Any, index: int) -> str:
    """Name a line for a diff: ``node[timestamp=…]``, ``resource{…}`` or ``line N``."""
    if isinstance(body, dict):
        if "node_name" in body:
            return f"{body['node_name']}[timestamp={body.get('timestamp', '?')}]"
        if "resource" in body and isinstance(body["resource"], dict):
            resource = body["resource"]
            ident = resource.get("service.instance.id") or resource.get("host.name") or ""
            return f"resource[{ident}][time={_first_time(body)}]"
        if "timestamp" in body:
            return f"line[timestamp={body['timestamp']}]"
    return f"line {index + 1}"


def _first_time(body: dict) -> Any:
    for metric in body.get("metrics", ()):
        for point in metric.get("points", ()):
            return point.get("time_unix_nano")
    return None


def _line_keys(bodies: list[Any]) -> list[str]:
    keys = []
    seen: dict[str, int] = {}
    for index, body in enumerate(bodies):
        label = line_label(body, index)
        count = seen.get(label, 0)
        seen[label] = count + 1
        keys.append(label if count == 0 else f"{label}#{count + 1}")
    return keys


def compare_lines(expected: list[Any], actual: list[Any], tolerance: float) -> list[Difference]:
    """Return every difference between two lists of snapshot bodies."""
    differences: list[Difference] = []
    expected_by_key = dict(zip(_line_keys(expected), expected))
    actual_by_key = dict(zip(_line_keys(actual), actual))
    for key, body in expected_by_key.items():
        if key not in actual_by_key:
            differences.append(Difference(key, "<line>", _MISSING, "snapshot not produced"))
            continue
        compare_values(body, actual_by_key[key], key, tolerance, differences)
    for key in actual_by_key:
        if key not in expected_by_key:
            differences.append(Difference(key, _MISSING, "<line>", "snapshot not in the golden file"))
    return differences


def compare_values(expected: Any, actual: Any, path: str, tolerance: float, out: list[Difference]) -> None:
    """Append the differences between two JSON values to ``out``."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key, value in expected.items():
            if key not in actual:
                out.append(Difference(f"{path}.{key}", value, _MISSING))
            else:
                compare_values(value, actual[key], f"{path}.{key}", tolerance, out)
        for key, value in actual.items():
            if key not in expected:
                out.append(Difference(f"{path}.{key}", _MISSING, value))
        return
    if isinstance(expected, list) and isinstance(actual, list):
        _compare_lists(expected, actual, path, tolerance, out)
        return
    if type(expected) is not type(actual):
        out.append(Difference(path, expected, actual, f"{type(expected).__name__} vs {type(actual).__name__}"))
        return
    if isinstance(expected, float):
        if not _close(expected, actual, tolerance):
            out.append(Difference(path, expected, actual))
        return
    if expected != actual:
        out.append(Difference(path, expected, actual))


def _close(expected: float, actual: float, tolerance: float) -> bool:
    if math.isnan(expected) or math.isnan(actual):
        return math.isnan(expected) and math.isnan(actual)
    return math.isclose(expected, actual, rel_tol=tolerance, abs_tol=tolerance)


def _entry_key(entries: list[Any]) -> tuple[str, ...] | None:
    if not entries or not all(isinstance(e, dict) for e in entries):
        return None
    for fields in _ENTRY_KEYS:
        if all(all(f in e for f in fields) for e in entries):
            values = [tuple(e[f] for f in fields) for e in entries]
            if len(set(map(repr, values))) == len(values):
                return fields
    return None


def _entry_label(entry: dict, fields: tuple[str, ...]) -> str:
    return ",".join(f"{f}={entry[f]}" for f in fields)


def _compare_lists(expected: list, actual: list, path: str, tolerance: float, out: list[Difference]) -> None:
    fields = _entry_key(expected)
    if fields is not None and _entry_key(actual) == fields:
        actual_by_label = {_entry_label(e, fields): e for e in actual}
        expected_labels = []
        for entry in expected:
            label = _entry_label(entry, fields)
            expected_labels.append(label)
            if label not in actual_by_label:
                out.append(Difference(f"{path}[{label}]", "<entry>", _MISSING))
            else:
                compare_values(entry, actual_by_label[label], f"{path}[{label}]", tolerance, out)
        for label in actual_by_label:
            if label not in expected_labels:
                out.append(Difference(f"{path}[{label}]", _MISSING, "<entry>"))
        actual_order = [label for label in actual_by_label if label in expected_labels]
        if actual_order != [label for label in expected_labels if label in actual_by_label]:
            out.append(Difference(path, expected_labels, list(actual_by_label), "entry order differs"))
        return
    for index in range(max(len(expected), len(actual))):
        item_path = f"{path}[{index}]"
        if index >= len(actual):
            out.append(Difference(item_path, expected[index], _MISSING))
        elif index >= len(expected):
            out.append(Difference(item_path, _MISSING, actual[index]))
        else:
            compare_values(expected[index], actual[index], item_path, tolerance, out)


def render_differences(differences: list[Difference], limit: int = 50) -> str:
    """Render differences one per line, at most ``limit`` of them."""
    lines = [d.render() for d in differences[:limit]]
    if len(differences) > limit:
        lines.append(f"... and {len(differences) - limit} more differences")
    return "\n".join(lines)
