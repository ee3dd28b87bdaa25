"""The service: fan-out, the bounded queue, backpressure, timers, errors,
own telemetry and graceful shutdown of ``otelsnap run``.

Requests are the real six-node node_exporter scrape, converted the way a
collector's prometheus receiver forwards it, sent over real gRPC to the
real receiver on 127.0.0.1 with an ephemeral port. Test components
(a column-rewriting processor, a processor that blocks or raises, an
exporter that records what it gets) are registered through entry points in a
real ``.dist-info`` directory, the way third-party packages register theirs.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import orjson
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)

from master_stub import MasterStub, free_port, node_values
from pipeline import convert, decode, promtext
from pipeline.component import Backpressure, ConfigError, Exporter, Processor
from pipeline.config import default_config_text, load_config_text
from pipeline.model import Metric, MetricKind, ResourceMetrics
from pipeline.service import Service, copy_batch
from pipeline.telemetry import Telemetry

SIX_NODES = Path(__file__).parent.parent / "testdata" / "atlhyper-six-nodes" / "otel_all_nodes.txt"
T0 = 1_766_400_000_000_000_000
SCRAPE_NS = 15_000_000_000
EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
OTELSNAP = Path(sys.executable).parent / "otelsnap"
WAIT_S = 10.0


def six_node_text() -> str:
    return SIX_NODES.read_text()


def six_node_body(time_ns: int = T0) -> bytes:
    exposition = promtext.parse(six_node_text())
    request = convert.exposition_to_request(
        exposition, time_ns, convert.ConvertOptions(strip_prefix="otel_")
    )
    return request.SerializeToString()


def sample_lines(text: str) -> list[str]:
    """The sample lines of exposition text, found without the parser."""
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def text_value(name: str, instance: str) -> float:
    """One sample's value read straight from the text file."""
    for line in sample_lines(six_node_text()):
        if line.startswith("otel_" + name + "{") and f'instance="{instance}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {instance} not in the text")


DESK_ZERO = "192.168.0.130:9100"
SIX_NODE_POINTS = len(sample_lines(SIX_NODES.read_text()))


def wait_until(condition, timeout_s: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


# --- test components ----------------------------------------------------------


@dataclass
class ScaleConfig:
    factor: float = 2.0


class ScaleProcessor(Processor):
    """Replaces every value column with values × factor (invented transform)."""

    type_name = "scale"
    Config = ScaleConfig
    instances: list = []

    def __init__(self, config, context):
        super().__init__(config, context)
        ScaleProcessor.instances.append(self)
        self.seen: list[list] = []

    def process(self, items, now_ns):
        self.seen.append(items)
        factor = self.config.factor
        for rm in items:
            for metric in rm.metrics:
                metric.values = [None if v is None else v * factor for v in metric.values]
        return items


class GateProcessor(Processor):
    """Blocks in process() until the test opens the gate; raises on request."""

    type_name = "gate"
    entered = threading.Event()
    gate = threading.Event()
    fail_next = threading.Event()
    flush_times: list[int] = []

    def process(self, items, now_ns):
        GateProcessor.entered.set()
        if not GateProcessor.gate.wait(WAIT_S):
            raise TimeoutError("the test never opened the gate")
        if GateProcessor.fail_next.is_set():
            GateProcessor.fail_next.clear()
            raise RuntimeError("invented failure")
        return items

    def flush(self, now_ns):
        GateProcessor.flush_times.append(now_ns)
        return []


class CaptureExporter(Exporter):
    """Records every export call; ``accepting`` is switched by the test."""

    type_name = "capture"
    instances: list = []

    def __init__(self, config, context):
        super().__init__(config, context)
        CaptureExporter.instances.append(self)
        self.batches: list[list] = []
        self.open = True
        self.shutdown_calls = 0

    def export(self, items, now_ns):
        self.batches.append(items)

    @property
    def accepting(self) -> bool:
        return self.open

    def shutdown(self, timeout_s: float = 10.0) -> None:
        self.shutdown_calls += 1


class PushbackExporter(Exporter):
    """Raises Backpressure from every export call, as a third-party exporter may."""

    type_name = "pushback"

    def export(self, items, now_ns):
        raise Backpressure("invented: the exporter's buffer is full")


@pytest.fixture(autouse=True)
def plugins(tmp_path_factory, monkeypatch):
    """Register the test components as processor and exporter types."""
    root = tmp_path_factory.mktemp("plugins")
    dist = root / "otelsnap_service_test_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: otelsnap-service-test-plugins\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[otelsnap.processors]\n"
        f"scale = {__name__}:ScaleProcessor\n"
        f"gate = {__name__}:GateProcessor\n"
        "[otelsnap.exporters]\n"
        f"capture = {__name__}:CaptureExporter\n"
        f"pushback = {__name__}:PushbackExporter\n"
    )
    monkeypatch.syspath_prepend(str(root))
    ScaleProcessor.instances = []
    CaptureExporter.instances = []
    GateProcessor.entered = threading.Event()
    GateProcessor.gate = threading.Event()
    GateProcessor.gate.set()
    GateProcessor.fail_next = threading.Event()
    GateProcessor.flush_times = []
    yield


def make_config(text: str):
    return load_config_text(textwrap.dedent(text), env={})


RECEIVER = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
"""


def export_call(port: int):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(
        EXPORT, request_serializer=None, response_deserializer=ExportMetricsServiceResponse.FromString
    )
    return channel, call


@pytest.fixture
def running():
    """Start a Service from YAML text; stop it after the test."""
    services = []

    def start(text: str) -> Service:
        service = Service(make_config(text), Telemetry())
        services.append(service)
        service.start()
        return service

    yield start
    GateProcessor.gate.set()
    for service in services:
        service.stop(timeout_s=5)


# --- synchronous core ---------------------------------------------------------


def test_fan_out_copies_per_pipeline():
    config = make_config(
        RECEIVER
        + """
processors:
  scale/double: {factor: 2}
exporters:
  capture/a:
  capture/b:
service:
  pipelines:
    doubled: {receivers: [otlp], processors: [scale/double], exporters: [capture/a]}
    plain: {receivers: [otlp], exporters: [capture/b]}
"""
    )
    service = Service(config)
    service.start_components()
    result = decode.decode_bytes(six_node_body())
    service.consume(result, T0)

    doubled, plain = CaptureExporter.instances
    mem_total = text_value("node_memory_MemTotal_bytes", DESK_ZERO)

    def mem_value(batch) -> float:
        rm = next(r for r in batch if r.attrs["service.instance.id"] == DESK_ZERO)
        return next(m for m in rm.metrics if m.name == "node_memory_MemTotal_bytes").values[0]

    assert mem_value(doubled.batches[0]) == mem_total * 2
    assert mem_value(plain.batches[0]) == mem_total
    assert mem_value(result.batch) == mem_total
    # Each pipeline got its own objects; attribute dicts stay shared.
    assert doubled.batches[0][0] is not result.batch[0]
    assert plain.batches[0][0] is not result.batch[0]
    assert plain.batches[0][0].metrics[0] is not result.batch[0].metrics[0]
    assert plain.batches[0][0].attrs is result.batch[0].attrs


def test_single_pipeline_gets_the_batch_itself():
    config = make_config(
        RECEIVER
        + """
processors:
  scale:
exporters:
  capture:
service:
  pipelines:
    node: {receivers: [otlp], processors: [scale], exporters: [capture]}
"""
    )
    service = Service(config)
    service.start_components()
    result = decode.decode_bytes(six_node_body())
    service.consume(result, T0)
    assert ScaleProcessor.instances[0].seen[0] is result.batch


def test_copy_batch_copies_objects_not_columns():
    rm = ResourceMetrics(
        attrs={"service.instance.id": "a:1"},
        metrics=[Metric("m", MetricKind.GAUGE, attrs=[{}], times=[1], values=[2.0])],
    )
    (copy,) = copy_batch([rm])
    assert copy is not rm
    assert copy.metrics is not rm.metrics
    assert copy.metrics[0] is not rm.metrics[0]
    assert copy.metrics[0].values is rm.metrics[0].values
    assert copy.key == rm.key
    copy.metrics[0].values = [5.0]
    assert rm.metrics[0].values == [2.0]


def test_processor_instance_per_pipeline_exporter_shared():
    config = make_config(
        RECEIVER
        + """
processors:
  scale:
exporters:
  capture:
service:
  pipelines:
    one: {receivers: [otlp], processors: [scale], exporters: [capture]}
    two: {receivers: [otlp], processors: [scale], exporters: [capture]}
"""
    )
    service = Service(config)
    service.start_components()
    assert len(ScaleProcessor.instances) == 2
    assert {p.context.pipeline for p in ScaleProcessor.instances} == {"one", "two"}
    assert all(p.context.component_id == "scale" for p in ScaleProcessor.instances)
    assert ScaleProcessor.instances[0].log.name == "otelsnap.scale"
    assert len(CaptureExporter.instances) == 1
    service.consume(decode.decode_bytes(six_node_body()), T0)
    assert len(CaptureExporter.instances[0].batches) == 2


def test_drain_shuts_exporters_down_once():
    config = make_config(
        RECEIVER
        + """
exporters:
  capture:
service:
  pipelines:
    one: {receivers: [otlp], exporters: [capture]}
    two: {receivers: [otlp], exporters: [capture]}
"""
    )
    service = Service(config)
    service.start_components()
    service.drain(T0, timeout_s=1)
    assert CaptureExporter.instances[0].shutdown_calls == 1


# --- the running service ------------------------------------------------------


def tap_config(extra_processors: str = "", processors: str = "[]", service_extra: str = "") -> str:
    return (
        RECEIVER
        + f"""
processors:
  gate:
{extra_processors}
exporters:
  capture:
service:
  telemetry:
    metrics: {{endpoint: ""}}
{service_extra}
  pipelines:
    tap: {{receivers: [otlp], processors: {processors}, exporters: [capture]}}
"""
    )


def test_grpc_request_reaches_file(running, tmp_path):
    out = tmp_path / "tap.jsonl"
    service = running(
        RECEIVER
        + f"""
exporters:
  file:
    path: {out}
service:
  telemetry:
    metrics: {{endpoint: ""}}
  pipelines:
    tap: {{receivers: [otlp], exporters: [file]}}
"""
    )
    channel, call = export_call(service.receivers["otlp"].grpc_port)
    with channel:
        call(six_node_body(), timeout=5)
    wait_until(
        lambda: service.telemetry.get("otelsnap_exporter_written_lines") == 6, what="six written lines"
    )
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(lines) == 6
    points = sum(len(m["points"]) for line in lines for m in line["metrics"])
    assert points == SIX_NODE_POINTS
    assert service.telemetry.get("otelsnap_service_accepted_requests") == 1
    assert service.telemetry.get("otelsnap_service_accepted_points") == SIX_NODE_POINTS


def test_full_queue_rejects_with_unavailable(running):
    service = running(tap_config(processors="[gate]", service_extra="  queue_size: 1"))
    GateProcessor.gate.clear()
    body = six_node_body()
    channel, call = export_call(service.receivers["otlp"].grpc_port)
    with channel:
        call(body, timeout=5)  # taken by the worker, which blocks in the gate
        assert GateProcessor.entered.wait(WAIT_S)
        call(body, timeout=5)  # waits in the queue (size 1)
        with pytest.raises(grpc.RpcError) as caught:
            call(body, timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "processing queue is full" in caught.value.details()

        GateProcessor.gate.set()
        exporter = CaptureExporter.instances[0]
        wait_until(lambda: len(exporter.batches) == 2, what="two exported batches")
        call(body, timeout=5)  # room again
        wait_until(lambda: len(exporter.batches) == 3, what="three exported batches")

    telemetry = service.telemetry
    assert telemetry.get("otelsnap_service_refused_requests", receiver="otlp", reason="queue_full") == 1
    assert telemetry.get("otelsnap_service_refused_points", receiver="otlp", reason="queue_full") == SIX_NODE_POINTS
    assert telemetry.get("otelsnap_service_accepted_requests") == 3


def test_submit_admission_when_queue_full():
    config = make_config(tap_config(processors="[gate]", service_extra="  queue_size: 1"))
    service = Service(config)
    service.start_components()  # no worker: nothing takes from the queue
    result = decode.decode_bytes(six_node_body())
    first = service.submit(result, T0, "grpc")
    second = service.submit(result, T0, "grpc")
    assert first.accepted is True
    assert second.accepted is False
    assert second.retry_after_s == 1
    assert second.reason == "processing queue is full"


def test_exporter_backpressure_rejects(running):
    service = running(tap_config())
    exporter = CaptureExporter.instances[0]
    exporter.open = False
    channel, call = export_call(service.receivers["otlp"].grpc_port)
    with channel:
        with pytest.raises(grpc.RpcError) as caught:
            call(six_node_body(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "exporter capture queue is full" in caught.value.details()
        exporter.open = True
        call(six_node_body(), timeout=5)
    wait_until(lambda: len(exporter.batches) == 1, what="the batch sent after the exporter reopened")
    assert service.telemetry.get(
        "otelsnap_service_refused_requests", receiver="otlp", reason="exporter_queue_full"
    ) == 1


def test_exporter_backpressure_http_503(running):
    text = tap_config().replace(
        "        endpoint: 127.0.0.1:0\n", "        endpoint: 127.0.0.1:0\n      http:\n        endpoint: 127.0.0.1:0\n", 1
    )
    service = running(text)
    CaptureExporter.instances[0].open = False
    request = urllib.request.Request(
        f"http://127.0.0.1:{service.receivers['otlp'].http_port}/v1/metrics",
        data=six_node_body(),
        headers={"Content-Type": "application/x-protobuf"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 503
    assert caught.value.headers["Retry-After"] == "1"
    assert service.telemetry.get(
        "otelsnap_service_refused_requests", receiver="otlp", reason="exporter_queue_full"
    ) == 1


def test_master_queue_full_rejects(running, tmp_path):
    # The real master exporter with a Master that is down: its on-disk queue
    # fills with one scrape's six snapshots and, under the block policy,
    # the service rejects the next request.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    text = (
        default_config_text()
        .replace("127.0.0.1:4317", "127.0.0.1:0")
        .replace("127.0.0.1:4318", "127.0.0.1:0")
        .replace("endpoint: 127.0.0.1:8888", 'endpoint: ""')
        .replace(
            "  stdout:\n",
            f"""  master:
    endpoint: http://127.0.0.1:{closed_port}
    cluster_id: test
    queue:
      directory: {tmp_path}
      max_items: 6
      when_full: block
""",
        )
        .replace("exporters: [stdout]", "exporters: [master]")
        .replace("  node_snapshot:\n", "  node_snapshot:\n    scrape_wait_s: 0\n", 1)
    )
    service = running(text)
    channel, call = export_call(service.receivers["otlp"].grpc_port)
    with channel:
        call(six_node_body(T0), timeout=5)
        wait_until(
            lambda: service.telemetry.get("otelsnap_exporter_enqueued_snapshots") == 6,
            what="six queued snapshots",
        )
        with pytest.raises(grpc.RpcError) as caught:
            call(six_node_body(T0 + 15_000_000_000), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details().startswith("exporter master queue is full")
    assert service.telemetry.get(
        "otelsnap_service_refused_requests", receiver="otlp", reason="exporter_queue_full"
    ) == 1

    # Shutdown keeps the undelivered snapshots on disk.
    service.stop(timeout_s=1)
    with sqlite3.connect(tmp_path / "master.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 6


def test_stop_counts_in_memory_queue_loss(running, caplog):
    caplog.set_level(logging.INFO)
    text = (
        default_config_text()
        .replace("127.0.0.1:4317", "127.0.0.1:0")
        .replace("127.0.0.1:4318", "127.0.0.1:0")
        .replace("endpoint: 127.0.0.1:8888", 'endpoint: ""')
        .replace(
            "  stdout:\n",
            f"""  master:
    endpoint: http://127.0.0.1:{free_port()}
    cluster_id: test
    queue:
      directory: ""
""",
        )
        .replace("exporters: [stdout]", "exporters: [master]")
        .replace("  node_snapshot:\n", "  node_snapshot:\n    scrape_wait_s: 0\n", 1)
    )
    service = running(text)
    channel, call = export_call(service.receivers["otlp"].grpc_port)
    with channel:
        call(six_node_body(T0), timeout=5)
    wait_until(
        lambda: service.telemetry.get("otelsnap_exporter_enqueued_snapshots") == 6, what="six queued snapshots"
    )
    service.stop(timeout_s=0.5)

    assert service.telemetry.get("otelsnap_exporter_dropped_snapshots", exporter="master", reason="shutdown") == 6
    fields = [getattr(r, "event_fields", {}) for r in caplog.records]
    (lost,) = [f for f in fields if f.get("event") == "snapshots_lost"]
    assert lost["snapshots"] == 6
    assert lost["nodes"].endswith(" (+1 more)")
    (stopped,) = [f for f in fields if f.get("event") == "service_stopped"]
    assert stopped["dropped_snapshots"] == 6


def test_master_block_delivers_every_accepted_scrape(running, tmp_path):
    # The real master exporter under the block policy while the Master is
    # down, with max_items 8 and six nodes. The first scrape leaves room, so
    # the second is accepted and its six snapshots take the queue to 12,
    # past the bound. The third is rejected, then sent again, as the
    # collector's retry would, once the Master is back.
    master_port = free_port()
    text = (
        default_config_text()
        .replace("127.0.0.1:4317", "127.0.0.1:0")
        .replace("127.0.0.1:4318", "127.0.0.1:0")
        .replace("endpoint: 127.0.0.1:8888", 'endpoint: ""')
        .replace(
            "  stdout:\n",
            f"""  master:
    endpoint: http://127.0.0.1:{master_port}
    cluster_id: test
    retry_on_failure:
      initial_interval_s: 0.05
      max_interval_s: 0.2
    queue:
      directory: {tmp_path}
      max_items: 8
      when_full: block
""",
        )
        .replace("exporters: [stdout]", "exporters: [master]")
        .replace("  node_snapshot:\n", "  node_snapshot:\n    scrape_wait_s: 0\n", 1)
    )
    service = running(text)
    exporter = service.exporters["master"]
    nodes = sorted(node_values())
    stamps = ["2025-12-22T10:40:00.000Z", "2025-12-22T10:40:15.000Z", "2025-12-22T10:40:30.000Z"]
    master = None
    channel, call = export_call(service.receivers["otlp"].grpc_port)
    try:
        with channel:
            call(six_node_body(T0), timeout=5)
            call(six_node_body(T0 + SCRAPE_NS), timeout=5)
            wait_until(
                lambda: service.telemetry.get("otelsnap_exporter_enqueued_snapshots") == 12,
                what="twelve queued snapshots",
            )
            with sqlite3.connect(tmp_path / "master.sqlite3") as db:
                assert db.execute("SELECT count(*) FROM snapshots").fetchone()[0] == 12
            assert not exporter.accepting
            with pytest.raises(grpc.RpcError) as caught:
                call(six_node_body(T0 + 2 * SCRAPE_NS), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert caught.value.details().startswith("exporter master queue is full")

            master = MasterStub(master_port).start()
            wait_until(lambda: exporter.accepting, what="the queue to drain below max_items")
            call(six_node_body(T0 + 2 * SCRAPE_NS), timeout=5)
            wait_until(lambda: len(master.nodes_in_order()) >= 18, what="eighteen delivered snapshots")
            delivered = master.nodes_in_order()
    finally:
        if master is not None:
            master.stop()

    assert len(delivered) == 18
    assert [stamp for _, stamp in delivered] == [stamp for stamp in stamps for _ in nodes]
    for index, stamp in enumerate(stamps):
        assert sorted(name for name, _ in delivered[index * 6 : index * 6 + 6]) == nodes, stamp
    telemetry = service.telemetry
    assert telemetry.get("otelsnap_exporter_enqueued_snapshots", exporter="master") == 18
    assert telemetry.get("otelsnap_exporter_sent_snapshots", exporter="master") == 18
    assert telemetry.get("otelsnap_exporter_queue_overflow_snapshots", exporter="master") == 4
    assert telemetry.get("otelsnap_exporter_dropped_snapshots") == 0
    assert telemetry.get("otelsnap_service_dropped_points") == 0
    assert telemetry.get("otelsnap_service_component_errors") == 0
    assert telemetry.get(
        "otelsnap_service_refused_requests", receiver="otlp", reason="exporter_queue_full"
    ) == 1


def test_third_party_backpressure_drops_its_batch(running, caplog):
    caplog.set_level(logging.WARNING, logger="otelsnap.service")
    service = running(
        RECEIVER
        + """
exporters:
  pushback:
  capture:
service:
  telemetry:
    metrics: {endpoint: ""}
  pipelines:
    tap: {receivers: [otlp], exporters: [pushback, capture]}
"""
    )
    channel, call = export_call(service.receivers["otlp"].grpc_port)
    with channel:
        call(six_node_body(), timeout=5)
    wait_until(
        lambda: service.telemetry.get("otelsnap_service_component_errors") == 1,
        what="the counted Backpressure",
    )
    # The other exporter of the pipeline still got the batch.
    capture = CaptureExporter.instances[0]
    wait_until(lambda: len(capture.batches) == 1, what="the batch at the capture exporter")
    assert sum(len(m.values) for rm in capture.batches[0] for m in rm.metrics) == SIX_NODE_POINTS

    telemetry = service.telemetry
    assert telemetry.get(
        "otelsnap_service_component_errors", component="pushback", pipeline="tap", stage="process"
    ) == 1
    assert telemetry.get(
        "otelsnap_service_dropped_points", pipeline="tap", component="pushback", reason="exporter_queue_full"
    ) == SIX_NODE_POINTS
    def dropped_events() -> list[dict]:
        return [
            r.event_fields for r in caplog.records
            if getattr(r, "event_fields", {}).get("event") == "batch_dropped"
        ]  # fmt: skip

    # The worker counts the error before it logs it, so wait for the log too.
    wait_until(lambda: dropped_events(), what="the batch_dropped event")
    dropped = dropped_events()
    assert len(dropped) == 1
    assert dropped[0]["component"] == "pushback"
    assert dropped[0]["reason"] == "exporter_queue_full"
    assert dropped[0]["points"] == SIX_NODE_POINTS
    assert "Backpressure" in dropped[0]["error"]


def test_processor_error_drops_one_batch(running):
    service = running(tap_config(processors="[gate]"))
    GateProcessor.fail_next.set()
    channel, call = export_call(service.receivers["otlp"].grpc_port)
    exporter = CaptureExporter.instances[0]
    with channel:
        call(six_node_body(T0), timeout=5)
        wait_until(
            lambda: service.telemetry.get("otelsnap_service_component_errors") == 1,
            what="the counted processor error",
        )
        call(six_node_body(T0 + 15_000_000_000), timeout=5)
        wait_until(lambda: exporter.batches, what="the batch after the failure")
    assert len(exporter.batches) == 1
    assert exporter.batches[0][0].metrics[0].times[0] == T0 + 15_000_000_000
    telemetry = service.telemetry
    assert telemetry.get(
        "otelsnap_service_component_errors", component="gate", pipeline="tap", stage="process"
    ) == 1
    assert telemetry.get(
        "otelsnap_service_dropped_points", pipeline="tap", component="gate", reason="component_error"
    ) == SIX_NODE_POINTS


def test_worker_runs_processor_timers(running):
    before = time.time_ns()
    running(tap_config(processors="[gate]", service_extra="  tick_interval_s: 0.05"))
    wait_until(lambda: len(GateProcessor.flush_times) >= 3, what="three timer ticks")
    times = GateProcessor.flush_times[:3]
    assert times == sorted(times)
    assert times[0] >= before


def test_own_metrics_endpoint(running):
    text = tap_config().replace('metrics: {endpoint: ""}', "metrics: {endpoint: 127.0.0.1:0}")
    service = running(text)
    channel, call = export_call(service.receivers["otlp"].grpc_port)
    with channel:
        call(six_node_body(), timeout=5)
    wait_until(lambda: CaptureExporter.instances[0].batches, what="the exported batch")
    url = f"http://127.0.0.1:{service.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read().decode()
    accepted = re.search(r"^otelsnap_service_accepted_points_total\{(.*)\} (\S+)$", body, re.MULTILINE)
    assert accepted is not None, body[:2000]
    assert 'receiver="otlp"' in accepted.group(1)
    assert 'transport="grpc"' in accepted.group(1)
    assert float(accepted.group(2)) == SIX_NODE_POINTS
    assert re.search(r"^otelsnap_service_queue_capacity\S* 64\.0$", body, re.MULTILINE), body[:2000]


def test_own_metrics_send_counters_named(running):
    master = MasterStub().start()
    try:
        text = (
            default_config_text()
            .replace("127.0.0.1:4317", "127.0.0.1:0")
            .replace("127.0.0.1:4318", "127.0.0.1:0")
            .replace("endpoint: 127.0.0.1:8888", "endpoint: 127.0.0.1:0")
            .replace("  stdout:\n", f"  master:\n    endpoint: {master.url}\n    cluster_id: test\n    queue:\n      directory: \"\"\n")
            .replace("exporters: [stdout]", "exporters: [master]")
            .replace("  node_snapshot:\n", "  node_snapshot:\n    scrape_wait_s: 0\n", 1)
        )
        service = running(text)
        channel, call = export_call(service.receivers["otlp"].grpc_port)
        with channel:
            call(six_node_body(T0), timeout=5)
        wait_until(lambda: service.telemetry.get("otelsnap_exporter_sent_snapshots") == 6, what="six sent snapshots")
        url = f"http://127.0.0.1:{service.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
    finally:
        master.stop()
    sends = re.search(r"^otelsnap_exporter_sends_total\{(.*)\} (\S+)$", body, re.MULTILINE)
    assert sends is not None, body[:3000]
    assert 'exporter="master"' in sends.group(1)
    assert float(sends.group(2)) == 1
    duration = re.search(r"^otelsnap_exporter_send_duration_seconds_total\{(.*)\} (\S+)$", body, re.MULTILINE)
    assert duration is not None, body[:3000]
    assert 'exporter="master"' in duration.group(1)
    assert float(duration.group(2)) > 0
    assert "_sum_total" not in body
    assert "_count_total" not in body


def test_default_pipeline_builds_snapshots(running, tmp_path):
    out = tmp_path / "snapshots.jsonl"
    text = (
        default_config_text()
        .replace("127.0.0.1:4317", "127.0.0.1:0")
        .replace("127.0.0.1:4318", "127.0.0.1:0")
        .replace("endpoint: 127.0.0.1:8888", 'endpoint: ""')
        .replace("  stdout:\n", f"  file:\n    path: {out}\n")
        .replace("exporters: [stdout]", "exporters: [file]")
    )
    service = running(text)
    channel, call = export_call(service.receivers["otlp"].grpc_port)
    with channel:
        call(six_node_body(T0), timeout=5)
        call(six_node_body(T0 + 15_000_000_000), timeout=5)
    service.stop(timeout_s=5)

    snapshots = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    # Node names straight from the text: the nodename label of node_uname_info.
    nodenames = sorted(
        re.search(r'nodename="([^"]+)"', line).group(1)
        for line in sample_lines(six_node_text())
        if line.startswith("otel_node_uname_info{")
    )
    assert len(nodenames) == 6
    assert sorted(s["node_name"] for s in snapshots) == sorted(nodenames * 2)
    assert sorted({s["timestamp"] for s in snapshots}) == [
        "2025-12-22T10:40:00.000Z",
        "2025-12-22T10:40:15.000Z",
    ]


# --- otelsnap run as a process ------------------------------------------------


def start_run(config_path: Path, env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(env_extra or {})
    return subprocess.Popen(
        [str(OTELSNAP), "run", "--config", str(config_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_until(stream, pattern: str, timeout_s: float = WAIT_S) -> tuple[re.Match, list[str]]:
    """Read lines from ``stream`` until one matches ``pattern``."""
    lines: list[str] = []
    found: list[re.Match] = []

    def reader():
        for line in stream:
            lines.append(line)
            match = re.search(pattern, line)
            if match:
                found.append(match)
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not found:
        raise AssertionError(f"no line matched {pattern!r} in {timeout_s} s:\n" + "".join(lines))
    return found[0], lines


def test_run_invalid_config_exits_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(RECEIVER + "service:\n  pipelines:\n    node: {receivers: [otlp]}\n")
    result = subprocess.run(
        [str(OTELSNAP), "run", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert (
        "error: service.pipelines.node.exporters: a pipeline needs at least one exporter"
        in result.stderr
    )
    assert "service_started" not in result.stderr


def test_run_port_in_use_exits_1(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "otelsnap.yaml"
        config.write_text(
            RECEIVER.replace("127.0.0.1:0", f"127.0.0.1:{port}")
            + f"""
exporters:
  file:
    path: {tmp_path / "out.jsonl"}
service:
  telemetry:
    metrics: {{endpoint: ""}}
  pipelines:
    tap: {{receivers: [otlp], exporters: [file]}}
"""
        )
        result = subprocess.run(
            [str(OTELSNAP), "run", "--config", str(config)], capture_output=True, text=True, timeout=60
        )
    assert result.returncode == 1, result.stderr
    assert "event=start_failed" in result.stderr
    assert "service_started" not in result.stderr


def test_telemetry_port_in_use_names_key(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = Service(
            make_config(
                RECEIVER
                + f"""
exporters:
  file:
    path: {tmp_path / "out.jsonl"}
service:
  telemetry:
    metrics: {{endpoint: "127.0.0.1:{port}"}}
  pipelines:
    tap: {{receivers: [otlp], exporters: [file]}}
"""
            )
        )
        with pytest.raises(ConfigError) as caught:
            service.start()
    assert str(caught.value) == (
        f"service.telemetry.metrics.endpoint: cannot listen on 127.0.0.1:{port}: Address already in use; "
        'choose a free port, or set "" to turn the endpoint off'
    )
    assert service.receivers == {}


@pytest.mark.parametrize("where", ["proc", "file_as_directory"])
def test_run_unwritable_file_path_exits_1(tmp_path, where):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the exporter expects a directory")
    if where == "proc":
        path = "/proc/x"  # procfs does not allow new files
        reason = "No such file or directory"
    else:
        path = str(blocker / "out.jsonl")
        reason = f"'{blocker}' is not a directory"
    config = tmp_path / "otelsnap.yaml"
    config.write_text(
        RECEIVER
        + f"""
exporters:
  file/debug:
    path: {path}
service:
  telemetry:
    metrics: {{endpoint: ""}}
  pipelines:
    tap: {{receivers: [otlp], exporters: [file/debug]}}
"""
    )
    result = subprocess.run(
        [str(OTELSNAP), "run", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    expected = (
        f"exporters.file/debug.path: cannot open '{path}' for writing: {reason}; "
        "set a path in a directory otelsnap can write to"
    )
    assert f"event=start_failed error=\"{expected}\"" in result.stderr
    assert "service_started" not in result.stderr


def test_sigterm_drains_and_exits_0(tmp_path):
    out = tmp_path / "out.jsonl"
    config = tmp_path / "otelsnap.yaml"
    config.write_text(
        RECEIVER
        + f"""
exporters:
  file:
    path: {out}
service:
  telemetry:
    metrics: {{endpoint: ""}}
  pipelines:
    tap: {{receivers: [otlp], exporters: [file]}}
"""
    )
    process = start_run(config)
    try:
        match, _ = read_until(process.stderr, r"event=receiver_started .*grpc_endpoint=127\.0\.0\.1:(\d+)")
        port = int(match.group(1))
        channel, call = export_call(port)
        with channel:
            for i in range(5):
                call(six_node_body(T0 + i * 15_000_000_000), timeout=5)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, process.stderr.read()
    lines = out.read_bytes().splitlines()
    # One line per resource of each accepted request.
    assert len(lines) == 5 * 6
    instances = [orjson.loads(line)["resource"]["service.instance.id"] for line in lines]
    expected_instances = {
        re.search(r'instance="([^"]+)"', line).group(1) for line in sample_lines(six_node_text())
    }
    assert len(expected_instances) == 6
    assert sorted(instances) == sorted(list(expected_instances) * 5)
    times = {
        point["time_unix_nano"]
        for line in lines
        for metric in orjson.loads(line)["metrics"]
        for point in metric["points"]
    }
    assert times == {T0 + i * 15_000_000_000 for i in range(5)}
    desk_zero = [orjson.loads(line) for line in lines if DESK_ZERO in line.decode()]
    mem = next(m for m in desk_zero[0]["metrics"] if m["name"] == "node_memory_MemTotal_bytes")
    assert mem["points"][0]["value"] == text_value("node_memory_MemTotal_bytes", DESK_ZERO)


SLOW_PLUGIN = '''
from pipeline.component import Exporter
import time

class SlowExporter(Exporter):
    type_name = "slow"

    def export(self, items, now_ns):
        pass

    def shutdown(self, timeout_s=10.0):
        time.sleep(60)
'''


def test_second_signal_forces_exit(tmp_path):
    # A real plugin package in a directory on PYTHONPATH, as a user installs one.
    (tmp_path / "slow_plugin.py").write_text(SLOW_PLUGIN)
    dist = tmp_path / "slow_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: slow-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[otelsnap.exporters]\nslow = slow_plugin:SlowExporter\n")
    config = tmp_path / "otelsnap.yaml"
    config.write_text(
        RECEIVER
        + """
exporters:
  slow:
service:
  shutdown_timeout_s: 60
  telemetry:
    metrics: {endpoint: ""}
  pipelines:
    tap: {receivers: [otlp], exporters: [slow]}
"""
    )
    process = start_run(config, {"PYTHONPATH": str(tmp_path)})
    try:
        read_until(process.stderr, r"event=service_started")
        process.send_signal(signal.SIGTERM)
        read_until(process.stderr, r"event=service_stopping")
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGINT
    assert elapsed < 20
