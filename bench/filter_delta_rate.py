"""Benchmark of the filter and delta_rate processors against decoding alone.

    python bench/filter_delta_rate.py [--scrapes 40] [--rounds 7]

Replays the six-node node_exporter sample (1,499 points per request) as
``--scrapes`` requests 15 s apart, in one process. It prints points per
second of three variants: decoding alone (pipeline.decode), decode +
filter, and decode + filter + delta_rate, each with its default config. Counters grow by 1 % of
their value per scrape, so delta_rate computes real deltas. The rounds
alternate between the three, so a loaded machine slows all of them alike;
the medians are printed. Numbers depend on the CPU and the Python build.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from node_path import INTERVAL_NS, START_NS, make_bodies  # noqa: E402
from pipeline import decode  # noqa: E402
from pipeline.component import ComponentContext, Processor  # noqa: E402
from pipeline.telemetry import Telemetry  # noqa: E402
from processors.delta_rate import DeltaRateProcessor  # noqa: E402
from processors.filter import FilterProcessor  # noqa: E402


def build(classes: tuple[type, ...]) -> list[Processor]:
    telemetry = Telemetry()
    processors = [
        cls(cls.Config(), ComponentContext(component_id=cls.type_name, telemetry=telemetry))
        for cls in classes
    ]
    for processor in processors:
        processor.start()
    return processors


def points_per_second(bodies: list[bytes], classes: tuple[type, ...]) -> float:
    """Decode every body and run it through fresh processors; return points/s."""
    processors = build(classes)
    points = 0
    now = START_NS
    started = time.perf_counter()
    for body in bodies:
        result = decode.decode_bytes(body)
        points += result.points
        items = result.batch
        for processor in processors:
            items = processor.process(items, now)
        now += INTERVAL_NS
    return points / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=40, help="requests per round (default 40)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each measurement (default 7)")
    args = parser.parse_args()

    bodies = make_bodies(args.scrapes)
    variants = {
        "decode": (),
        "decode + filter": (FilterProcessor,),
        "decode + filter + delta_rate": (FilterProcessor, DeltaRateProcessor),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, classes in variants.items():
            rates[name].append(points_per_second(bodies, classes))

    floor_ns = 1e9 / statistics.median(rates["decode"])
    print(f"requests per round {args.scrapes} (1,499 points each), median of {args.rounds} rounds")
    for name, values in rates.items():
        rate = statistics.median(values)
        added_ns = 1e9 / rate - floor_ns
        print(f"{name:30s} {rate:10,.0f} points/s  {1e9 / rate:6.0f} ns/point  +{added_ns:4.0f} ns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
