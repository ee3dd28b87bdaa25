"""Cost of each stage of the node path, in ns per received point.

Replays the same scrapes as ``bench/node_path.py`` and times each stage of
every request on its own: protobuf parsing (``LazyExportRequest``), the
decoding into model objects, then ``filter``, ``delta_rate`` and
``node_snapshot`` with their default configs. The decode floor of
``node_path.py`` is measured in the same rounds for comparison. Rounds
alternate, and each figure is the median over the rounds.

    python bench/node_path_stages.py [--scrapes 40] [--rounds 7]
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

from node_path import INTERVAL_NS, START_NS, decode_floor, make_bodies  # noqa: E402
from pipeline import decode  # noqa: E402
from pipeline.component import ComponentContext  # noqa: E402
from pipeline.telemetry import Telemetry  # noqa: E402
from processors.delta_rate import DeltaRateProcessor  # noqa: E402
from processors.filter import FilterProcessor  # noqa: E402
from processors.node_snapshot import NodeSnapshotProcessor  # noqa: E402

STAGES = ("parse", "decode", "filter", "delta_rate", "node_snapshot")


def run_stages(bodies: list[bytes]) -> tuple[int, dict[str, float]]:
    """Run the node path once and return the points and the seconds spent per stage."""
    telemetry = Telemetry()
    processors = [
        cls(cls.Config(), ComponentContext(component_id=cls.type_name, telemetry=telemetry))
        for cls in (FilterProcessor, DeltaRateProcessor, NodeSnapshotProcessor)
    ]
    for processor in processors:
        processor.start()

    seconds = dict.fromkeys(STAGES, 0.0)
    clock = time.perf_counter
    points = 0
    now = START_NS
    for body in bodies:
        started = clock()
        request = decode.LazyExportRequest()
        request.ParseFromString(body)
        parsed = clock()
        result = decode.decode_request(request)
        seconds["parse"] += parsed - started
        seconds["decode"] += clock() - parsed
        points += result.points
        items = result.batch
        for processor, stage in zip(processors, STAGES[2:]):
            started = clock()
            items = processor.process(items, now)
            seconds[stage] += clock() - started
        now += INTERVAL_NS

    started = clock()
    processors[-1].shutdown()
    seconds["node_snapshot"] += clock() - started
    return points, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=40, help="scrapes per round (default 40)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each measurement (default 7)")
    args = parser.parse_args()

    bodies = make_bodies(args.scrapes)
    per_stage: dict[str, list[float]] = {stage: [] for stage in STAGES}
    floor: list[float] = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        points = decode_floor(bodies)
        floor.append((time.perf_counter() - started) / points * 1e9)
        points, seconds = run_stages(bodies)
        for stage, spent in seconds.items():
            per_stage[stage].append(spent / points * 1e9)

    print(f"requests per round {args.scrapes}, median of {args.rounds} rounds, ns per received point")
    total = 0.0
    for stage in STAGES:
        cost = statistics.median(per_stage[stage])
        total += cost
        print(f"{stage:<15} {cost:8.0f}")
    print(f"{'sum':<15} {total:8.0f}   ({1e9 / total:,.0f} points/s)")
    floor_ns = statistics.median(floor)
    print(f"{'decode floor':<15} {floor_ns:8.0f}   ({1e9 / floor_ns:,.0f} points/s)")
    print(f"{'ratio':<15} {floor_ns / total:8.2f}   (floor ns / sum ns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
