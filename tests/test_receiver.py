"""The OTLP receiver against real clients on 127.0.0.1 (ephemeral ports).

Clients: the OpenTelemetry SDK's OTLP exporters (gRPC and HTTP), plain grpcio
channels, http.client, and a few hand-built HTTP/2 frames for what no client
here can send (a zstd-compressed gRPC message).
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import re
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
import requests
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from pipeline.component import ComponentContext, ConfigError
from pipeline.convert import ConvertOptions, exposition_to_request
from pipeline.decode import DecodeResult
from pipeline.model import MetricKind
from pipeline.promtext import parse
from pipeline.receiver import (
    METRICS_SERVICE,
    AuthConfig,
    GrpcProtocolConfig,
    HttpProtocolConfig,
    OtlpReceiver,
    OtlpReceiverConfig,
    ProtocolsConfig,
    RawRequest,
    TLSServerConfig,
    gunzip,
)
from pipeline.runtime import Admission
from pipeline.telemetry import Telemetry

TESTDATA = Path(__file__).resolve().parent.parent / "testdata" / "atlhyper-six-nodes"
EXPORT_PATH = f"/{METRICS_SERVICE}/Export"
SCRAPE_NS = 1_766_397_600_000_000_000  # 2025-12-22T10:00:00Z
NO_PROXY = [("grpc.enable_http_proxy", 0)]


# ---------------------------------------------------------------- helpers


class RecordingConsumer:
    """A Consumer that keeps what it is given and returns ``admission``.

    With ``gate`` set, submit() waits for it (up to 10 s), to hold a request
    in flight; a real consumer never blocks.
    """

    def __init__(self, admission: Admission | None = None) -> None:
        self.admission = admission or Admission(True)
        self.submitted: list[tuple[DecodeResult, int, str]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.lock = threading.Lock()

    def submit(self, result: DecodeResult, received_ns: int, transport: str) -> Admission:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        with self.lock:
            self.submitted.append((result, received_ns, transport))
        return self.admission

    def points(self) -> int:
        return sum(result.points for result, _, _ in self.submitted)

    def metrics(self) -> dict:
        """Metric name → Metric over everything submitted (last one wins)."""
        out = {}
        for result, _, _ in self.submitted:
            for rm in result.batch:
                for metric in rm.metrics:
                    out[metric.name] = metric
        return out


def receiver_config(grpc_on=True, http_on=True, **kwargs) -> OtlpReceiverConfig:
    protocols = ProtocolsConfig(
        grpc=GrpcProtocolConfig(endpoint="127.0.0.1:0", **kwargs.pop("grpc", {})) if grpc_on else None,
        http=HttpProtocolConfig(endpoint="127.0.0.1:0", **kwargs.pop("http", {})) if http_on else None,
    )
    config = OtlpReceiverConfig(protocols=protocols, **kwargs)
    config.validate()
    return config


@contextmanager
def running(config: OtlpReceiverConfig, consumer=None, raw_sink=None):
    consumer = consumer or RecordingConsumer()
    context = ComponentContext(component_id="otlp", telemetry=Telemetry())
    receiver = OtlpReceiver(config, consumer, context, raw_sink=raw_sink)
    receiver.start()
    try:
        yield receiver, consumer
    finally:
        receiver.shutdown(grace_s=0)


def six_node_request() -> ExportMetricsServiceRequest:
    text = (TESTDATA / "otel_all_nodes.txt").read_text()
    return exposition_to_request(parse(text), SCRAPE_NS, ConvertOptions(strip_prefix="otel_"))


def desk_zero_request() -> ExportMetricsServiceRequest:
    text = (TESTDATA / "otel_desk_zero.txt").read_text()
    return exposition_to_request(parse(text), SCRAPE_NS, ConvertOptions(strip_prefix="otel_"))


def grpc_export(port, body: bytes, metadata=None, compression=None, credentials=None, target_host="127.0.0.1"):
    """Send raw bytes to Export; return the parsed response (raises grpc.RpcError)."""
    target = f"{target_host}:{port}"
    if credentials is None:
        channel = grpc.insecure_channel(target, options=NO_PROXY)
    else:
        channel = grpc.secure_channel(
            target, credentials, options=NO_PROXY + [("grpc.ssl_target_name_override", "localhost")]
        )
    with channel:
        call = channel.unary_unary(EXPORT_PATH)  # bytes in, bytes out
        reply = call(body, metadata=metadata, compression=compression, timeout=10)
    return ExportMetricsServiceResponse.FromString(reply)


def http_post(port, body: bytes, headers=None, path="/v1/metrics", method="POST", context=None):
    """Send one request on a new connection; return (status, headers, body)."""
    if context is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        all_headers = {"Content-Type": "application/x-protobuf"}
        all_headers.update(headers or {})
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def invented_request_with_exponential_histogram() -> ExportMetricsServiceRequest:
    """Invented data: the six-node sample has no exponential histograms."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.add(key="service.name", value={"string_value": "invented"})
    sm = rm.scope_metrics.add()
    gauge = sm.metrics.add(name="queue_depth")
    for value in (3.0, 4.0):
        gauge.gauge.data_points.add(time_unix_nano=SCRAPE_NS, as_double=value)
    exp = sm.metrics.add(name="latency_seconds")
    exp.exponential_histogram.aggregation_temporality = 2
    for count in (1, 2, 3):
        exp.exponential_histogram.data_points.add(time_unix_nano=SCRAPE_NS, count=count, scale=2)
    return request


def telemetry_of(receiver: OtlpReceiver) -> Telemetry:
    return receiver.telemetry


# ---------------------------------------------------------------- real clients


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_exporter_gzip_values(transport):
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
    from opentelemetry.sdk.resources import Resource

    reader = InMemoryMetricReader()
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": "receiver-test"})
    )
    meter = provider.get_meter("test")
    requests_total = meter.create_counter("requests")
    requests_total.add(3, {"route": "/a"})
    requests_total.add(4, {"route": "/a"})
    requests_total.add(10, {"route": "/b"})
    latency = meter.create_histogram("latency_ms")
    latency.record(0.5)
    latency.record(7)
    temperature = meter.create_gauge("temperature_celsius")
    temperature.set(42.5, {"sensor": "temp1"})
    metrics_data = reader.get_metrics_data()
    provider.shutdown()

    raw: list[RawRequest] = []
    with running(receiver_config(), raw_sink=raw.append) as (receiver, consumer):
        if transport == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter(
                endpoint=f"127.0.0.1:{receiver.grpc_port}",
                insecure=True,
                compression=grpc.Compression.Gzip,
                channel_options=tuple(NO_PROXY),
            )
        else:
            from opentelemetry.exporter.otlp.proto.http import Compression
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            session = requests.Session()
            session.trust_env = False  # never through a proxy
            exporter = OTLPMetricExporter(
                endpoint=f"http://127.0.0.1:{receiver.http_port}/v1/metrics",
                compression=Compression.Gzip,
                session=session,
            )
        assert exporter.export(metrics_data) == MetricExportResult.SUCCESS
        exporter.shutdown()

    assert len(consumer.submitted) == 1
    result, received_ns, got_transport = consumer.submitted[0]
    assert got_transport == transport
    assert received_ns > 0
    assert result.rejected == 0
    assert result.batch[0].attrs["service.name"] == "receiver-test"
    metrics = consumer.metrics()
    assert sorted(metrics) == ["latency_ms", "requests", "temperature_celsius"]

    counter = metrics["requests"]
    assert counter.kind is MetricKind.SUM
    assert counter.monotonic is True
    by_route = {attrs["route"]: value for attrs, value in zip(counter.attrs, counter.values)}
    assert by_route == {"/a": 7.0, "/b": 10.0}

    histogram = metrics["latency_ms"]
    assert histogram.kind is MetricKind.HISTOGRAM
    value = histogram.extras[0]
    assert value.count == 2
    assert value.sum == 7.5
    # SDK default bounds start 0, 5, 10: 0.5 falls in (0, 5], 7 in (5, 10].
    assert value.bounds[:3] == (0.0, 5.0, 10.0)
    assert value.bucket_counts[:4] == (0, 1, 1, 0)
    assert sum(value.bucket_counts) == 2

    gauge = metrics["temperature_celsius"]
    assert gauge.kind is MetricKind.GAUGE
    assert gauge.values == [42.5]
    assert gauge.attrs == [{"sensor": "temp1"}]

    assert len(raw) == 1
    assert raw[0].transport == transport
    assert raw[0].content_type == "application/x-protobuf"
    assert raw[0].compression == ("gzip" if transport == "http" else "")
    recorded = ExportMetricsServiceRequest.FromString(raw[0].body)
    recorded_names = {m.name for rm in recorded.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert recorded_names == {"latency_ms", "requests", "temperature_celsius"}
    # Two counter series, one histogram point, one gauge point.
    assert telemetry_of(receiver).get("otelsnap_receiver_accepted_points", transport=transport) == 4


def test_six_nodes_over_grpc_gzip():
    text = (TESTDATA / "otel_all_nodes.txt").read_text()
    # Independent count: one series per non-comment line, grouped by instance.
    per_instance = Counter(re.search(r'instance="([^"]+)"', line).group(1) for line in text.splitlines() if line and not line.startswith("#"))
    assert sum(per_instance.values()) == 1499
    assert len(per_instance) == 6

    body = six_node_request().SerializeToString()
    with running(receiver_config(http_on=False)) as (receiver, consumer):
        response = grpc_export(receiver.grpc_port, body, compression=grpc.Compression.Gzip)

    assert not response.HasField("partial_success")
    assert len(consumer.submitted) == 1
    result = consumer.submitted[0][0]
    assert result.points == 1499
    assert result.rejected == 0
    points_by_instance = Counter()
    for rm in result.batch:
        points_by_instance[rm.attrs["service.instance.id"]] += rm.point_count()
    assert points_by_instance == per_instance
    assert len({rm.key for rm in result.batch}) == 6


# ---------------------------------------------------------------- malformed, partial success


def test_grpc_malformed_then_valid():
    with running(receiver_config(http_on=False)) as (receiver, consumer):
        # Field 1 (resource_metrics) announces 5 bytes but only 1 follows.
        with pytest.raises(grpc.RpcError) as info:
            grpc_export(receiver.grpc_port, b"\x0a\x05\xff")
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "request body of 3 bytes" in info.value.details()
        assert "ExportMetricsServiceRequest" in info.value.details()

        grpc_export(receiver.grpc_port, desk_zero_request().SerializeToString())
        telemetry = telemetry_of(receiver)
        assert telemetry.get("otelsnap_receiver_requests", transport="grpc", outcome="invalid") == 1
        assert telemetry.get("otelsnap_receiver_requests", transport="grpc", outcome="accepted") == 1
    assert len(consumer.submitted) == 1


def test_grpc_partial_success_exponential_histogram():
    body = invented_request_with_exponential_histogram().SerializeToString()
    with running(receiver_config(http_on=False)) as (receiver, consumer):
        response = grpc_export(receiver.grpc_port, body)
        telemetry = telemetry_of(receiver)
        rejected = telemetry.get(
            "otelsnap_receiver_rejected_points",
            transport="grpc",
            reason="exponential histograms are not supported",
        )
    assert response.partial_success.rejected_data_points == 3
    assert response.partial_success.error_message == "3 points: exponential histograms are not supported"
    assert consumer.points() == 2
    assert rejected == 3


def test_http_partial_success_json_reply():
    body = json_format.MessageToJson(invented_request_with_exponential_histogram()).encode()
    with running(receiver_config(grpc_on=False)) as (receiver, consumer):
        status, headers, reply = http_post(receiver.http_port, body, {"Content-Type": "application/json"})
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    decoded = json.loads(reply)
    # OTLP/JSON writes int64 as a decimal string.
    assert decoded["partialSuccess"]["rejectedDataPoints"] == "3"
    assert decoded["partialSuccess"]["errorMessage"] == "3 points: exponential histograms are not supported"
    assert consumer.points() == 2


# ---------------------------------------------------------------- overload


def test_grpc_overload_unavailable():
    consumer = RecordingConsumer(Admission(False, 2.5, "processing queue is full", "queue_full"))
    body = desk_zero_request().SerializeToString()
    with running(receiver_config(http_on=False), consumer) as (receiver, _):
        with pytest.raises(grpc.RpcError) as info:
            grpc_export(receiver.grpc_port, body)
        refused = telemetry_of(receiver).get(
            "otelsnap_receiver_refused_points", transport="grpc", reason="queue_full"
        )
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.details() == "processing queue is full; retry after 2.5 s"
    # The desk-zero file has one series per line.
    lines = [line for line in (TESTDATA / "otel_desk_zero.txt").read_text().splitlines() if line and line[0] != "#"]
    assert refused == len(lines)


def test_grpc_overload_resource_exhausted_retry_info():
    consumer = RecordingConsumer(Admission(False, 2.5, "processing queue is full"))
    config = receiver_config(http_on=False, overload_status="resource_exhausted")
    with running(config, consumer) as (receiver, _):
        with pytest.raises(grpc.RpcError) as info:
            grpc_export(receiver.grpc_port, desk_zero_request().SerializeToString())
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(info.value)
    assert status is not None
    assert status.code == code_pb2.RESOURCE_EXHAUSTED
    retry_infos = [d for d in status.details if d.Is(error_details_pb2.RetryInfo.DESCRIPTOR)]
    assert len(retry_infos) == 1
    retry_info = error_details_pb2.RetryInfo()
    retry_infos[0].Unpack(retry_info)
    assert retry_info.retry_delay.seconds == 2
    assert retry_info.retry_delay.nanos == 500_000_000


@pytest.mark.parametrize(
    ("overload_status", "http_status", "rpc_code"),
    [("unavailable", 503, code_pb2.UNAVAILABLE), ("resource_exhausted", 429, code_pb2.RESOURCE_EXHAUSTED)],
)
def test_http_overload_retry_after(overload_status, http_status, rpc_code):
    consumer = RecordingConsumer(Admission(False, 2.5, "processing queue is full"))
    config = receiver_config(grpc_on=False, overload_status=overload_status)
    with running(config, consumer) as (receiver, _):
        status, headers, reply = http_post(receiver.http_port, desk_zero_request().SerializeToString())
    assert status == http_status
    assert headers["Retry-After"] == "3"  # 2.5 s rounded up to whole seconds
    decoded = status_pb2.Status.FromString(reply)
    assert decoded.code == rpc_code
    assert decoded.message.startswith("processing queue is full")


def test_http_retry_after_at_least_one_second():
    consumer = RecordingConsumer(Admission(False, 0.0, "exporter queue is full"))
    with running(receiver_config(grpc_on=False), consumer) as (receiver, _):
        status, headers, _ = http_post(receiver.http_port, desk_zero_request().SerializeToString())
    assert status == 503
    assert headers["Retry-After"] == "1"


# ---------------------------------------------------------------- health, size limits


def test_health_serving_then_not_serving():
    with running(receiver_config(http_on=False)) as (receiver, _):
        channel = grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}", options=NO_PROXY)
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", METRICS_SERVICE):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND

        watch = stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        receiver.shutdown(grace_s=1)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        channel.close()


def test_grpc_oversized_message_rejected_by_grpc():
    request = ExportMetricsServiceRequest()
    six_nodes = six_node_request()
    while request.ByteSize() <= 1 << 20:  # about 106 kB per copy: 10 copies pass 1 MiB
        request.MergeFrom(six_nodes)
    body = request.SerializeToString()
    config = receiver_config(http_on=False, grpc={"max_recv_msg_size_mib": 1})
    with running(config) as (receiver, consumer):
        with pytest.raises(grpc.RpcError) as plain:
            grpc_export(receiver.grpc_port, body)
        with pytest.raises(grpc.RpcError) as gzipped:
            grpc_export(receiver.grpc_port, body, compression=grpc.Compression.Gzip)
        grpc_export(receiver.grpc_port, six_nodes.SerializeToString())
    # What the sender sees comes from grpc itself, before the handler runs.
    assert plain.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert plain.value.details() == f"SERVER: Received message larger than max ({len(body)} vs. {1 << 20})"
    assert gzipped.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in gzipped.value.details()
    assert len(consumer.submitted) == 1
    assert consumer.points() == 1499


def test_http_body_too_large():
    body = desk_zero_request().SerializeToString()
    big = body * ((2 << 20) // len(body) + 1)
    config = receiver_config(grpc_on=False, http={"max_request_body_size_mib": 1})
    with running(config) as (receiver, consumer):
        status, _, reply = http_post(receiver.http_port, big)
        assert status == 413
        assert "larger than the limit of 1048576 bytes" in status_pb2.Status.FromString(reply).message

        bomb = gzip.compress(bytes(3 << 20))  # 3 MiB of zeros, a few kB compressed
        assert len(bomb) < 1 << 20
        status, _, _ = http_post(receiver.http_port, bomb, {"Content-Encoding": "gzip"})
        assert status == 413

        status, _, _ = http_post(receiver.http_port, gzip.compress(body), {"Content-Encoding": "gzip"})
        assert status == 200
        assert telemetry_of(receiver).get("otelsnap_receiver_requests", transport="http", outcome="too_large") == 2
    assert len(consumer.submitted) == 1


def test_gunzip_multiple_members():
    assert gunzip(gzip.compress(b"abc") + gzip.compress(b"def"), 100) == b"abcdef"


# ---------------------------------------------------------------- HTTP details


def test_http_json_body():
    # Hand-written OTLP/JSON: int64 as strings, enum as integer, an unknown field.
    body = {
        "resourceMetrics": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-test"}}]},
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": "node_network_receive_bytes_total",
                                "futureField": {"ignored": True},
                                "sum": {
                                    "aggregationTemporality": 2,
                                    "isMonotonic": True,
                                    "dataPoints": [
                                        {
                                            "attributes": [{"key": "device", "value": {"stringValue": "eth0"}}],
                                            "timeUnixNano": "1766397600000000000",
                                            "asInt": "123456789012",
                                        }
                                    ],
                                },
                            }
                        ]
                    }
                ],
            }
        ]
    }
    raw: list[RawRequest] = []
    with running(receiver_config(grpc_on=False), raw_sink=raw.append) as (receiver, consumer):
        status, headers, reply = http_post(
            receiver.http_port, json.dumps(body).encode(), {"Content-Type": "application/json; charset=utf-8"}
        )
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(reply) == {}
    metric = consumer.metrics()["node_network_receive_bytes_total"]
    assert metric.values == [123456789012.0]
    assert metric.times == [1766397600000000000]
    assert metric.attrs == [{"device": "eth0"}]
    assert metric.monotonic is True
    assert raw[0].content_type == "application/json"
    assert raw[0].compression == ""


def test_http_json_of_six_nodes():
    request = six_node_request()
    body = gzip.compress(json_format.MessageToJson(request).encode())
    with running(receiver_config(grpc_on=False)) as (receiver, consumer):
        status, _, _ = http_post(
            receiver.http_port, body, {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )
    assert status == 200
    assert consumer.points() == 1499


def test_http_errors():
    with running(receiver_config(grpc_on=False)) as (receiver, consumer):
        port = receiver.http_port
        valid = desk_zero_request().SerializeToString()

        status, _, reply = http_post(port, b"\x0a\x05\xff")
        assert status == 400
        decoded = status_pb2.Status.FromString(reply)
        assert decoded.code == code_pb2.INVALID_ARGUMENT
        assert "request body of 3 bytes" in decoded.message

        status, headers, reply = http_post(port, b'{"resourceMetrics": 5}', {"Content-Type": "application/json"})
        assert status == 400
        assert headers["Content-Type"] == "application/json"
        assert json.loads(reply)["code"] == code_pb2.INVALID_ARGUMENT

        status, _, _ = http_post(port, b"\x00garbage", {"Content-Encoding": "gzip"})
        assert status == 400

        status, _, _ = http_post(port, valid, path="/v1/traces")
        assert status == 404

        status, headers, _ = http_post(port, b"", method="GET")
        assert status == 405
        assert headers["Allow"] == "POST"

        status, _, reply = http_post(port, valid, {"Content-Type": "text/plain"})
        assert status == 415
        assert b"application/x-protobuf" in reply

        status, _, reply = http_post(port, valid, {"Content-Encoding": "zstd"})
        assert status == 415
        assert "compression: gzip" in status_pb2.Status.FromString(reply).message

        status, _, _ = http_post(port, valid)
        assert status == 200
        assert telemetry_of(receiver).get("otelsnap_receiver_requests", transport="http", outcome="invalid") == 7
    assert len(consumer.submitted) == 1


def test_http_keep_alive_and_chunked():
    body = desk_zero_request().SerializeToString()
    with running(receiver_config(grpc_on=False)) as (receiver, consumer):
        conn = http.client.HTTPConnection("127.0.0.1", receiver.http_port, timeout=10)
        conn.request("POST", "/v1/metrics", body=body, headers={"Content-Type": "application/x-protobuf"})
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        chunks = (body[i : i + 4096] for i in range(0, len(body), 4096))
        conn.request(
            "POST", "/v1/metrics", body=chunks, headers={"Content-Type": "application/x-protobuf"}, encode_chunked=True
        )
        second = conn.getresponse()
        second.read()
        # An error reply before the body was read keeps the connection too:
        # the server reads and discards the body.
        conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/x-protobuf"})
        wrong_path = conn.getresponse()
        wrong_path.read()
        conn.request("POST", "/v1/metrics", body=body, headers={"Content-Type": "text/plain"})
        wrong_type = conn.getresponse()
        wrong_type.read()
        conn.request("POST", "/v1/metrics", body=body, headers={"Content-Type": "application/x-protobuf"})
        third = conn.getresponse()
        third.read()
        assert conn.sock is sock  # the same connection carried every request
        conn.close()
    assert first.status == 200
    assert second.status == 200
    assert wrong_path.status == 404
    assert wrong_type.status == 415
    assert third.status == 200
    assert first.getheader("Connection") is None
    assert wrong_path.getheader("Connection") is None
    assert len(consumer.submitted) == 3
    assert consumer.submitted[0][0].points == consumer.submitted[1][0].points


# ---------------------------------------------------------------- auth, TLS


def test_bearer_auth(caplog):
    token = "s3cret-token-value"
    config = receiver_config(auth=AuthConfig(bearer_token=token))
    body = desk_zero_request().SerializeToString()
    caplog.set_level(logging.DEBUG)
    with running(config) as (receiver, consumer):
        for metadata in (None, (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as info:
                grpc_export(receiver.grpc_port, body, metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        grpc_export(receiver.grpc_port, body, metadata=(("authorization", f"Bearer {token}"),))

        assert http_post(receiver.http_port, body)[0] == 401
        assert http_post(receiver.http_port, body, {"Authorization": "Bearer wrong"})[0] == 401
        assert http_post(receiver.http_port, body, {"Authorization": token})[0] == 401
        assert http_post(receiver.http_port, body, {"Authorization": f"Bearer {token}"})[0] == 200
        telemetry = telemetry_of(receiver)
        assert telemetry.get("otelsnap_receiver_requests", transport="grpc", outcome="unauthenticated") == 2
        assert telemetry.get("otelsnap_receiver_requests", transport="http", outcome="unauthenticated") == 3
    assert len(consumer.submitted) == 2
    assert "request_unauthenticated" in caplog.text
    assert "receiver_started" in caplog.text
    assert token not in caplog.text
    assert token not in repr(config)


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    directory = tmp_path_factory.mktemp("certs")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca", cwd=directory)
    (directory / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
        extra = ["-extfile", "server.ext"] if name == "server" else []
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-out", f"{name}.pem", *extra, cwd=directory,
        )
    return directory


def test_tls_both_transports(certs):
    tls = TLSServerConfig(cert_file=str(certs / "server.pem"), key_file=str(certs / "server.key"))
    config = receiver_config(grpc={"tls": tls}, http={"tls": tls})
    body = desk_zero_request().SerializeToString()
    ca = (certs / "ca.pem").read_bytes()
    with running(config) as (receiver, consumer):
        grpc_export(receiver.grpc_port, body, credentials=grpc.ssl_channel_credentials(root_certificates=ca))
        client_context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        status, _, _ = http_post(receiver.http_port, body, context=client_context)
        assert status == 200
        with pytest.raises((ssl.SSLError, ConnectionError)):
            http_post(receiver.http_port, body)  # plain HTTP to a TLS port
    assert [transport for _, _, transport in consumer.submitted] == ["grpc", "http"]


def test_mtls_requires_client_certificate(certs):
    tls = TLSServerConfig(
        cert_file=str(certs / "server.pem"),
        key_file=str(certs / "server.key"),
        client_ca_file=str(certs / "ca.pem"),
    )
    config = receiver_config(grpc={"tls": tls}, http={"tls": tls})
    body = desk_zero_request().SerializeToString()
    ca = (certs / "ca.pem").read_bytes()
    client_key = (certs / "client.key").read_bytes()
    client_cert = (certs / "client.pem").read_bytes()
    with running(config) as (receiver, consumer):
        with pytest.raises(grpc.RpcError) as info:
            grpc_export(receiver.grpc_port, body, credentials=grpc.ssl_channel_credentials(root_certificates=ca))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        grpc_export(
            receiver.grpc_port,
            body,
            credentials=grpc.ssl_channel_credentials(ca, private_key=client_key, certificate_chain=client_cert),
        )

        without_cert = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            http_post(receiver.http_port, body, context=without_cert)
        with_cert = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        with_cert.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
        assert http_post(receiver.http_port, body, context=with_cert)[0] == 200
    assert len(consumer.submitted) == 2


# ---------------------------------------------------------------- shutdown, raw sink, start errors


def test_grpc_shutdown_waits_for_in_flight_request():
    consumer = RecordingConsumer()
    consumer.gate = threading.Event()
    body = desk_zero_request().SerializeToString()
    receiver_ctx = running(receiver_config(http_on=False), consumer)
    receiver, _ = receiver_ctx.__enter__()
    port = receiver.grpc_port
    outcome = {}

    def send():
        try:
            outcome["response"] = grpc_export(port, body)
        except grpc.RpcError as err:
            outcome["error"] = err.code()

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert consumer.entered.wait(5)
        stopper = threading.Thread(target=receiver.shutdown, kwargs={"grace_s": 5})
        stopper.start()
        time.sleep(0.3)
        assert stopper.is_alive()  # still waiting for the request in flight
        with pytest.raises(grpc.RpcError) as refused:
            grpc_export(port, body)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        consumer.gate.set()
        sender.join(5)
        stopper.join(5)
        assert not stopper.is_alive()
    finally:
        consumer.gate.set()
        receiver_ctx.__exit__(None, None, None)
    assert "response" in outcome, outcome
    assert len(consumer.submitted) == 1


def test_http_shutdown_waits_for_in_flight_request():
    consumer = RecordingConsumer()
    consumer.gate = threading.Event()
    body = desk_zero_request().SerializeToString()
    receiver_ctx = running(receiver_config(grpc_on=False), consumer)
    receiver, _ = receiver_ctx.__enter__()
    port = receiver.http_port
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    idle.connect()  # an idle keep-alive connection must not hold the shutdown
    outcome = {}

    def send():
        outcome["status"] = http_post(port, body)[0]

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert consumer.entered.wait(5)
        started = time.monotonic()
        stopper = threading.Thread(target=receiver.shutdown, kwargs={"grace_s": 5})
        stopper.start()
        time.sleep(0.3)
        assert stopper.is_alive()
        with pytest.raises(ConnectionError):
            http_post(port, body)
        consumer.gate.set()
        sender.join(5)
        stopper.join(5)
        assert not stopper.is_alive()
        assert time.monotonic() - started < 4  # ended when the request did, not at the grace limit
    finally:
        consumer.gate.set()
        idle.close()
        receiver_ctx.__exit__(None, None, None)
    assert outcome == {"status": 200}


def test_shutdown_grace_expires():
    consumer = RecordingConsumer()
    consumer.gate = threading.Event()
    receiver_ctx = running(receiver_config(grpc_on=False), consumer)
    receiver, _ = receiver_ctx.__enter__()
    outcome = {}

    def send():
        try:
            outcome["status"] = http_post(receiver.http_port, desk_zero_request().SerializeToString())[0]
        except (ConnectionError, http.client.HTTPException) as err:
            outcome["error"] = err

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert consumer.entered.wait(5)
        started = time.monotonic()
        receiver.shutdown(grace_s=0.5)
        elapsed = time.monotonic() - started
    finally:
        consumer.gate.set()
        sender.join(5)
        receiver_ctx.__exit__(None, None, None)
    assert 0.5 <= elapsed < 2.5
    assert "error" in outcome, outcome  # the request was cut at the grace limit


def test_raw_sink_failure_does_not_fail_request():
    def broken_sink(raw: RawRequest) -> None:
        raise OSError("disk full")

    body = desk_zero_request().SerializeToString()
    with running(receiver_config(), raw_sink=broken_sink) as (receiver, consumer):
        grpc_export(receiver.grpc_port, body)
        assert http_post(receiver.http_port, body)[0] == 200
        telemetry = telemetry_of(receiver)
        assert telemetry.get("otelsnap_receiver_raw_sink_errors") == 2
    assert len(consumer.submitted) == 2


def test_raw_sink_sees_refused_request_before_consumer():
    order = []
    consumer = RecordingConsumer(Admission(False, 1.0, "processing queue is full"))
    original_submit = consumer.submit
    consumer.submit = lambda *args: (order.append("consumer"), original_submit(*args))[1]
    body = desk_zero_request().SerializeToString()
    with running(receiver_config(http_on=False), consumer, raw_sink=lambda raw: order.append(raw.body)) as (receiver, _):
        with pytest.raises(grpc.RpcError):
            grpc_export(receiver.grpc_port, body)
        with pytest.raises(grpc.RpcError):
            grpc_export(receiver.grpc_port, b"\xff")
    assert order == [body, "consumer"]  # the malformed request reached neither


class FailingConsumer:
    """A Consumer with a bug: submit() raises."""

    def submit(self, result, received_ns, transport):
        raise RuntimeError("consumer bug")


def test_consumer_exception_is_retryable(caplog):
    body = desk_zero_request().SerializeToString()
    with running(receiver_config(), FailingConsumer()) as (receiver, _):
        with pytest.raises(grpc.RpcError) as info:
            grpc_export(receiver.grpc_port, body)
        status, headers, reply = http_post(receiver.http_port, body)
        # The server still serves afterwards.
        with pytest.raises(grpc.RpcError):
            grpc_export(receiver.grpc_port, body)
        telemetry = telemetry_of(receiver)
        grpc_failed = telemetry.get("otelsnap_receiver_requests", transport="grpc", outcome="internal_error")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "consumer bug" in info.value.details()
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert status_pb2.Status.FromString(reply).code == code_pb2.UNAVAILABLE
    assert grpc_failed == 2
    assert "request_failed" in caplog.text


def test_start_fails_on_port_in_use():
    with running(receiver_config()) as (first, _):
        for protocols in (
            ProtocolsConfig(grpc=GrpcProtocolConfig(endpoint=f"127.0.0.1:{first.grpc_port}")),
            ProtocolsConfig(http=HttpProtocolConfig(endpoint=f"127.0.0.1:{first.http_port}")),
        ):
            second = OtlpReceiver(OtlpReceiverConfig(protocols=protocols), RecordingConsumer(), ComponentContext("otlp"))
            with pytest.raises(OSError, match="cannot listen on 127.0.0.1:"):
                second.start()


def test_start_fails_on_missing_tls_file(tmp_path):
    tls = TLSServerConfig(cert_file=str(tmp_path / "missing.pem"), key_file=str(tmp_path / "missing.key"))
    config = OtlpReceiverConfig(protocols=ProtocolsConfig(http=HttpProtocolConfig(endpoint="127.0.0.1:0", tls=tls)))
    receiver = OtlpReceiver(config, RecordingConsumer(), ComponentContext("otlp"))
    with pytest.raises(ConfigError) as info:
        receiver.start()
    assert info.value.path == "protocols.http.tls.cert_file"
    assert receiver.http_port is None


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("config", "path"),
    [
        (OtlpReceiverConfig(), "protocols"),
        (OtlpReceiverConfig(protocols=ProtocolsConfig(grpc=GrpcProtocolConfig(endpoint="4317"))), "protocols.grpc.endpoint"),
        (
            OtlpReceiverConfig(protocols=ProtocolsConfig(grpc=GrpcProtocolConfig(max_recv_msg_size_mib=0))),
            "protocols.grpc.max_recv_msg_size_mib",
        ),
        (
            OtlpReceiverConfig(
                protocols=ProtocolsConfig(http=HttpProtocolConfig(tls=TLSServerConfig(cert_file="c.pem")))
            ),
            "protocols.http.tls.key_file",
        ),
        (
            OtlpReceiverConfig(
                protocols=ProtocolsConfig(http=HttpProtocolConfig(tls=TLSServerConfig(client_ca_file="ca.pem")))
            ),
            "protocols.http.tls.cert_file",
        ),
        (OtlpReceiverConfig(protocols=ProtocolsConfig(http=HttpProtocolConfig()), auth=AuthConfig()), "auth.bearer_token"),
        (
            OtlpReceiverConfig(protocols=ProtocolsConfig(http=HttpProtocolConfig()), overload_status="drop"),
            "overload_status",
        ),
    ],
)
def test_config_errors_name_key_path(config, path):
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert info.value.path == path


@pytest.mark.parametrize(
    ("protocols", "message"),
    [
        (
            ProtocolsConfig(grpc=GrpcProtocolConfig(endpoint="127.0.0.1:99999")),
            "protocols.grpc.endpoint: port 99999 of '127.0.0.1:99999' is out of range (0-65535); "
            "write for example 127.0.0.1:4317",
        ),
        (
            ProtocolsConfig(http=HttpProtocolConfig(endpoint="127.0.0.1:99999")),
            "protocols.http.endpoint: port 99999 of '127.0.0.1:99999' is out of range (0-65535); "
            "write for example 127.0.0.1:4318",
        ),
        (
            ProtocolsConfig(http=HttpProtocolConfig(endpoint="localhost")),
            "protocols.http.endpoint: 'localhost' is not host:port; write for example 127.0.0.1:4318",
        ),
        (
            ProtocolsConfig(http=HttpProtocolConfig(endpoint="::1:4318")),
            "protocols.http.endpoint: '::1:4318': put an IPv6 address in brackets, for example [::1]:4318",
        ),
    ],
)
def test_endpoint_errors_name_protocol_port(protocols, message):
    with pytest.raises(ConfigError) as info:
        OtlpReceiverConfig(protocols=protocols).validate()
    assert str(info.value) == message


def test_config_defaults():
    config = OtlpReceiverConfig(protocols=ProtocolsConfig(grpc=GrpcProtocolConfig(), http=HttpProtocolConfig()))
    config.validate()
    assert config.protocols.grpc.endpoint == "127.0.0.1:4317"
    assert config.protocols.http.endpoint == "127.0.0.1:4318"
    assert config.protocols.grpc.max_recv_msg_size_mib == 64
    assert config.overload_status == "unavailable"


# ---------------------------------------------------------------- zstd over gRPC


def _http2_frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([frame_type, flags]) + struct.pack(">I", stream_id) + payload


def _hpack_literal(name: str, value: str) -> bytes:
    """HPACK literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def _hpack_read_literals(block: bytes) -> dict[str, str]:
    """Read a header block made of un-indexed literal fields without Huffman coding."""
    headers = {}
    i = 0
    while i < len(block):
        if block[i] not in (0x00, 0x10) or block[i + 1] & 0x80 or block[i + 1] == 0x7F:
            raise AssertionError(f"header block uses an HPACK form this helper does not read: {block!r}")
        name_len = block[i + 1]
        name = block[i + 2 : i + 2 + name_len].decode()
        i += 2 + name_len
        if block[i] & 0x80 or block[i] == 0x7F:
            raise AssertionError(f"header value uses an HPACK form this helper does not read: {block!r}")
        value = block[i + 1 : i + 1 + block[i]].decode()
        i += 1 + block[i]
        headers[name] = value
    return headers


def test_grpc_zstd_message_gets_internal_error():
    """Documents what a collector sending zstd (or snappy) sees: grpcio cannot decode it."""
    with running(receiver_config(http_on=False)) as (receiver, consumer):
        headers = b"".join(
            _hpack_literal(k, v)
            for k, v in [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", EXPORT_PATH),
                (":authority", "127.0.0.1"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("grpc-encoding", "zstd"),
            ]
        )
        payload = b"\x28\xb5\x2f\xfd" + bytes(8)  # zstd magic, then junk: never decoded
        message = b"\x01" + struct.pack(">I", len(payload)) + payload  # compressed flag set
        with socket.create_connection(("127.0.0.1", receiver.grpc_port), timeout=5) as sock:
            sock.sendall(
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                + _http2_frame(0x4, 0, 0, b"")  # SETTINGS
                + _http2_frame(0x1, 0x4, 1, headers)  # HEADERS, END_HEADERS
                + _http2_frame(0x0, 0x1, 1, message)  # DATA, END_STREAM
            )
            received = b""
            trailers = None
            deadline = time.monotonic() + 5
            while trailers is None and time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
                offset = 0
                while offset + 9 <= len(received):
                    length = int.from_bytes(received[offset : offset + 3], "big")
                    frame_type, stream_id = received[offset + 3], int.from_bytes(received[offset + 5 : offset + 9], "big")
                    if offset + 9 + length > len(received):
                        break
                    block = received[offset + 9 : offset + 9 + length]
                    if frame_type == 0x1 and stream_id == 1:
                        fields = _hpack_read_literals(block)
                        if "grpc-status" in fields:
                            trailers = fields
                    offset += 9 + length
    assert trailers is not None
    assert trailers["grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0])
    assert trailers["grpc-message"] == "Error parsing 'grpc-encoding' metadata"
    assert consumer.submitted == []
