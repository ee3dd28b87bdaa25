"""Convert Prometheus exposition text into OTLP, the way a Collector's
prometheus receiver forwards a scrape.

What a collector does, and this module copies (collector-contrib
receiver/prometheusreceiver, v0.140+ defaults):
- one ResourceMetrics per (job, instance), with resource attributes
  service.name = job, service.instance.id = instance, server.address (left
  out for loopback hosts), server.port (a string) and url.scheme;
- counters become monotonic cumulative Sums, gauges and untyped families
  become Gauges, and the original type goes into the metric's metadata as
  ``prometheus.type``;
- all other labels become point attributes; empty-valued labels are dropped;
- start_time_unix_nano is 0 (v0.140 and later, without ``_created`` series).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from pipeline.promtext import Exposition

SCOPE_NAME = "github.com/open-telemetry/opentelemetry-collector-contrib/receiver/prometheusreceiver"
SCOPE_VERSION = "0.142.0"

# node_exporter's types, for exposition text without "# TYPE" lines (such as
# the text a collector's prometheus exporter re-exposes). First match wins.
NODE_EXPORTER_TYPES: tuple[tuple[str, str], ...] = (
    ("node_vmstat_*", "unknown"),
    ("node_netstat_*", "unknown"),
    ("node_snmp_*", "unknown"),
    ("*_total", "counter"),
    ("*", "gauge"),
)

_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0"}


@dataclass
class ConvertOptions:
    """How to turn text into OTLP.

    ``strip_prefix`` is removed from metric names (a collector's prometheus
    exporter with ``namespace: otel`` adds ``otel_``). ``type_table`` is used
    for families without a ``# TYPE`` line: (glob, type) pairs, first match.
    ``job`` and ``instance`` apply to samples without those labels.
    """

    strip_prefix: str = ""
    type_table: tuple[tuple[str, str], ...] = NODE_EXPORTER_TYPES
    job: str = ""
    instance: str = ""
    scheme: str = "http"
    type_metadata: bool = True
    extra_resource: dict[str, str] = field(default_factory=dict)


def family_type(name: str, exposition: Exposition, options: ConvertOptions) -> str:
    """Return the Prometheus type of family ``name`` (after prefix removal)."""
    declared = exposition.types.get(name) or exposition.types.get(options.strip_prefix + name)
    if declared:
        return "unknown" if declared == "untyped" else declared
    for pattern, kind in options.type_table:
        if fnmatch.fnmatchcase(name, pattern):
            return kind
    return "unknown"


def _resource_attrs(job: str, instance: str, options: ConvertOptions) -> dict[str, str]:
    attrs = {"service.name": job, "service.instance.id": instance}
    host, _, port = instance.rpartition(":")
    if not host:
        host, port = instance, ""
    if host and host not in _LOOPBACK_HOSTS:
        attrs["server.address"] = host
    if port:
        attrs["server.port"] = port
    attrs["url.scheme"] = options.scheme
    attrs.update(options.extra_resource)
    return attrs


def _set_attributes(target, attrs: dict[str, str]) -> None:
    target.extend(KeyValue(key=k, value={"string_value": v}) for k, v in attrs.items())


def exposition_to_request(
    exposition: Exposition, time_ns: int, options: ConvertOptions | None = None
) -> ExportMetricsServiceRequest:
    """Build one Export request holding every target of one scrape.

    Samples with an explicit timestamp keep it; the others get ``time_ns``.
    """
    options = options or ConvertOptions()
    prefix = options.strip_prefix
    # (job, instance) → family name → list of samples, in file order.
    targets: dict[tuple[str, str], dict[str, list]] = {}
    for sample in exposition.samples:
        name = sample.name[len(prefix):] if prefix and sample.name.startswith(prefix) else sample.name
        labels = dict(sample.labels)
        job = labels.pop("job", options.job)
        instance = labels.pop("instance", options.instance)
        families = targets.setdefault((job, instance), {})
        families.setdefault(name, []).append((labels, sample))

    request = ExportMetricsServiceRequest()
    for (job, instance), families in targets.items():
        rm = request.resource_metrics.add()
        _set_attributes(rm.resource.attributes, _resource_attrs(job, instance, options))
        sm = rm.scope_metrics.add()
        sm.scope.name = SCOPE_NAME
        sm.scope.version = SCOPE_VERSION
        for name, series in families.items():
            kind = family_type(name, exposition, options)
            metric = sm.metrics.add()
            metric.name = name
            metric.description = exposition.helps.get(name, "")
            metric.unit = exposition.units.get(name, "")
            if options.type_metadata:
                metric.metadata.add(key="prometheus.type", value={"string_value": kind})
            if kind == "counter":
                metric.sum.is_monotonic = True
                metric.sum.aggregation_temporality = (
                    AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
                )
                points = metric.sum.data_points
            elif kind in ("histogram", "summary", "gaugehistogram"):
                # NOTE: histogram and summary families are not converted yet;
                # their samples are written as gauges under their own names.
                metric.ClearField("metadata")
                points = metric.gauge.data_points
            else:
                points = metric.gauge.data_points
            for labels, sample in series:
                dp = points.add()
                _set_attributes(dp.attributes, {k: v for k, v in labels.items() if v != ""})
                dp.time_unix_nano = (
                    sample.timestamp_ms * 1_000_000 if sample.timestamp_ms is not None else time_ns
                )
                dp.as_double = sample.value
    return request
