"""otelsnap's own telemetry: descriptions, series that exist at 0, the Prometheus endpoint.

The endpoint tests start a real Service with the default configuration on
ephemeral loopback ports and read /metrics with an HTTP GET.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from pipeline import convert, promtext
from pipeline.config import default_config_text, load_config_text
from pipeline.service import Service
from pipeline.telemetry import (
    EXPORTER_START_SERIES,
    INSTRUMENTS,
    PROCESSOR_START_SERIES,
    RECEIVER_REJECT_REASONS,
    Telemetry,
)

ROOT = Path(__file__).parent.parent
SIX_NODES = ROOT / "testdata" / "atlhyper-six-nodes" / "otel_all_nodes.txt"
T0 = 1_760_000_000_000_000_000
EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
# Names in otelsnap_ string literals; the prefix alone (in a docstring) is not a name.
NAME_LITERAL = re.compile(r"\"(otelsnap_[a-z][a-z0-9_]*)\"")


# --- the registry against the code and the docs ----------------------------------


def source_names() -> set[str]:
    names: set[str] = set()
    for directory in ("pipeline", "processors"):
        for path in (ROOT / directory).rglob("*.py"):
            names.update(NAME_LITERAL.findall(path.read_text()))
    return names


def test_every_name_in_code_has_a_description():
    names = source_names()
    assert "otelsnap_processor_dropped_points" in names
    missing = sorted(names - set(INSTRUMENTS))
    assert missing == []


def test_registry_lists_only_names_in_code():
    assert sorted(set(INSTRUMENTS) - source_names()) == []


def test_descriptions_are_sentences():
    for name, (unit, description) in INSTRUMENTS.items():
        assert description[:1].isupper(), name
        assert description.endswith("."), name
        assert unit, name


def test_units_match_name_suffixes():
    # The Prometheus exporter appends a unit that is not already the name's suffix.
    assert INSTRUMENTS["otelsnap_exporter_send_duration_seconds"][0] == "s"
    assert INSTRUMENTS["otelsnap_exporter_queue_bytes"][0] == "By"
    for name, (unit, _) in INSTRUMENTS.items():
        if unit not in ("s", "By"):
            assert unit.startswith("{"), name
            assert unit.endswith("}"), name


def test_docs_list_every_name():
    docs = "\n".join(p.read_text() for p in [*(ROOT / "docs").glob("*.md"), *(ROOT / "docs" / "processors").glob("*.md")])
    # A name may be written with its attributes (`name{reason="write_error"}`),
    # and the service's table shortens a second name to its suffix (`_accepted_points`).
    missing = [
        name
        for name in INSTRUMENTS
        if not re.search(rf"`{name}[`{{]", docs) and f"`_{name.split('_', 2)[2]}`" not in docs
    ]
    assert missing == []


def reasons_in(module: str) -> set[str]:
    """Collect the reason values a module passes to its counters, found by a second route."""
    text = (ROOT / module).read_text()
    found = set(re.findall(r"reason=\"([a-z_]+)\"", text))
    found |= set(re.findall(r"^REASON_[A-Z_]+ = \"([a-z_]+)\"", text, re.MULTILINE))
    found |= set(re.findall(r"_(?:count_dropped|drop)\(.*?, \"([a-z_]+)\"", text))
    return found


@pytest.mark.parametrize(
    ("module", "declared", "not_declared"),
    [
        ("processors/filter.py", PROCESSOR_START_SERIES["filter"], set()),
        # Counter resets are not drops.
        ("processors/delta_rate.py", PROCESSOR_START_SERIES["delta_rate"], {"value_decrease", "reboot"}),
        ("processors/node_snapshot.py", PROCESSOR_START_SERIES["node_snapshot"], set()),
        # "rejected" also carries the HTTP status, unknown before a response.
        ("pipeline/exporters/master.py", EXPORTER_START_SERIES["master"], {"rejected"}),
        (
            "pipeline/exporters/file.py",
            {**EXPORTER_START_SERIES["file"], **EXPORTER_START_SERIES["stdout"]},
            set(),
        ),
    ],
)
def test_start_series_cover_reasons(module, declared, not_declared):
    declared_reasons = {reason for reasons in declared.values() for reason in reasons}
    assert declared_reasons == reasons_in(module) - not_declared


def test_receiver_reject_reasons_match_decoder():
    text = (ROOT / "pipeline" / "decode.py").read_text()
    literals = set(re.findall(r"reject\(\s*\"([^\"]+)\"", text))
    assert literals == set(RECEIVER_REJECT_REASONS)


# --- Telemetry.declare with the SDK -------------------------------------------------


def sdk_points(reader: InMemoryMetricReader) -> dict[str, dict[tuple, float]]:
    points: dict[str, dict[tuple, float]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                table = points.setdefault(metric.name, {})
                for point in metric.data.data_points:
                    table[tuple(sorted(point.attributes.items()))] = point.value
    return points


def test_declare_zero_on_meter_only():
    telemetry = Telemetry()
    telemetry.declare("otelsnap_processor_dropped_points", processor="filter/node", reason="block_device")
    telemetry.add("otelsnap_processor_dropped_points", 3, processor="filter/node", reason="network_interface")
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry.bind_meter(provider.get_meter("otelsnap"))
    telemetry.declare("otelsnap_exporter_dropped_snapshots", exporter="master", reason="queue_full")

    points = sdk_points(reader)
    assert points["otelsnap_processor_dropped_points"] == {
        (("processor", "filter/node"), ("reason", "block_device")): 0,
        (("processor", "filter/node"), ("reason", "network_interface")): 3,
    }
    assert points["otelsnap_exporter_dropped_snapshots"] == {
        (("exporter", "master"), ("reason", "queue_full")): 0,
    }
    # In-memory counts, read by summaries and tests, get no zero entries.
    assert telemetry.snapshot() == {
        "otelsnap_processor_dropped_points": {(("processor", "filter/node"), ("reason", "network_interface")): 3},
    }
    telemetry.add("otelsnap_exporter_dropped_snapshots", 2, exporter="master", reason="queue_full")
    assert sdk_points(reader)["otelsnap_exporter_dropped_snapshots"] == {
        (("exporter", "master"), ("reason", "queue_full")): 2,
    }
    provider.shutdown()


def test_instruments_carry_description_and_unit():
    telemetry = Telemetry()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    telemetry.bind_meter(provider.get_meter("otelsnap"))
    telemetry.add("otelsnap_exporter_send_duration_seconds", 0.25, exporter="master")
    telemetry.set("otelsnap_exporter_queue_bytes", 512, exporter="master")
    metrics = {
        m.name: m
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    duration = metrics["otelsnap_exporter_send_duration_seconds"]
    assert (duration.unit, duration.description) == ("s", "Total time of the requests to the Master.")
    queue_bytes = metrics["otelsnap_exporter_queue_bytes"]
    assert (queue_bytes.unit, queue_bytes.description) == ("By", "Serialized bytes in the exporter's queue.")
    provider.shutdown()


# --- the Prometheus endpoint of a running service ------------------------------------


@pytest.fixture
def service():
    text = (
        default_config_text()
        .replace("127.0.0.1:4317", "127.0.0.1:0")
        .replace("127.0.0.1:4318", "127.0.0.1:0")
        .replace("endpoint: 127.0.0.1:8888", "endpoint: 127.0.0.1:0")
        .replace("  node_snapshot:\n", "  node_snapshot:\n    scrape_wait_s: 0\n", 1)
    )
    running = Service(load_config_text(text, env={}))
    running.start()
    yield running
    running.stop(timeout_s=5)


def scrape(service: Service) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5) as response:
        assert response.status == 200
        return response.read().decode()


def series_value(body: str, name: str, labels: str) -> float | None:
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", body, re.MULTILINE)
    return None if match is None else float(match.group(1))


def test_endpoint_zero_drops_before_traffic(service):
    body = scrape(service)
    assert (
        "# HELP otelsnap_processor_dropped_points_total Points a processor dropped, by reason.\n" in body
    ), body[:3000]
    assert "# HELP otelsnap_service_queue_size Requests waiting for the worker thread.\n" in body
    dropped = "otelsnap_processor_dropped_points_total"
    assert series_value(body, dropped, 'processor="filter/node",reason="network_interface"') == 0.0
    assert series_value(body, dropped, 'processor="delta_rate",reason="duplicate"') == 0.0
    assert series_value(body, dropped, 'processor="node_snapshot",reason="late_scrape_part"') == 0.0
    refused = "otelsnap_service_refused_requests_total"
    assert series_value(body, refused, 'reason="queue_full",receiver="otlp"') == 0.0
    requests = "otelsnap_receiver_requests_total"
    assert series_value(body, requests, 'outcome="invalid",transport="grpc"') == 0.0
    assert series_value(body, requests, 'outcome="too_large",transport="http"') == 0.0
    # gRPC has no too_large outcome: grpcio rejects those messages itself.
    assert series_value(body, requests, 'outcome="too_large",transport="grpc"') is None
    lines = "otelsnap_exporter_dropped_lines_total"
    assert series_value(body, lines, 'exporter="stdout",reason="stdout_closed"') == 0.0
    service_dropped = "otelsnap_service_dropped_points_total"
    assert series_value(body, service_dropped, 'component="delta_rate",pipeline="node",reason="component_error"') == 0.0


def test_endpoint_without_scope_labels(service):
    body = scrape(service)
    assert "otel_scope_" not in body
    helps = re.findall(r"^# HELP (otelsnap_\S+) ?(.*)$", body, re.MULTILINE)
    assert len(helps) >= 10
    for name, text in helps:
        assert text, name


def wait_until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def six_node_body() -> bytes:
    exposition = promtext.parse(SIX_NODES.read_text())
    request = convert.exposition_to_request(exposition, T0, convert.ConvertOptions(strip_prefix="otel_"))
    return request.SerializeToString()


def test_declared_series_count_traffic(service, capsys):
    channel = grpc.insecure_channel(f"127.0.0.1:{service.receivers['otlp'].grpc_port}")
    call = channel.unary_unary(
        EXPORT, request_serializer=None, response_deserializer=ExportMetricsServiceResponse.FromString
    )
    with channel:
        call(six_node_body(), timeout=5)
    name = "otelsnap_processor_dropped_points"
    wait_until(lambda: service.telemetry.get("otelsnap_node_snapshot_snapshots") == 6)
    body = scrape(service)
    dropped = f"{name}_total"
    # The filter's documented figures for this sample: 140 filesystem points
    # (shm, tmpfs), 527 network interface points, 15 block device points (dm-0).
    assert series_value(body, dropped, 'processor="filter/node",reason="filesystem_device"') == 140.0
    assert series_value(body, dropped, 'processor="filter/node",reason="network_interface"') == 527.0
    assert series_value(body, dropped, 'processor="filter/node",reason="block_device"') == 15.0
    assert series_value(body, dropped, 'processor="filter/node",reason="metric_not_included"') == 0.0
    assert series_value(body, "otelsnap_service_refused_requests_total", 'reason="queue_full",receiver="otlp"') == 0.0
    capsys.readouterr()
