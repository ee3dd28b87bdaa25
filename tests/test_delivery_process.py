"""Delivery across processes: SIGKILL while the Master is down loses nothing.

A real exporter process queues snapshots while nothing listens on the
Master's port and is killed with SIGKILL. A second process, started with the
Master up, delivers everything, in order, once. The processes are
master_driver.py (the exporter built from a config file) and ``otelsnap
run`` fed over gRPC. The queue file is read with an independent sqlite3
connection in between.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import MetricsServiceStub

from master_stub import SAMPLE, MasterStub, Reply, free_port, node_values
from pipeline.convert import ConvertOptions, exposition_to_request
from pipeline.exporters.queue import queue_path
from pipeline.promtext import parse

HERE = Path(__file__).resolve().parent
OTELSNAP = Path(sys.executable).with_name("otelsnap")
T0 = 1_766_400_000_000_000_000
SCRAPE_NS = 15_000_000_000
DRIVER = HERE / "master_driver.py"
NODES = sorted(node_values())
STAMPS = ["2025-12-22T10:40:00.000Z", "2025-12-22T10:40:15.000Z", "2025-12-22T10:40:30.000Z"]


def write_config(tmp_path: Path, port: int) -> Path:
    config = tmp_path / "otelsnap.yaml"
    config.write_text(
        f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
exporters:
  master:
    endpoint: http://127.0.0.1:{port}
    cluster_id: atlhyper-home
    timeout_s: 2
    retry_on_failure:
      initial_interval_s: 0.05
      max_interval_s: 0.2
    queue:
      directory: {tmp_path / "queue"}
service:
  pipelines:
    node:
      receivers: [otlp]
      processors: []
      exporters: [master]
"""
    )
    return config


def start_driver(config: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent)]))
    return subprocess.Popen(
        [sys.executable, str(DRIVER), str(config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_line(process: subprocess.Popen, timeout_s: float = 20.0) -> str:
    """Read one stdout line of the driver, failing after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    os.set_blocking(process.stdout.fileno(), False)
    buffer = ""
    while time.monotonic() < deadline:
        chunk = process.stdout.readline()
        if chunk:
            buffer += chunk
            if buffer.endswith("\n"):
                return buffer.strip()
        elif process.poll() is not None:
            break
        else:
            time.sleep(0.02)
    raise AssertionError(f"driver printed no line; stderr: {process.stderr.read() if process.poll() is not None else ''}")


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    process.stdout.close()
    process.stderr.close()


def queued_rows(tmp_path: Path) -> list[tuple[str, str]]:
    path = queue_path(str(tmp_path / "queue"), "master")
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT key, json_extract(body, '$.timestamp') FROM snapshots ORDER BY seq").fetchall()
    finally:
        db.close()
    return rows


def wait_until(condition, timeout_s: float = 20.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)


def test_sigkill_while_master_down_loses_nothing(tmp_path, processes):
    port = free_port()
    config = write_config(tmp_path, port)
    expected = [(name, stamp) for stamp in STAMPS for name in NODES]

    producer = start_driver(config, "produce", "3")
    processes.append(producer)
    assert read_line(producer) == "queued 18"
    time.sleep(0.3)  # let it retry against the closed port
    kill(producer)
    assert queued_rows(tmp_path) == expected

    master = MasterStub(port).start()
    try:
        deliverer = start_driver(config, "deliver")
        processes.append(deliverer)
        assert read_line(deliverer) == "drained"
        assert deliverer.wait(timeout=15) == 0
        assert master.nodes_in_order() == expected
        assert len(master.received) == 3
    finally:
        master.stop()
    assert queued_rows(tmp_path) == []


def test_sigkill_before_response_duplicates(tmp_path, processes):
    """A kill after the Master took a request but before the row was deleted
    sends that request again: delivery is at least once."""
    port = free_port()
    config = write_config(tmp_path, port)
    master = MasterStub(port, replies=[Reply(200, delay_s=3.0)]).start()
    try:
        producer = start_driver(config, "produce", "1")
        processes.append(producer)
        assert read_line(producer) == "queued 6"
        assert master.wait_for(1, timeout_s=10)
        kill(producer)
        assert len(queued_rows(tmp_path)) == 6

        deliverer = start_driver(config, "deliver")
        processes.append(deliverer)
        assert read_line(deliverer) == "drained"
        assert deliverer.wait(timeout=15) == 0
        assert wait_until(lambda: len(master.received) == 2)
        first, second = master.received
        assert first.body["node_metrics"] == second.body["node_metrics"]
        assert list(first.body["node_metrics"]) == NODES
    finally:
        master.stop()


def write_run_config(tmp_path: Path, grpc_port: int, master_port: int) -> Path:
    config = tmp_path / "run.yaml"
    config.write_text(
        f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
processors:
  filter/node:
  delta_rate:
  node_snapshot:
    scrape_wait_s: 0
exporters:
  master:
    endpoint: http://127.0.0.1:{master_port}
    cluster_id: atlhyper-home
    timeout_s: 2
    retry_on_failure:
      initial_interval_s: 0.05
      max_interval_s: 0.2
    queue:
      directory: {tmp_path / "queue"}
service:
  pipelines:
    node:
      receivers: [otlp]
      processors: [filter/node, delta_rate, node_snapshot]
      exporters: [master]
  telemetry:
    metrics:
      endpoint: ""
"""
    )
    return config


def start_otelsnap(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(OTELSNAP), "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def send_scrapes(grpc_port: int, scrapes: int) -> None:
    """Send the six-node sample ``scrapes`` times, 15 s apart, as a collector would."""
    exposition = parse(SAMPLE.read_text())
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=20)
        client = MetricsServiceStub(channel)
        for scrape in range(scrapes):
            request = exposition_to_request(exposition, T0 + scrape * SCRAPE_NS, ConvertOptions(strip_prefix="otel_"))
            client.Export(request, timeout=10, compression=grpc.Compression.Gzip)


@pytest.mark.skipif(not OTELSNAP.exists(), reason="needs the otelsnap command in the virtualenv")
def test_otelsnap_run_killed_then_restarted(tmp_path, processes):
    grpc_port, master_port = free_port(), free_port()
    config = write_run_config(tmp_path, grpc_port, master_port)

    first = start_otelsnap(config)
    processes.append(first)
    send_scrapes(grpc_port, 3)
    assert wait_until(lambda: len(queued_rows(tmp_path)) == 18), first.stderr.read() if first.poll() is not None else ""
    time.sleep(0.3)  # retries against the closed port go on
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    queued = queued_rows(tmp_path)
    assert sorted(queued) == sorted((name, stamp) for name in NODES for stamp in STAMPS)
    for name in NODES:
        assert [stamp for node, stamp in queued if node == name] == STAMPS

    master = MasterStub(master_port).start()
    try:
        second = start_otelsnap(config)
        processes.append(second)
        assert wait_until(lambda: len(master.nodes_in_order()) >= 18)
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=20) == 0
        assert master.nodes_in_order() == queued
        assert {r.headers["X-Cluster-ID"] for r in master.received} == {"atlhyper-home"}
    finally:
        master.stop()
    assert queued_rows(tmp_path) == []
