"""Throughput of the node path against the protobuf decode floor.

Replays the six-node node_exporter sample (1,499 points per scrape) as a
series of scrapes 15 s apart, in-process, and prints points per second of:

- decode floor: parse each request with the standard opentelemetry-proto
  classes and read every point's value and every attribute's key and value;
- full node path: what the service does per request: parse and decode
  (pipeline.decode), then filter -> delta_rate -> node_snapshot with their
  default configs. Exporting is left out: it is I/O on another thread.

Both are measured alternately in the same run, several rounds each, and the
ratio of the medians is printed, so a loaded machine shifts both alike.

    python bench/node_path.py [--scrapes 40] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import convert, decode, promtext  # noqa: E402
from pipeline.component import ComponentContext  # noqa: E402
from pipeline.runtime import Pipeline, tune_gc  # noqa: E402
from pipeline.telemetry import Telemetry  # noqa: E402
from processors.delta_rate import DeltaRateProcessor  # noqa: E402
from processors.filter import FilterProcessor  # noqa: E402
from processors.node_snapshot import NodeSnapshotProcessor  # noqa: E402

SAMPLE = ROOT / "testdata" / "atlhyper-six-nodes" / "otel_all_nodes.txt"
START_NS = 1_766_400_000_000_000_000
INTERVAL_NS = 15_000_000_000


def make_bodies(scrapes: int) -> list[bytes]:
    """Serialize ``scrapes`` requests whose counters grow by 1 % of their value per scrape."""
    exposition = promtext.parse(SAMPLE.read_text())
    base = [s.value for s in exposition.samples]
    options = convert.ConvertOptions(strip_prefix="otel_")
    bodies = []
    for k in range(scrapes):
        for sample, value in zip(exposition.samples, base):
            if sample.name.endswith("_total"):
                sample.value = value * (1 + 0.01 * k)
        request = convert.exposition_to_request(exposition, START_NS + k * INTERVAL_NS, options)
        bodies.append(request.SerializeToString())
    return bodies


def decode_floor(bodies: list[bytes]) -> int:
    points = 0
    for body in bodies:
        request = ExportMetricsServiceRequest()
        request.ParseFromString(body)
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    data = getattr(metric, metric.WhichOneof("data"))
                    for dp in data.data_points:
                        dp.as_double
                        for kv in dp.attributes:
                            kv.key
                            kv.value.string_value
                        points += 1
    return points


class CountingExporter:
    """Stands in for the exporters: counts snapshots, does no I/O."""

    def __init__(self) -> None:
        self.snapshots = 0

    def export(self, items, now_ns) -> None:
        self.snapshots += len(items)


def node_path(bodies: list[bytes]) -> tuple[int, int]:
    telemetry = Telemetry()
    processors = [
        cls(cls.Config(), ComponentContext(component_id=cls.type_name, telemetry=telemetry))
        for cls in (FilterProcessor, DeltaRateProcessor, NodeSnapshotProcessor)
    ]
    exporter = CountingExporter()
    pipeline = Pipeline("node", processors, [exporter])
    for processor in processors:
        processor.start()
    points = 0
    now = START_NS
    for body in bodies:
        result = decode.decode_bytes(body)
        points += result.points
        pipeline.consume(result.batch, now)
        now += INTERVAL_NS
    pipeline.drain(now)
    return points, exporter.snapshots


def measure(fn, bodies) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn(bodies)
    elapsed = time.perf_counter() - started
    points = out[0] if isinstance(out, tuple) else out
    return points / elapsed, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scrapes", type=int, default=40, help="scrapes per round (default 40)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of each measurement (default 7)")
    args = parser.parse_args()

    bodies = make_bodies(args.scrapes)
    # The service tunes the garbage collector the same way once it has
    # started, so both measurements run under the settings used in production.
    tune_gc()
    floor_rates, path_rates = [], []
    snapshots = 0
    for _ in range(args.rounds):
        rate, _ = measure(decode_floor, bodies)
        floor_rates.append(rate)
        rate, out = measure(node_path, bodies)
        path_rates.append(rate)
        snapshots = out[1]
    floor = statistics.median(floor_rates)
    path = statistics.median(path_rates)
    points = args.scrapes * 1499
    print(f"requests per round   {args.scrapes} (1,499 points each, {points} points)")
    print(f"snapshots per round  {snapshots} (6 nodes x {args.scrapes} scrapes expected)")
    print(f"decode floor         {floor:12,.0f} points/s (median of {args.rounds})")
    print(f"full node path       {path:12,.0f} points/s (median of {args.rounds})")
    print(f"ratio path/floor     {path / floor:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
