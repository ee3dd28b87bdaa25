"""Benchmark of the master exporter: export() cost and backlog drain rate.

    python bench/master_export.py [--scrapes 1000]

export() is timed per call with six node snapshots (the six-node sample's
nodes, bodies padded to 3 KiB, about the size node_snapshot builds from
that sample), for each SQLite ``synchronous`` mode. Then the queued backlog
is drained to the stand-in Master of the tests, which runs in the same
process, so the drain rate includes its decoding and shares the GIL with
it. Numbers depend on the disk and CPU; run it on the target hardware.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The stand-in Master is shared with the tests.
sys.path.insert(0, str(ROOT / "tests"))

from master_stub import MasterStub, free_port, node_body, node_values  # noqa: E402
from pipeline.component import ComponentContext, Snapshot  # noqa: E402
from pipeline.exporters.master import MasterExporter, MasterExporterConfig, RetryConfig  # noqa: E402
from pipeline.exporters.queue import QueueConfig  # noqa: E402

T0 = 1_766_400_000_000_000_000
SNAPSHOT_BYTES = 3 * 1024


def scrape_items(values: dict, scrape: int) -> list[Snapshot]:
    time_ns = T0 + scrape * 15_000_000_000
    items = []
    for name in sorted(values):
        body = node_body(name, values[name], time_ns)
        body["padding"] = "x" * max(0, SNAPSHOT_BYTES - len(str(body)))
        items.append(Snapshot("node", name, time_ns, body))
    return items


def run(scrapes: int, synchronous: str, directory: str) -> None:
    values = node_values()
    batches = [scrape_items(values, i) for i in range(scrapes)]
    port = free_port()
    config = MasterExporterConfig(
        endpoint=f"http://127.0.0.1:{port}",
        cluster_id="bench",
        retry_on_failure=RetryConfig(initial_interval_s=0.01, max_interval_s=0.05),
        queue=QueueConfig(directory=directory, synchronous=synchronous, max_items=10 * scrapes * 6),
    )
    config.validate()
    exporter = MasterExporter(config, ComponentContext(f"bench-{synchronous}", logger=logging.getLogger("bench")))
    exporter.start()

    durations = []
    for scrape, items in enumerate(batches):
        started = time.perf_counter()
        exporter.export(items, T0 + scrape)
        durations.append(time.perf_counter() - started)
    durations.sort()
    median_us = statistics.median(durations) * 1e6
    p99_us = durations[int(len(durations) * 0.99) - 1] * 1e6
    print(f"synchronous={synchronous}: export() of 6 snapshots: median {median_us:.0f} us, p99 {p99_us:.0f} us ({scrapes} calls)")

    master = MasterStub(port).start()
    started = time.perf_counter()
    total = scrapes * 6
    while len(master.nodes_in_order()) < total:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    print(f"synchronous={synchronous}: drained {total} snapshots in {len(master.received)} requests in {elapsed:.2f} s ({total / elapsed:.0f} snapshots/s)")
    exporter.shutdown(timeout_s=5)
    master.stop()


def main() -> int:
    logging.getLogger("bench").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=1000, help="export calls of six snapshots each")
    args = parser.parse_args()
    for synchronous in ("normal", "full"):
        with tempfile.TemporaryDirectory() as directory:
            run(args.scrapes, synchronous, directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
