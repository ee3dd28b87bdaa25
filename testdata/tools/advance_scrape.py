#!/usr/bin/env python3
"""Make a later scrape from a node_exporter scrape by advancing its counters.

    python3 testdata/tools/advance_scrape.py \\
        testdata/atlhyper-six-nodes/otel_all_nodes.txt \\
        testdata/atlhyper-six-nodes/advance.yaml \\
        > testdata/atlhyper-six-nodes/otel_all_nodes_plus15s.txt

The table (advance.yaml) gives the amount added to every series of each
counter, and per CPU mode for node_cpu_seconds_total. Lines keep their
order and labels; only counter values change, written as Go's
strconv.FormatFloat(v, 'g', -1, 64) writes them (node_exporter's format).
The script fails when a counter (a ``_total`` name or a name in the table)
has no amount, or when float64 rounding would change an increase by more
than MAX_RELATIVE_ERROR of the amount.

It reads the text with its own small regular expression, independent of
otelsnap's parser.
"""

from __future__ import annotations

import re
import sys
from decimal import Decimal

import yaml

SAMPLE = re.compile(r'^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?P<labels>\{[^}]*\})?\s+(?P<value>\S+)(?P<rest>.*)$')
MODE = re.compile(r'mode="([^"]*)"')

# The sum old + amount is rounded to float64, so (new - old) can differ from
# the amount by one unit in the last place of the counter's value.
MAX_RELATIVE_ERROR = 1e-9


def go_format_float(value: float) -> str:
    """Format like Go's strconv.FormatFloat(value, 'g', -1, 64).

    Shortest round-trip digits; exponent form when the decimal exponent is
    below -4 or at least 6 (Go uses precision 6 for that choice when the
    precision is -1).
    """
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    sign, digits_tuple, exponent = Decimal(repr(value)).normalize().as_tuple()
    digits = "".join(map(str, digits_tuple))
    point = len(digits) + exponent  # digits before the decimal point
    exp = point - 1
    prefix = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{prefix}{digits}{'0' * (point - len(digits))}"
    return f"{prefix}{digits[:point]}.{digits[point:]}"


def advance(text: str, table: dict) -> tuple[str, int]:
    """Return the advanced text and the number of series changed."""
    prefix = table.get("prefix", "")
    counters: dict[str, float] = {k: float(v) for k, v in table["counters"].items()}
    cpu_modes: dict[str, float] = {k: float(v) for k, v in table["cpu_modes"].items()}
    out_lines = []
    changed = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        match = SAMPLE.match(line)
        if line.startswith("#") or match is None:
            out_lines.append(line)
            continue
        name = match["name"]
        base = name[len(prefix):] if prefix and name.startswith(prefix) else name
        if base == "node_cpu_seconds_total":
            mode = MODE.search(match["labels"] or "")
            if mode is None or mode.group(1) not in cpu_modes:
                raise SystemExit(f"line {lineno}: no amount for CPU mode in {line!r}")
            amount = cpu_modes[mode.group(1)]
        elif base in counters:
            amount = counters[base]
        elif base.endswith("_total"):
            raise SystemExit(f"line {lineno}: counter {base} has no amount in the table")
        else:
            out_lines.append(line)
            continue
        old = float(match["value"])
        new = old + amount
        if abs((new - old) - amount) > MAX_RELATIVE_ERROR * max(abs(amount), 1.0):
            raise SystemExit(
                f"line {lineno}: {base}: {old!r} + {amount!r} loses precision in float64; "
                f"choose a larger amount"
            )
        out_lines.append(f"{name}{match['labels'] or ''} {go_format_float(new)}{match['rest']}")
        changed += 1
    return "\n".join(out_lines) + "\n", changed


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print("usage: advance_scrape.py SCRAPE.txt TABLE.yaml > NEXT.txt", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        text = f.read()
    with open(argv[2], encoding="utf-8") as f:
        table = yaml.safe_load(f)
    advanced, changed = advance(text, table)
    sys.stdout.write(advanced)
    print(f"advanced {changed} counter series", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
