"""Run one master exporter in its own process, for the delivery tests.

    python master_driver.py CONFIG produce SCRAPES   queue SCRAPES scrapes of six nodes, then wait
    python master_driver.py CONFIG deliver           deliver what is queued, then shut down

The exporter is built from the ``master`` entry of the config file, as the
service builds it. "produce" prints ``queued N`` once N snapshots are
committed, then waits to be killed. "deliver" prints ``drained`` when the
queue is empty and exits after a graceful shutdown.
"""

from __future__ import annotations

import logging
import sys
import time

from master_stub import node_body, node_values
from pipeline.component import ComponentContext, Snapshot
from pipeline.config import load_config
from pipeline.logs import setup_logging

T0 = 1_766_400_000_000_000_000
SCRAPE_NS = 15_000_000_000


def main() -> int:
    config_path, mode = sys.argv[1], sys.argv[2]
    setup_logging("info")
    spec = load_config(config_path).exporters["master"]
    exporter = spec.cls(spec.config, ComponentContext("master", logger=logging.getLogger("otelsnap.master")))
    exporter.start()
    if mode == "produce":
        values = node_values()
        count = 0
        for scrape in range(int(sys.argv[3])):
            time_ns = T0 + scrape * SCRAPE_NS
            items = [Snapshot("node", name, time_ns, node_body(name, values[name], time_ns)) for name in sorted(values)]
            exporter.export(items, time_ns)
            count += len(items)
        print(f"queued {count}", flush=True)
        while True:
            time.sleep(1)
    while len(exporter.queue):
        time.sleep(0.02)
    print("drained", flush=True)
    exporter.shutdown(timeout_s=5.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
