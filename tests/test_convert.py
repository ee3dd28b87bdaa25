"""Prometheus text → collector-shaped OTLP (pipeline.convert, otelsnap convert).

The six-node sample and the local node_exporter capture are real data.
Histograms, staleness, resets, target_info and ``# UNIT`` lines do not occur
in them (node_exporter exposes one summary and no histogram), so those
tests use small invented expositions, each marked as invented, whose
expected OTLP was worked out by hand from the collector's rules.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import stat
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from pipeline import convert, convert_cli, decode, promtext
from pipeline.model import MetricKind
from pipeline.recording import read_recording

ROOT = Path(__file__).parent.parent
SIX_NODES = ROOT / "testdata" / "atlhyper-six-nodes" / "otel_all_nodes.txt"
LOCAL = ROOT / "testdata" / "node-exporter-local"
T0 = 1_766_397_600_000_000_000  # 2025-12-22T10:00:00Z
T1 = T0 + 15_000_000_000
CUMULATIVE = 2


def attrs(kvs) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in kvs}


def metric_by_name(request: ExportMetricsServiceRequest, instance: str, name: str):
    for rm in request.resource_metrics:
        if attrs(rm.resource.attributes).get("service.instance.id") != instance:
            continue
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    return metric
    raise AssertionError(f"{name} not found for {instance}")


def metadata_type(metric) -> str:
    return next(kv.value.string_value for kv in metric.metadata if kv.key == "prometheus.type")


def convert_text(text: str, time_ns: int = T0, **options) -> ExportMetricsServiceRequest:
    return convert.exposition_to_request(promtext.parse(text), time_ns, convert.ConvertOptions(**options))


def six_nodes_request(**options) -> ExportMetricsServiceRequest:
    return convert_text(SIX_NODES.read_text(), strip_prefix="otel_", **options)


# --- real data ---------------------------------------------------------------


def test_six_nodes_counts():
    request = six_nodes_request()
    assert len(request.resource_metrics) == 6
    names = set()
    points = 0
    for rm in request.resource_metrics:
        for metric in rm.scope_metrics[0].metrics:
            names.add(metric.name)
            points += len(getattr(metric, metric.WhichOneof("data")).data_points)
    assert len(names) == 57
    assert points == 1499


def test_six_nodes_resource_attributes():
    request = six_nodes_request()
    resources = [attrs(rm.resource.attributes) for rm in request.resource_metrics]
    desk_zero = next(r for r in resources if r["service.instance.id"] == "192.168.0.130:9100")
    assert desk_zero == {
        "service.name": "node-exporter",
        "service.instance.id": "192.168.0.130:9100",
        "server.address": "192.168.0.130",
        "server.port": "9100",
        "url.scheme": "http",
    }
    scope = request.resource_metrics[0].scope_metrics[0].scope
    assert scope.name == "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/prometheusreceiver"


def test_six_nodes_types_follow_node_exporter():
    request = six_nodes_request()
    instance = "192.168.0.130:9100"
    cpu = metric_by_name(request, instance, "node_cpu_seconds_total")
    assert cpu.WhichOneof("data") == "sum"
    assert cpu.sum.is_monotonic
    assert cpu.sum.aggregation_temporality == CUMULATIVE
    assert metadata_type(cpu) == "counter"
    vmstat = metric_by_name(request, instance, "node_vmstat_pgfault")
    assert vmstat.WhichOneof("data") == "gauge"
    assert metadata_type(vmstat) == "unknown"
    load = metric_by_name(request, instance, "node_load1")
    assert load.WhichOneof("data") == "gauge"
    assert metadata_type(load) == "gauge"


def test_six_nodes_start_time_zero_by_default():
    request = six_nodes_request()
    cpu = metric_by_name(request, "192.168.0.130:9100", "node_cpu_seconds_total")
    assert {dp.start_time_unix_nano for dp in cpu.sum.data_points} == {0}
    assert {dp.time_unix_nano for dp in cpu.sum.data_points} == {T0}


def test_six_nodes_values_and_labels_match_text():
    # Independent route: a regular expression over the text, not promtext.
    line_re = re.compile(r'^otel_node_network_receive_bytes_total\{(.*)\} (\S+)$')
    expected = {}
    for line in SIX_NODES.read_text().splitlines():
        match = line_re.match(line)
        if match and 'instance="192.168.0.7:9100"' in match[1]:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match[1]))
            expected[labels["device"]] = float(match[2])
    metric = metric_by_name(six_nodes_request(), "192.168.0.7:9100", "node_network_receive_bytes_total")
    got = {attrs(dp.attributes)["device"]: dp.as_double for dp in metric.sum.data_points}
    assert got == expected
    assert len(expected) > 3
    for dp in metric.sum.data_points:
        assert set(attrs(dp.attributes)) == {"device"}


def test_local_capture_summary_matches_text():
    # Real node_exporter text with "# TYPE" lines: go_gc_duration_seconds is
    # a summary. Expected values are read from the file with a regex.
    text = (LOCAL / "scrape-0005.prom").read_text()
    quantiles = {
        float(q): float(v)
        for q, v in re.findall(r'^go_gc_duration_seconds\{quantile="([^"]+)"\} (\S+)$', text, re.M)
    }
    count = float(re.search(r"^go_gc_duration_seconds_count (\S+)$", text, re.M)[1])
    total = float(re.search(r"^go_gc_duration_seconds_sum (\S+)$", text, re.M)[1])
    request = convert_text(text, job="node-exporter", instance="127.0.0.1:9100")
    metric = metric_by_name(request, "127.0.0.1:9100", "go_gc_duration_seconds")
    assert metric.WhichOneof("data") == "summary"
    assert metadata_type(metric) == "summary"
    (dp,) = metric.summary.data_points
    assert dp.count == int(count)
    assert dp.sum == total
    assert [(q.quantile, q.value) for q in dp.quantile_values] == sorted(quantiles.items())
    assert len(quantiles) == 5


def test_local_capture_loopback_has_no_server_address():
    text = (LOCAL / "scrape-0001.prom").read_text()
    request = convert_text(text, job="node-exporter", instance="127.0.0.1:9100")
    resource = attrs(request.resource_metrics[0].resource.attributes)
    assert "server.address" not in resource
    assert resource["server.port"] == "9100"


def test_local_capture_untyped_is_gauge_unknown():
    text = (LOCAL / "scrape-0001.prom").read_text()
    assert "# TYPE node_vmstat_pgfault untyped" in text
    request = convert_text(text, job="node-exporter", instance="127.0.0.1:9100")
    metric = metric_by_name(request, "127.0.0.1:9100", "node_vmstat_pgfault")
    assert metric.WhichOneof("data") == "gauge"
    assert metadata_type(metric) == "unknown"


# --- histograms and summaries (invented data) --------------------------------

# Invented exposition: one histogram series with three finite buckets and
# +Inf, one without _sum, a summary. Expected values computed by hand.
HISTOGRAM_TEXT = """\
# HELP http_request_duration_seconds Request latency.
# TYPE http_request_duration_seconds histogram
# UNIT http_request_duration_seconds seconds
http_request_duration_seconds_bucket{job="api",instance="10.1.2.3:8080",method="GET",le="0.5"} 7
http_request_duration_seconds_bucket{job="api",instance="10.1.2.3:8080",method="GET",le="0.1"} 3
http_request_duration_seconds_bucket{job="api",instance="10.1.2.3:8080",method="GET",le="1"} 9
http_request_duration_seconds_bucket{job="api",instance="10.1.2.3:8080",method="GET",le="+Inf"} 10
http_request_duration_seconds_sum{job="api",instance="10.1.2.3:8080",method="GET"} 4.25
http_request_duration_seconds_count{job="api",instance="10.1.2.3:8080",method="GET"} 10
http_request_duration_seconds_bucket{job="api",instance="10.1.2.3:8080",method="POST",le="0.1"} 0
http_request_duration_seconds_bucket{job="api",instance="10.1.2.3:8080",method="POST",le="0.5"} 2
http_request_duration_seconds_count{job="api",instance="10.1.2.3:8080",method="POST"} 5
# TYPE rpc_latency_seconds summary
rpc_latency_seconds{job="api",instance="10.1.2.3:8080",quantile="0.99"} 0.8
rpc_latency_seconds{job="api",instance="10.1.2.3:8080",quantile="0.5"} 0.125
rpc_latency_seconds_sum{job="api",instance="10.1.2.3:8080"} 17.5
rpc_latency_seconds_count{job="api",instance="10.1.2.3:8080"} 60
"""


def test_histogram_buckets_by_hand():
    request = convert_text(HISTOGRAM_TEXT)
    metric = metric_by_name(request, "10.1.2.3:8080", "http_request_duration_seconds")
    assert metric.WhichOneof("data") == "histogram"
    assert metric.histogram.aggregation_temporality == CUMULATIVE
    assert metadata_type(metric) == "histogram"
    assert metric.unit == "s"
    assert metric.description == "Request latency."
    get, post = metric.histogram.data_points
    assert attrs(get.attributes) == {"method": "GET"}
    # Buckets sorted by bound; +Inf dropped from the bounds.
    assert list(get.explicit_bounds) == [0.1, 0.5, 1.0]
    # Cumulative 3, 7, 9, count 10 → per bucket 3, 4, 2, 1.
    assert list(get.bucket_counts) == [3, 4, 2, 1]
    assert get.count == 10
    assert get.HasField("sum")
    assert get.sum == 4.25
    assert get.time_unix_nano == T0
    assert get.start_time_unix_nano == 0


def test_histogram_without_sum_or_inf_bucket():
    request = convert_text(HISTOGRAM_TEXT)
    metric = metric_by_name(request, "10.1.2.3:8080", "http_request_duration_seconds")
    post = metric.histogram.data_points[1]
    assert attrs(post.attributes) == {"method": "POST"}
    assert not post.HasField("sum")
    assert list(post.explicit_bounds) == [0.1, 0.5]
    # Cumulative 0, 2, count 5 → 0, 2, 3.
    assert list(post.bucket_counts) == [0, 2, 3]
    assert post.count == 5


def test_summary_quantiles_by_hand():
    request = convert_text(HISTOGRAM_TEXT)
    metric = metric_by_name(request, "10.1.2.3:8080", "rpc_latency_seconds")
    assert metric.WhichOneof("data") == "summary"
    (dp,) = metric.summary.data_points
    assert [(q.quantile, q.value) for q in dp.quantile_values] == [(0.5, 0.125), (0.99, 0.8)]
    assert dp.count == 60
    assert dp.sum == 17.5
    assert attrs(dp.attributes) == {}


def test_histogram_and_summary_decode_to_model():
    result = decode.decode_bytes(convert_text(HISTOGRAM_TEXT).SerializeToString())
    (rm,) = result.batch
    histogram = next(m for m in rm.metrics if m.name == "http_request_duration_seconds")
    assert histogram.kind is MetricKind.HISTOGRAM
    assert histogram.extras[0].bucket_counts == (3, 4, 2, 1)
    assert histogram.extras[1].sum is None
    summary = next(m for m in rm.metrics if m.name == "rpc_latency_seconds")
    assert summary.kind is MetricKind.SUMMARY
    assert summary.extras[0].quantiles == ((0.5, 0.125), (0.99, 0.8))
    assert result.points == 3


def test_histogram_invalid_points_dropped_with_warning():
    # Invented: decreasing buckets, a count below the largest bucket, and a
    # series without _count: the receiver writes no point for any of them.
    text = """\
# TYPE h histogram
h_bucket{job="j",instance="h:1",s="a",le="1"} 5
h_bucket{job="j",instance="h:1",s="a",le="2"} 4
h_count{job="j",instance="h:1",s="a"} 6
h_bucket{job="j",instance="h:1",s="b",le="1"} 5
h_count{job="j",instance="h:1",s="b"} 4
h_bucket{job="j",instance="h:1",s="c",le="1"} 1
h_sum{job="j",instance="h:1",s="c"} 1
h_bucket{job="j",instance="h:1",s="d",le="1"} 1
h_count{job="j",instance="h:1",s="d"} 1
"""
    converter = convert.Converter()
    request = converter.convert(promtext.parse(text), T0)
    metric = metric_by_name(request, "h:1", "h")
    assert [attrs(dp.attributes)["s"] for dp in metric.histogram.data_points] == ["d"]
    assert len(converter.warnings) == 3
    assert any("decreasing" in w for w in converter.warnings)
    assert any("below the largest bucket" in w for w in converter.warnings)
    assert any("no _count" in w for w in converter.warnings)


def test_histogram_type_from_table_without_type_lines():
    # Invented, prefixed and without "# TYPE" lines: a table entry for the
    # base name claims the _bucket/_sum/_count series.
    text = """\
otel_lat_bucket{job="j",instance="h:1",le="1"} 2
otel_lat_bucket{job="j",instance="h:1",le="+Inf"} 3
otel_lat_sum{job="j",instance="h:1"} 2.5
otel_lat_count{job="j",instance="h:1"} 3
otel_requests_total{job="j",instance="h:1"} 9
"""
    table = (("lat", "histogram"), ("*_total", "counter"), ("*", "gauge"))
    request = convert_text(text, strip_prefix="otel_", type_table=table)
    metric = metric_by_name(request, "h:1", "lat")
    assert list(metric.histogram.data_points[0].bucket_counts) == [2, 1]
    assert metric_by_name(request, "h:1", "requests_total").WhichOneof("data") == "sum"


def test_histogram_without_type_is_gauges():
    # Invented: no TYPE line and a table that does not know the family, so
    # each sample name is its own gauge and "le" stays a label, as in the
    # collector.
    text = 'lat_bucket{job="j",instance="h:1",le="1"} 2\nlat_count{job="j",instance="h:1"} 3\n'
    request = convert_text(text, type_table=(("*", "gauge"),))
    bucket = metric_by_name(request, "h:1", "lat_bucket")
    assert bucket.WhichOneof("data") == "gauge"
    assert attrs(bucket.gauge.data_points[0].attributes) == {"le": "1"}


def test_declared_prefixed_type_lines():
    # Invented: TYPE lines carry the prefix too.
    text = "# TYPE otel_jobs_done counter\notel_jobs_done{job=\"j\",instance=\"h:1\"} 4\n# TYPE otel_temp untyped\notel_temp{job=\"j\",instance=\"h:1\"} 40\n"
    request = convert_text(text, strip_prefix="otel_", type_table=())
    assert metric_by_name(request, "h:1", "jobs_done").WhichOneof("data") == "sum"
    temp = metric_by_name(request, "h:1", "temp")
    assert temp.WhichOneof("data") == "gauge"
    assert metadata_type(temp) == "unknown"


def test_target_info_becomes_resource_attributes():
    # Invented.
    text = 'target_info{job="j",instance="h:1",k8s_cluster="home"} 1\nup{job="j",instance="h:1"} 1\n'
    request = convert_text(text)
    (rm,) = request.resource_metrics
    assert attrs(rm.resource.attributes)["k8s_cluster"] == "home"
    assert [m.name for m in rm.scope_metrics[0].metrics] == ["up"]


def test_empty_labels_dropped_and_explicit_timestamp_kept():
    # Invented.
    text = 'g{job="j",instance="h:1",a="",b="x"} 1 1766397601500\n'
    metric = metric_by_name(convert_text(text), "h:1", "g")
    dp = metric.gauge.data_points[0]
    assert attrs(dp.attributes) == {"b": "x"}
    assert dp.time_unix_nano == 1_766_397_601_500_000_000


def test_nan_and_inf_pass_through():
    # Invented.
    text = 'g{job="j",instance="h:1",k="a"} NaN\ng{job="j",instance="h:1",k="b"} +Inf\n'
    points = metric_by_name(convert_text(text), "h:1", "g").gauge.data_points
    assert math.isnan(points[0].as_double)
    assert points[1].as_double == math.inf
    assert points[0].flags == 0


def test_unit_words_become_ucum():
    assert convert.unit_to_ucum("bytes") == "By"
    assert convert.unit_to_ucum("bytes_per_second") == "By/s"
    assert convert.unit_to_ucum("widgets") == "widgets"


# --- several scrapes: staleness markers and start times (invented) -----------

SCRAPE_A = 'c_total{job="j",instance="h:1",k="x"} 10\nc_total{job="j",instance="h:1",k="y"} 5\ng{job="j",instance="h:1"} 1\n'
SCRAPE_B = 'c_total{job="j",instance="h:1",k="x"} 12\ng{job="j",instance="h:1"} 2\n'
SCRAPE_C = 'c_total{job="j",instance="h:1",k="x"} 3\ng{job="j",instance="h:1"} 3\n'


def test_disappeared_series_gets_one_staleness_marker():
    converter = convert.Converter()
    converter.convert(promtext.parse(SCRAPE_A), T0)
    second = converter.convert(promtext.parse(SCRAPE_B), T1)
    points = metric_by_name(second, "h:1", "c_total").sum.data_points
    stale = [dp for dp in points if attrs(dp.attributes) == {"k": "y"}]
    assert len(stale) == 1
    assert stale[0].flags & 1
    assert stale[0].WhichOneof("value") is None
    assert stale[0].time_unix_nano == T1
    third = converter.convert(promtext.parse(SCRAPE_C), T1 + 15_000_000_000)
    points = metric_by_name(third, "h:1", "c_total").sum.data_points
    assert [attrs(dp.attributes) for dp in points] == [{"k": "x"}]


def test_staleness_marker_decodes_as_none():
    converter = convert.Converter()
    converter.convert(promtext.parse(SCRAPE_A), T0)
    result = decode.decode_request(converter.convert(promtext.parse(SCRAPE_B), T1))
    metric = next(m for m in result.batch[0].metrics if m.name == "c_total")
    assert metric.values == [12.0, None]


def test_first_point_start_time_and_reset():
    converter = convert.Converter(convert.ConvertOptions(start_time="first_point"))
    t2 = T1 + 15_000_000_000
    first = converter.convert(promtext.parse(SCRAPE_A), T0)
    second = converter.convert(promtext.parse(SCRAPE_B), T1)
    third = converter.convert(promtext.parse(SCRAPE_C), t2)

    def start_of(request, k):
        points = metric_by_name(request, "h:1", "c_total").sum.data_points
        return next(dp.start_time_unix_nano for dp in points if attrs(dp.attributes).get("k") == k)

    assert start_of(first, "x") == T0
    assert start_of(second, "x") == T0
    # 12 → 3 is a reset: the start moves to the reset point's time.
    assert start_of(third, "x") == t2
    # The staleness marker keeps the series' start.
    assert start_of(second, "y") == T0
    gauge = metric_by_name(third, "h:1", "g").gauge.data_points[0]
    assert gauge.start_time_unix_nano == 0


def test_no_staleness_markers_option():
    converter = convert.Converter(convert.ConvertOptions(staleness_markers=False))
    converter.convert(promtext.parse(SCRAPE_A), T0)
    second = converter.convert(promtext.parse(SCRAPE_B), T1)
    assert len(metric_by_name(second, "h:1", "c_total").sum.data_points) == 1


def test_type_table_file_parsing():
    table = convert.parse_type_table("# comment\nnode_load* counter\n\n* gauge  # rest\n")
    assert table == (("node_load*", "counter"), ("*", "gauge"))
    with pytest.raises(ValueError, match="types:2: invalid type 'countr'"):
        convert.parse_type_table("a gauge\nb countr\n", "types")
    with pytest.raises(ValueError, match="expected 'GLOB TYPE'"):
        convert.parse_type_table("a\n")


# --- otelsnap convert --------------------------------------------------------


def run_convert(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    convert_cli.add_arguments(parser)
    return convert_cli.main(parser.parse_args(argv))


def test_time_specs():
    assert convert_cli.parse_time_ns("2025-12-22T10:00:00Z") == T0
    assert convert_cli.parse_time_ns("2025-12-22T11:00:00.250+01:00") == T0 + 250_000_000
    assert convert_cli.parse_time_ns("1766397600.5") == T0 + 500_000_000
    assert convert_cli.parse_time_ns("1766397600500", number_unit="ms") == T0 + 500_000_000
    assert convert_cli.parse_time_ns("+15s", T0) == T1
    assert convert_cli.parse_time_ns("+250ms", T0) == T0 + 250_000_000
    assert convert_cli.parse_time_ns("+1.5m", T0) == T0 + 90_000_000_000
    with pytest.raises(convert_cli.TimeSpecError, match="needs an absolute time"):
        convert_cli.parse_time_ns("+15s")
    with pytest.raises(convert_cli.TimeSpecError, match="add a time zone"):
        convert_cli.parse_time_ns("2025-12-22T10:00:00")
    assert convert_cli.format_time_ns(T0 + 250_999_999) == "2025-12-22T10:00:00.250Z"


def test_cli_two_scrapes_at_relative_time(tmp_path, capsys):
    out = tmp_path / "rec.otlprec"
    second = ROOT / "testdata" / "atlhyper-six-nodes" / "otel_all_nodes_plus15s.txt"
    code = run_convert(
        ["--out", str(out), "--strip-prefix", "otel_", f"{SIX_NODES}@2025-12-22T10:00:00Z", f"{second}@+15s"]
    )
    assert code == 0
    records = list(read_recording(out))
    assert [r.received_ns for r in records] == [T0, T1]
    assert {(r.transport, r.content_type, r.compression) for r in records} == {
        ("grpc", "application/x-protobuf", "gzip")
    }
    for record, time_ns in zip(records, [T0, T1]):
        result = record.decode()
        assert result.points == 1499
        assert {t for rm in result.batch for m in rm.metrics for t in m.times} == {time_ns}
    assert "2 requests, 6 resources, 57 metric names, 2998 points" in capsys.readouterr().err


def test_cli_times_file_in_ms(tmp_path):
    out = tmp_path / "local.otlprec"
    code = run_convert(
        ["--out", str(out), "--times", str(LOCAL / "times.txt"), "--time-unit", "ms",
         "--job", "node-exporter", "--instance", "127.0.0.1:9100"]
    )
    assert code == 0
    expected_ms = [int(line.split()[1]) for line in (LOCAL / "times.txt").read_text().splitlines() if line.strip()]
    records = list(read_recording(out))
    assert [r.received_ns for r in records] == [ms * 1_000_000 for ms in expected_ms]
    assert len(records) == 5


def test_cli_json_bodies_decode_like_protobuf(tmp_path):
    out = tmp_path / "rec.otlprec"
    assert run_convert(["--out", str(out), "--strip-prefix", "otel_", "--json", "--transport", "http", f"{SIX_NODES}@{T0 / 1e9:.0f}"]) == 0
    (record,) = read_recording(out)
    assert record.content_type == "application/json"
    assert record.transport == "http"
    from_json = record.decode()
    from_proto = decode.decode_request(six_nodes_request())
    assert from_json.points == from_proto.points == 1499
    flat = lambda r: sorted(  # noqa: E731
        (rm.attrs["service.instance.id"], m.name, tuple(sorted(a.items())), t, v)
        for rm in r.batch for m in rm.metrics for a, t, v in zip(m.attrs, m.times, m.values)
    )
    assert flat(from_json) == flat(from_proto)


def test_cli_types_file_overrides_table(tmp_path):
    types = tmp_path / "types.txt"
    types.write_text("node_load1 counter\n* gauge\n")
    out = tmp_path / "rec.otlprec"
    assert run_convert(["--out", str(out), "--strip-prefix", "otel_", "--types", str(types), f"{SIX_NODES}@{T0 // 10**9}"]) == 0
    (record,) = read_recording(out)
    request = record.to_request()
    assert metric_by_name(request, "192.168.0.130:9100", "node_load1").WhichOneof("data") == "sum"
    assert metric_by_name(request, "192.168.0.130:9100", "node_cpu_seconds_total").WhichOneof("data") == "gauge"


def test_cli_rejects_bad_times(tmp_path, capsys):
    out = str(tmp_path / "rec.otlprec")
    assert run_convert(["--out", out, f"{SIX_NODES}@+15s"]) == 1
    assert "needs an absolute time" in capsys.readouterr().err
    assert run_convert(["--out", out, f"{SIX_NODES}@1000", f"{SIX_NODES}@999"]) == 1
    assert "later than the previous scrape" in capsys.readouterr().err
    assert run_convert(["--out", out, str(SIX_NODES)]) == 1
    assert "no scrape time" in capsys.readouterr().err


def test_cli_reports_invalid_text_with_line(tmp_path, capsys):
    bad = tmp_path / "bad.prom"
    bad.write_text('ok 1\nbroken{a="x" 2\n')
    assert run_convert(["--out", str(tmp_path / "r.otlprec"), f"{bad}@1000"]) == 1
    err = capsys.readouterr().err
    assert "bad.prom" in err
    assert "line 2" in err


def test_cli_failed_convert_keeps_existing_out(tmp_path, capsys):
    out = tmp_path / "rec.otlprec"
    assert run_convert(["--out", str(out), "--strip-prefix", "otel_", f"{SIX_NODES}@{T0 // 10**9}"]) == 0
    before = out.read_bytes()
    bad = tmp_path / "bad.prom"
    bad.write_text('ok 1\nbroken{a="x" 2\n')  # invented: a syntax error on line 2
    capsys.readouterr()

    assert run_convert(["--out", str(out), f"{bad}@{T0 // 10**9 + 15}"]) == 1

    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.prom", "rec.otlprec"]
    assert "bad.prom: line 2" in capsys.readouterr().err


def test_cli_new_out_gets_umask_mode(tmp_path):
    out = tmp_path / "rec.otlprec.gz"
    previous = os.umask(0o027)
    try:
        assert run_convert(["--out", str(out), "--strip-prefix", "otel_", f"{SIX_NODES}@{T0 // 10**9}"]) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o640
    assert [r.received_ns for r in read_recording(out)] == [T0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.otlprec.gz"]


@pytest.mark.parametrize(
    "time, unit, message",
    [
        ("1766397600000", "s", "time 1766397600000 is after the year 2200 as Unix seconds; "
         "it looks like milliseconds: use --time-unit ms"),
        ("1766397600000000", "ms", "time 1766397600000000 is after the year 2200 as Unix milliseconds; "
         "it looks like microseconds: use --time-unit us"),
        ("1766397600000000000000", "s", "time 1766397600000000000000 is after the year 2200 as Unix seconds; "
         "check the number"),
    ],
)
def test_cli_implausible_time_names_unit(time, unit, message, tmp_path, capsys):
    out = tmp_path / "rec.otlprec"
    assert run_convert(["--out", str(out), "--time-unit", unit, f"{SIX_NODES}@{time}"]) == 1
    assert capsys.readouterr().err == f"otelsnap convert: {message}\n"
    assert not out.exists()


def test_time_in_2199_is_accepted():
    # 2199-12-31T23:59:59Z, the last second before the limit.
    assert convert_cli.parse_time_ns("7258118399") == 7_258_118_399 * 10**9


# --- exposition text errors (invented one-line expositions) --------------------


def test_unknown_type_names_line():
    with pytest.raises(promtext.ExpositionError) as caught:
        promtext.parse("x 1\n# TYPE x counterx\n")
    assert str(caught.value) == (
        "line 2: unknown type 'counterx' for x; use one of counter, gauge, histogram, summary, "
        "unknown, untyped, info, stateset, gaugehistogram: '# TYPE x counterx'"
    )


def test_unclosed_label_set_names_fix():
    with pytest.raises(promtext.ExpositionError) as caught:
        promtext.parse('ok 1\nbroken{a="x" 2\n')
    assert str(caught.value) == (
        "line 2: label set is not closed: add '}' after the last label: 'broken{a=\"x\" 2'"
    )
    with pytest.raises(promtext.ExpositionError) as caught:
        promtext.parse("m{a} 1\n")
    assert str(caught.value) == "line 1: label without '=': 'm{a} 1'"


def test_duplicate_sample_keeps_first():
    exposition = promtext.parse('a{x="1"} 1\nb 5\na{x="1"} 2\na{x="2"} 3\na{x="1"} 4 1000\n')
    assert [(s.name, s.labels, s.value, s.timestamp_ms) for s in exposition.samples] == [
        ("a", {"x": "1"}, 1.0, None),
        ("b", {}, 5.0, None),
        ("a", {"x": "2"}, 3.0, None),
        ("a", {"x": "1"}, 4.0, 1000),
    ]
    assert exposition.warnings == ['line 3: duplicate sample of a{x="1"} (first on line 1); kept the first']


def test_cli_warns_on_duplicate_sample(tmp_path, capsys):
    scrape = tmp_path / "dup.prom"
    scrape.write_text('# TYPE up gauge\nup{job="n"} 1\nup{job="n"} 0\n')
    out = tmp_path / "rec.otlprec"
    assert run_convert(["--out", str(out), "--instance", "127.0.0.1:9100", f"{scrape}@{T0 // 10**9}"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (
        f'otelsnap convert: warning: {scrape}: line 3: duplicate sample of up{{job="n"}} '
        "(first on line 2); kept the first"
    )
    (record,) = read_recording(out)
    (rm,) = record.decode().batch
    assert [(m.name, m.values) for m in rm.metrics] == [("up", [1.0])]


# --- counter _created and the scrape loop's series (invented) ---------------

# OpenMetrics style: the TYPE line names the family, the samples carry the
# _total and _created suffixes.
COUNTER_CREATED_TEXT = """\
# TYPE requests counter
requests_total{job="api",instance="h:1",path="/a"} 10
requests_created{job="api",instance="h:1",path="/a"} 1766390000.25
requests_total{job="api",instance="h:1",path="/b"} 4
requests_created{job="api",instance="h:1",path="/b"} 1766391000
"""


def metric_names(request: ExportMetricsServiceRequest) -> list[str]:
    return [m.name for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]


def test_counter_created_sets_start_time():
    request = convert_text(COUNTER_CREATED_TEXT)
    assert metric_names(request) == ["requests_total"]
    points = metric_by_name(request, "h:1", "requests_total").sum.data_points
    assert [attrs(dp.attributes) for dp in points] == [{"path": "/a"}, {"path": "/b"}]
    assert [dp.as_double for dp in points] == [10.0, 4.0]
    # 1766390000.25 s is exactly representable: whole seconds + 250 ms.
    assert points[0].start_time_unix_nano == 1_766_390_000 * 10**9 + 250_000_000
    assert points[1].start_time_unix_nano == 1_766_391_000 * 10**9
    assert points[0].time_unix_nano == T0


def test_counter_created_wins_over_first_point():
    request = convert_text(COUNTER_CREATED_TEXT, start_time="first_point")
    points = metric_by_name(request, "h:1", "requests_total").sum.data_points
    assert points[1].start_time_unix_nano == 1_766_391_000 * 10**9


def test_counter_created_without_total_writes_nothing():
    text = '# TYPE requests counter\nrequests_created{job="api",instance="h:1"} 1766390000\ng{job="api",instance="h:1"} 1\n'
    assert metric_names(convert_text(text)) == ["g"]


def test_prometheus_text_created_stays_own_metric():
    # In the Prometheus text format the TYPE line names bar_total, so the
    # receiver finds no counter for bar_created and keeps it as a Gauge.
    text = '# TYPE bar_total counter\nbar_total{job="j",instance="h:1"} 3\nbar_created{job="j",instance="h:1"} 1600000000\n'
    request = convert_text(text)
    assert metric_names(request) == ["bar_total", "bar_created"]
    assert metric_by_name(request, "h:1", "bar_total").sum.data_points[0].start_time_unix_nano == 0
    assert metric_by_name(request, "h:1", "bar_created").WhichOneof("data") == "gauge"


SCRAPE_SERIES_NAMES = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
]
TARGETS_TEXT = """\
# TYPE c_total counter
c_total{job="node",instance="a:9100",k="x"} 1
c_total{job="node",instance="a:9100",k="y"} 2
g{job="node",instance="a:9100"} 5
target_info{job="node",instance="a:9100",region="eu"} 1
g{job="node",instance="b:9100"} 6
"""


def scrape_values(request: ExportMetricsServiceRequest, instance: str) -> dict[str, float]:
    values = {}
    for name in SCRAPE_SERIES_NAMES:
        metric = metric_by_name(request, instance, name)
        assert metric.WhichOneof("data") == "gauge", name
        (dp,) = metric.gauge.data_points
        assert attrs(dp.attributes) == {}, name
        assert dp.time_unix_nano == T0 or dp.time_unix_nano == T1, name
        values[name] = dp.as_double
    return values


def test_scrape_series_per_target():
    request = convert_text(TARGETS_TEXT, scrape_series=True, scrape_duration_s=0.125)
    # Target a has 4 samples (target_info counts, as Prometheus counts
    # every sample of the body); target b has 1.
    assert scrape_values(request, "a:9100") == {
        "up": 1.0,
        "scrape_duration_seconds": 0.125,
        "scrape_samples_scraped": 4.0,
        "scrape_samples_post_metric_relabeling": 4.0,
        "scrape_series_added": 4.0,
    }
    assert scrape_values(request, "b:9100")["scrape_samples_scraped"] == 1.0
    names_a = [m.name for m in request.resource_metrics[0].scope_metrics[0].metrics]
    assert names_a == ["c_total", "g", *SCRAPE_SERIES_NAMES]
    duration = metric_by_name(request, "a:9100", "scrape_duration_seconds")
    assert duration.unit == "s"
    assert metadata_type(duration) == "gauge"
    assert metric_by_name(request, "a:9100", "up").description == "The scraping was successful"


def test_scrape_series_added_counts_new_series():
    options = convert.ConvertOptions(scrape_series=True)
    converter = convert.Converter(options)
    converter.convert(promtext.parse(SCRAPE_A), T0)
    # SCRAPE_B keeps c_total{k="x"} and g and drops c_total{k="y"}; the
    # third scrape brings k="y" back and adds k="z".
    second = converter.convert(promtext.parse(SCRAPE_B), T1)
    third_text = SCRAPE_B + 'c_total{job="j",instance="h:1",k="y"} 6\nc_total{job="j",instance="h:1",k="z"} 1\n'
    third = converter.convert(promtext.parse(third_text), T1)
    assert scrape_values(second, "h:1")["scrape_series_added"] == 0.0
    # The staleness marker of k="y" is not a scraped sample.
    assert scrape_values(second, "h:1")["scrape_samples_scraped"] == 2.0
    assert scrape_values(third, "h:1")["scrape_series_added"] == 2.0
    assert scrape_values(third, "h:1")["scrape_samples_scraped"] == 4.0


def test_scrape_series_off_by_default():
    assert "up" not in metric_names(convert_text(TARGETS_TEXT))


def test_scrape_series_name_taken_by_target():
    converter = convert.Converter(convert.ConvertOptions(scrape_series=True))
    request = converter.convert(promtext.parse('up{job="j",instance="h:1"} 0\n'), T0)
    (dp,) = metric_by_name(request, "h:1", "up").gauge.data_points
    assert dp.as_double == 0.0
    assert metric_names(request).count("up") == 1
    assert len(converter.warnings) == 1
    assert converter.warnings[0].startswith("up: ")


def test_negative_scrape_duration_rejected():
    with pytest.raises(ValueError, match="invalid scrape_duration_s -1.0"):
        convert.Converter(convert.ConvertOptions(scrape_duration_s=-1.0))
    with pytest.raises(ValueError, match="invalid scrape_duration_s nan"):
        convert.Converter(convert.ConvertOptions(scrape_duration_s=math.nan))


def test_six_nodes_scrape_series():
    request = six_nodes_request(scrape_series=True)
    assert len(request.resource_metrics) == 6
    assert len(set(metric_names(request))) == 57 + 5
    text = SIX_NODES.read_text()
    for rm in request.resource_metrics:
        instance = attrs(rm.resource.attributes)["service.instance.id"]
        # Count the instance's sample lines in the text, independently of the parser.
        lines = sum(1 for line in text.splitlines() if f'instance="{instance}"' in line and not line.startswith("#"))
        assert scrape_values(request, instance)["scrape_samples_scraped"] == lines


def test_cli_scrape_series(tmp_path, capsys):
    out = tmp_path / "rec.otlprec"
    code = run_convert(
        ["--out", str(out), "--strip-prefix", "otel_", "--scrape-series", "--scrape-duration-s", "0.5",
         f"{SIX_NODES}@2025-12-22T10:00:00Z"]
    )
    assert code == 0
    # 1499 points of the text + 5 scrape series on each of 6 resources.
    assert "1 requests, 6 resources, 62 metric names, 1529 points" in capsys.readouterr().err
    (record,) = read_recording(out)
    durations = [
        m.values[0] for rm in record.decode().batch for m in rm.metrics if m.name == "scrape_duration_seconds"
    ]
    assert durations == [0.5] * 6


def test_cli_rejects_negative_scrape_duration(tmp_path, capsys):
    code = run_convert(["--out", str(tmp_path / "r.otlprec"), "--scrape-duration-s", "-2", f"{SIX_NODES}@0"])
    assert code == 1
    assert "invalid scrape_duration_s -2.0" in capsys.readouterr().err
