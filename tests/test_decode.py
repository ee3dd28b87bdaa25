"""Decoding OTLP requests into the columnar model.

The normal path uses the real six-node node_exporter text; staleness
markers, integer values, unset values and non-string attributes do not
occur in that text, so those cases build points by hand (invented data).
"""

import math
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from pipeline import convert, decode, promtext
from pipeline.model import MetricKind, is_sample

SIX_NODES = Path(__file__).parent.parent / "testdata" / "atlhyper-six-nodes" / "otel_all_nodes.txt"
T0 = 1_766_400_000_000_000_000


def six_node_request() -> ExportMetricsServiceRequest:
    exposition = promtext.parse(SIX_NODES.read_text())
    return convert.exposition_to_request(
        exposition, T0, convert.ConvertOptions(strip_prefix="otel_")
    )


def test_six_nodes_counts():
    result = decode.decode_bytes(six_node_request().SerializeToString())
    assert result.points == 1499
    assert result.rejected == 0
    assert len(result.batch) == 6
    names = {m.name for rm in result.batch for m in rm.metrics}
    assert len(names) == 57


def test_six_nodes_values_match_text():
    # Independent route: read desk-zero's MemTotal straight from the text.
    line = next(
        line
        for line in SIX_NODES.read_text().splitlines()
        if line.startswith("otel_node_memory_MemTotal_bytes")
        and 'instance="192.168.0.130:9100"' in line
    )
    expected = float(line.rsplit(" ", 1)[1])
    result = decode.decode_bytes(six_node_request().SerializeToString())
    desk_zero = next(rm for rm in result.batch if rm.attrs["service.instance.id"] == "192.168.0.130:9100")
    mem = next(m for m in desk_zero.metrics if m.name == "node_memory_MemTotal_bytes")
    assert mem.values == [expected]
    assert mem.times == [T0]
    assert mem.kind is MetricKind.GAUGE
    cpu = next(m for m in desk_zero.metrics if m.name == "node_cpu_seconds_total")
    assert cpu.kind is MetricKind.SUM
    assert cpu.monotonic
    assert cpu.prom_type == "counter"
    assert len(cpu.values) == 8 * 8
    assert {a["mode"] for a in cpu.attrs} == {
        "idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"
    }


def test_resource_attributes():
    result = decode.decode_bytes(six_node_request().SerializeToString())
    rm = next(rm for rm in result.batch if rm.attrs["service.instance.id"] == "192.168.0.182:9100")
    assert rm.attrs == {
        "service.name": "node-exporter",
        "service.instance.id": "192.168.0.182:9100",
        "server.address": "192.168.0.182",
        "server.port": "9100",
        "url.scheme": "http",
    }
    assert rm.key == (("service.name", "node-exporter"), ("service.instance.id", "192.168.0.182:9100"))


def _gauge_request():
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.name = "invented_gauge"
    return request, metric.gauge.data_points


def test_staleness_and_value_kinds():
    request, points = _gauge_request()
    stale = points.add(time_unix_nano=T0, flags=1)  # staleness marker: flag set, value unset
    stale.attributes.add(key="k", value={"string_value": "stale"})
    unset = points.add(time_unix_nano=T0)  # no flag, value oneof unset
    unset.attributes.add(key="k", value={"string_value": "unset"})
    as_int = points.add(time_unix_nano=T0, as_int=42)
    as_int.attributes.add(key="k", value={"string_value": "int"})
    zero = points.add(time_unix_nano=T0, as_double=0.0)
    zero.attributes.add(key="k", value={"string_value": "zero"})
    nan = points.add(time_unix_nano=T0, as_double=math.nan)
    nan.attributes.add(key="k", value={"string_value": "nan"})
    flagged_with_value = points.add(time_unix_nano=T0, as_double=7.0, flags=1)
    flagged_with_value.attributes.add(key="k", value={"string_value": "flagged"})

    result = decode.decode_request(request)
    metric = result.batch[0].metrics[0]
    values = dict(zip((a["k"] for a in metric.attrs), metric.values))
    assert values["stale"] is None
    assert values["unset"] is None
    assert values["int"] == 42.0
    assert values["zero"] == 0.0
    assert math.isnan(values["nan"])
    assert values["flagged"] is None  # the flag wins over a value
    assert [is_sample(v) for v in metric.values] == [False, False, True, True, False, False]


def test_non_string_attributes_rendered():
    request, points = _gauge_request()
    dp = points.add(time_unix_nano=T0, as_double=1.0)
    dp.attributes.add(key="port", value={"int_value": 9100})
    dp.attributes.add(key="up", value={"bool_value": True})
    dp.attributes.add(key="empty", value={"string_value": ""})
    result = decode.decode_request(request)
    assert result.batch[0].metrics[0].attrs == [{"port": "9100", "up": "true", "empty": ""}]


def test_rejects_unusable_points():
    request = ExportMetricsServiceRequest()
    sm = request.resource_metrics.add().scope_metrics.add()
    expo = sm.metrics.add(name="invented_exponential")
    expo.exponential_histogram.data_points.add(time_unix_nano=T0, count=3)
    expo.exponential_histogram.data_points.add(time_unix_nano=T0, count=4)
    gauge = sm.metrics.add(name="invented_gauge")
    gauge.gauge.data_points.add(time_unix_nano=0, as_double=1.0)
    gauge.gauge.data_points.add(time_unix_nano=T0, as_double=2.0)
    result = decode.decode_request(request)
    assert result.points == 1
    assert result.rejected == 3
    assert result.reject_reasons == {
        "exponential histograms are not supported": 2,
        "time_unix_nano is 0": 1,
    }
    assert "2 points: exponential histograms are not supported" in result.error_message()


def test_histogram_point():
    request = ExportMetricsServiceRequest()
    metric = request.resource_metrics.add().scope_metrics.add().metrics.add(name="invented_latency")
    metric.histogram.aggregation_temporality = 2
    dp = metric.histogram.data_points.add(
        time_unix_nano=T0, count=6, sum=12.5, explicit_bounds=[1.0, 5.0], bucket_counts=[1, 2, 3]
    )
    dp.attributes.add(key="service", value={"string_value": "web"})
    result = decode.decode_request(request)
    decoded = result.batch[0].metrics[0]
    assert decoded.kind is MetricKind.HISTOGRAM
    assert decoded.values == [6.0]
    histogram = decoded.extras[0]
    assert histogram.bounds == (1.0, 5.0)
    assert histogram.bucket_counts == (1, 2, 3)
    assert histogram.sum == 12.5


def test_malformed_bytes_raise():
    with pytest.raises(DecodeError):
        decode.decode_bytes(b"\x0a\xff\xff\xff\xff\x0f garbage")


def test_attribute_dicts_shared_between_requests():
    body = six_node_request().SerializeToString()
    first = decode.decode_bytes(body).batch[0].metrics[1].attrs
    second = decode.decode_bytes(body).batch[0].metrics[1].attrs
    assert first == second
    assert all(a is b for a, b in zip(first, second))


def _with_metric_metadata(raw_metadata: bytes) -> bytes:
    """Serialize a one-gauge request whose metric metadata bytes are ``raw_metadata``."""
    request, points = _gauge_request()
    points.add(time_unix_nano=T0, as_double=1.0)
    # Metric.metadata is field 12 (length-delimited): tag 0x62. Append it to
    # the Metric message by rebuilding the nesting by hand.
    metric = request.resource_metrics[0].scope_metrics[0].metrics[0].SerializeToString()
    metric += b"\x62" + bytes([len(raw_metadata)]) + raw_metadata
    scope = b"\x12" + bytes([len(metric)]) + metric  # ScopeMetrics.metrics = 2
    resource = b"\x12" + bytes([len(scope)]) + scope  # ResourceMetrics.scope_metrics = 2
    return b"\x0a" + bytes([len(resource)]) + resource  # request.resource_metrics = 1


def test_metric_metadata_read():
    kv = b"\x0a\x0fprometheus.type\x12\x09\x0a\x07counter"  # KeyValue, invented
    result = decode.decode_bytes(_with_metric_metadata(kv))
    assert result.batch[0].metrics[0].prom_type == "counter"


def test_malformed_metric_metadata_raises():
    with pytest.raises(DecodeError):
        decode.decode_bytes(_with_metric_metadata(b"\x0a\xff\xff"))
