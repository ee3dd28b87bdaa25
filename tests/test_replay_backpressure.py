"""In-process replay waits for a master exporter that pushes back.

The Master is down while the first scrape's six snapshots fill a queue of
six under ``when_full: block``; replay must wait instead of growing the
queue, and deliver all twelve snapshots once the Master is up.
"""

import threading
from pathlib import Path

from master_stub import MasterStub, free_port
from pipeline.config import load_config_text
from pipeline.replay import replay_in_process
from pipeline.telemetry import Telemetry

RECORDING = Path(__file__).resolve().parent.parent / "testdata" / "six-nodes.otlprec"

CONFIG = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
  filter/node:
  delta_rate:
  node_snapshot:
exporters:
  master:
    endpoint: http://127.0.0.1:{port}
    cluster_id: replay
    queue:
      directory: {queue_dir}
      max_items: 6
      when_full: block
    retry_on_failure:
      initial_interval_s: 0.1
      max_interval_s: 0.2
service:
  shutdown_timeout_s: 10
  telemetry:
    metrics:
      endpoint: ""
  pipelines:
    node:
      receivers: [otlp]
      processors: [filter/node, delta_rate, node_snapshot]
      exporters: [master]
"""


def test_replay_waits_for_full_queue(tmp_path):
    port = free_port()
    master = MasterStub(port=port)
    starter = threading.Timer(1.5, master.start)
    starter.start()
    telemetry = Telemetry()
    try:
        config = load_config_text(CONFIG.format(port=port, queue_dir=tmp_path))
        replay_in_process(RECORDING, config, capture=False, telemetry=telemetry)
        assert master.wait_for(2, timeout_s=10)
        delivered = master.nodes_in_order()
    finally:
        starter.cancel()
        starter.join()
        master.stop()

    assert len(delivered) == 12
    assert len(set(delivered)) == 12
    first_scrape = [ts for _, ts in delivered[:6]]
    assert first_scrape == ["2025-12-22T10:00:00.000Z"] * 6
    assert telemetry.get("otelsnap_exporter_queue_overflow_snapshots") == 0
    assert telemetry.get("otelsnap_exporter_dropped_snapshots") == 0
