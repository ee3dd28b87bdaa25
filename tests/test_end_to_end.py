"""End to end: OTLP in over gRPC, node snapshots out to a stand-in Master.

The six-node recording (two real node_exporter scrapes 15 s apart, the
second advanced by the amounts in advance.yaml) is sent by the
OpenTelemetry SDK's OTLP gRPC exporter to a running Service on 127.0.0.1.
The Master is a real HTTP server on 127.0.0.1 (tests/master_stub.py). The
expected values are read from the node_exporter text with regular
expressions here, not through the product's parser.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from master_stub import MasterStub, Reply
from pipeline.config import load_config_text
from pipeline.recording import read_recording
from pipeline.service import Service

ROOT = Path(__file__).resolve().parent.parent
RECORDING = ROOT / "testdata" / "six-nodes.otlprec"
TEXT = ROOT / "testdata" / "atlhyper-six-nodes" / "otel_all_nodes.txt"
ADVANCE = ROOT / "testdata" / "atlhyper-six-nodes" / "advance.yaml"

SAMPLE_RE = re.compile(r"^otel_(\w+)\{(.*)\} (\S+)$")
LABEL_RE = re.compile(r'(\w+)="([^"]*)"')
SECOND_SCRAPE = "2025-12-22T10:00:15.000Z"

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
    scrape_wait_s: 0.2
exporters:
  master:
    endpoint: {url}
    cluster_id: e2e-cluster
    queue:
      directory: {queue_dir}
    retry_on_failure:
      initial_interval_s: 0.1
      max_interval_s: 0.2
      randomization_factor: 0
service:
  tick_interval_s: 0.1
  telemetry:
    metrics:
      endpoint: ""
  pipelines:
    node:
      receivers: [otlp]
      processors: [filter/node, delta_rate, node_snapshot]
      exporters: [master]
"""


def text_series() -> dict[str, list[tuple[dict[str, str], float]]]:
    """Map metric name (prefix removed) to (labels, value) pairs from the text."""
    series = defaultdict(list)
    for line in TEXT.read_text().splitlines():
        match = SAMPLE_RE.match(line)
        if match:
            name, labels, value = match.groups()
            series[name].append((dict(LABEL_RE.findall(labels)), float(value)))
    return series


def expected_nodes() -> dict[str, dict]:
    """Hand-derived facts per nodename, straight from the text."""
    series = text_series()
    node_of = {labels["instance"]: labels["nodename"] for labels, _ in series["node_uname_info"]}
    facts: dict[str, dict] = {name: {"cpus": set(), "filesystems": {}, "interfaces": set()} for name in node_of.values()}
    for labels, value in series["node_memory_MemTotal_bytes"]:
        facts[node_of[labels["instance"]]]["memory_total"] = int(value)
    for labels, _ in series["node_cpu_seconds_total"]:
        facts[node_of[labels["instance"]]]["cpus"].add(labels["cpu"])
    for labels, _ in series["node_filesystem_size_bytes"]:
        if labels["device"].startswith("/dev/"):
            kept = facts[node_of[labels["instance"]]]["filesystems"]
            # Bind mounts of one device collapse into the shortest mount point.
            current = kept.get(labels["device"])
            if current is None or len(labels["mountpoint"]) < len(current):
                kept[labels["device"]] = labels["mountpoint"]
    virtual = re.compile(
        r"^(lo|veth.*|flannel.*|cni.*|cali.*|docker.*|br-.*|virbr.*|vxlan.*|tunl.*|kube-ipvs.*"
        r"|cilium.*|lxc.*|tap.*|tun.*|ifb.*|dummy.*|vnet.*)$"
    )
    for labels, _ in series["node_network_receive_bytes_total"]:
        if not virtual.match(labels["device"]):
            facts[node_of[labels["instance"]]]["interfaces"].add(labels["device"])
    return facts


def sdk_metrics_data(request) -> MetricsData:
    """Rebuild a recorded OTLP request as SDK objects, for the SDK's exporter."""
    resources = []
    for rm in request.resource_metrics:
        scopes = []
        for sm in rm.scope_metrics:
            metrics = []
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                points = [
                    NumberDataPoint(
                        attributes={kv.key: kv.value.string_value for kv in dp.attributes},
                        start_time_unix_nano=dp.start_time_unix_nano,
                        time_unix_nano=dp.time_unix_nano,
                        value=dp.as_double,
                    )
                    for dp in getattr(m, kind).data_points
                ]
                if kind == "sum":
                    data = Sum(points, AggregationTemporality.CUMULATIVE, m.sum.is_monotonic)
                else:
                    data = Gauge(points)
                metrics.append(Metric(m.name, m.description, m.unit, data))
            scope = InstrumentationScope(sm.scope.name, sm.scope.version)
            scopes.append(ScopeMetrics(scope, metrics, ""))
        attrs = {kv.key: kv.value.string_value for kv in rm.resource.attributes}
        resources.append(ResourceMetrics(Resource(attrs), scopes, ""))
    return MetricsData(resources)


def send_recording(port: int) -> None:
    exporter = OTLPMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True, compression=None, timeout=10)
    try:
        for record in read_recording(RECORDING):
            result = exporter.export(sdk_metrics_data(record.to_request()))
            assert result is MetricExportResult.SUCCESS
    finally:
        exporter.shutdown()


def run_service(tmp_path, master: MasterStub) -> Service:
    text = CONFIG.format(url=master.url, queue_dir=tmp_path / "queue")
    service = Service(load_config_text(text))
    service.start()
    return service


def second_scrape_nodes(master: MasterStub, timeout_s: float = 20.0) -> dict[str, dict]:
    """Wait until all six nodes of the second scrape reached the Master."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        nodes = {}
        for request in master.accepted():
            for name, body in request.body["node_metrics"].items():
                if body["timestamp"] == SECOND_SCRAPE:
                    nodes[name] = body
        if len(nodes) == 6:
            return nodes
        time.sleep(0.05)
    raise AssertionError(f"second scrape of six nodes not delivered; got {sorted(nodes)}")


@pytest.fixture()
def master():
    stub = MasterStub().start()
    yield stub
    stub.stop()


def test_six_nodes_reach_master(tmp_path, master):
    service = run_service(tmp_path, master)
    try:
        send_recording(service.receivers["otlp"].grpc_port)
        nodes = second_scrape_nodes(master)
    finally:
        service.stop(5)

    facts = expected_nodes()
    assert sorted(nodes) == sorted(["desk-zero", "desk-one", "desk-two", "raspi-zero", "raspi-one", "raspi-nfs"])
    assert sorted(facts) == sorted(nodes)

    request = master.accepted()[0]
    assert request.path == "/agent/snapshot"
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Cluster-ID"] == "e2e-cluster"
    assert request.body["cluster_id"] == "e2e-cluster"

    advance = yaml.safe_load(ADVANCE.read_text())
    modes = advance["cpu_modes"]
    busy = sum(v for mode, v in modes.items() if mode != "idle")
    expected_usage = busy / sum(modes.values()) * 100  # 3 s of 15 s = 20 %

    for name, body in nodes.items():
        fact = facts[name]
        assert body["node_name"] == name
        assert body["memory"]["total"] == fact["memory_total"], name
        assert body["cpu"]["cores"] == len(fact["cpus"]), name
        assert body["cpu"]["per_core"] == pytest.approx(
            [expected_usage] * len(fact["cpus"]), rel=1e-9
        ), name
        assert body["cpu"]["usage_percent"] == pytest.approx(expected_usage, rel=1e-9), name
        filesystems = {d["device"]: d["mount_point"] for d in body["disks"] if d["mount_point"]}
        assert filesystems == fact["filesystems"], name
        assert {n["interface"] for n in body["networks"]} == fact["interfaces"], name
        for network in body["networks"]:
            assert network["rx_rate"] == pytest.approx(
                advance["counters"]["node_network_receive_bytes_total"] / advance["interval_s"]
            ), (name, network["interface"])

    # The facts the seed team checked by hand on the cluster itself.
    assert nodes["desk-zero"]["memory"]["total"] == 33528840192
    assert nodes["desk-zero"]["cpu"]["cores"] == 8
    assert nodes["raspi-zero"]["cpu"]["cores"] == 4
    assert [n["interface"] for n in nodes["desk-zero"]["networks"]] == ["eno1"]
    assert nodes["desk-zero"]["networks"][0]["speed"] == 1000
    assert "docker0" not in {n["interface"] for n in nodes["desk-one"]["networks"]}
    assert [d["mount_point"] for d in nodes["desk-zero"]["disks"] if d["mount_point"]] == ["/", "/boot", "/boot/efi"]
    assert nodes["desk-zero"]["disks"][0]["device"] == "/dev/mapper/ubuntu--vg-ubuntu--lv"


def test_master_errors_retried_then_delivered_once(tmp_path):
    master = MasterStub(replies=[Reply(503), Reply(503)]).start()
    try:
        service = run_service(tmp_path, master)
        try:
            send_recording(service.receivers["otlp"].grpc_port)
            second_scrape_nodes(master)
        finally:
            service.stop(5)
        statuses = [r.status for r in master.received]
        assert statuses[:2] == [503, 503]
        delivered = master.nodes_in_order()
        # Every (node, scrape) once, although the first body was sent three times.
        assert len(delivered) == len(set(delivered)) == 12
    finally:
        master.stop()
