"""Decode OTLP metrics requests into the plain objects of ``pipeline.model``.

This is the one place that reads protobuf on the hot path. A point that
cannot be used is left out and counted as rejected, with the reason, so the
receiver can report an OTLP partial success.

Speed comes from one trick: the request is parsed with a copy of the OTLP
schema in which a data point's ``attributes`` field is declared as
``repeated bytes`` instead of ``repeated KeyValue``. Both are length-delimited
on the wire, so the bytes are the same; parsing hands each attribute over as
one bytes object, and the tuple of them is the key of a cache of decoded
attribute dicts. A series seen before costs one dict lookup instead of
building a KeyValue and an AnyValue wrapper per label. The attribute dicts
are shared between points and scrapes, so nothing may modify them. A
metric's ``metadata`` is read the same way, through a cache of the
``prometheus.type`` value by the metadata's bytes.

A node_exporter scrape has about 4 points per metric, so the steps done
once per metric are a large share of the cost too. That is why ``Metric``
is built once, with positional arguments, after its columns are filled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2

from pipeline.model import (
    Batch,
    HistogramValue,
    Metric,
    MetricKind,
    ResourceMetrics,
    SummaryValue,
)

NO_RECORDED_VALUE = 1  # DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK

_KIND = {
    "gauge": MetricKind.GAUGE,
    "sum": MetricKind.SUM,
    "histogram": MetricKind.HISTOGRAM,
    "summary": MetricKind.SUMMARY,
}


@dataclass(slots=True)
class DecodeResult:
    batch: Batch
    points: int = 0
    rejected: int = 0
    # reason → count, e.g. {"exponential histograms are not supported": 3}
    reject_reasons: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str, count: int) -> None:
        if count:
            self.rejected += count
            self.reject_reasons[reason] = self.reject_reasons.get(reason, 0) + count

    def error_message(self) -> str:
        """Return one line listing why points were rejected, for the partial success message."""
        return "; ".join(f"{n} points: {r}" for r, n in sorted(self.reject_reasons.items()))


def any_value_str(value) -> str:
    """Render an OTLP AnyValue as the string a Prometheus label would carry."""
    kind = value.WhichOneof("value")
    if kind == "string_value" or kind is None:
        return value.string_value
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return repr(value.double_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "bytes_value":
        return value.bytes_value.hex()
    # Arrays and key-value lists do not occur in Prometheus-derived data.
    return str(getattr(value, kind)).replace("\n", " ").strip()


def attributes_dict(kvs) -> dict[str, str]:
    """Convert repeated KeyValue into a str → str dict."""
    out = {}
    for kv in kvs:
        v = kv.value
        s = v.string_value
        if not s and v.WhichOneof("value") != "string_value":
            s = any_value_str(v)
        out[kv.key] = s
    return out


def _lazy_attributes_request_class() -> type:
    """Build ExportMetricsServiceRequest with point attributes and metric metadata as bytes."""
    pool = descriptor_pool.DescriptorPool()
    # message → its repeated KeyValue field to read as bytes
    lazy_fields = {
        "NumberDataPoint": "attributes",
        "HistogramDataPoint": "attributes",
        "SummaryDataPoint": "attributes",
        "Metric": "metadata",
    }
    for module in (common_pb2, resource_pb2, metrics_pb2, metrics_service_pb2):
        file_proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file_proto)
        if module is metrics_pb2:
            for message in file_proto.message_type:
                for fld in message.field:
                    if fld.name == lazy_fields.get(message.name):
                        fld.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                        fld.ClearField("type_name")
        pool.Add(file_proto)
    descriptor = pool.FindMessageTypeByName(
        "opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest"
    )
    return message_factory.GetMessageClass(descriptor)


LazyExportRequest = _lazy_attributes_request_class()

# Attribute cache: tuple of serialized KeyValues → decoded dict. Bounded: when
# it reaches this many entries it is cleared and refills from live traffic.
ATTRIBUTE_CACHE_MAX = 200_000
_attribute_cache: dict[tuple[bytes, ...], dict[str, str]] = {}
_KeyValue = common_pb2.KeyValue


def _decode_attribute_bytes(raw: tuple[bytes, ...]) -> dict[str, str]:
    """Decode serialized KeyValues (raises DecodeError on bad bytes) and cache them."""
    out = {}
    for item in raw:
        kv = _KeyValue()
        kv.ParseFromString(item)
        v = kv.value
        s = v.string_value
        if not s and v.WhichOneof("value") != "string_value":
            s = any_value_str(v)
        out[kv.key] = s
    if len(_attribute_cache) >= ATTRIBUTE_CACHE_MAX:
        _attribute_cache.clear()
    _attribute_cache[raw] = out
    return out


# Metadata cache: tuple of serialized KeyValues → the prometheus.type value.
# Only a few distinct metadata sets occur (one per Prometheus type).
METADATA_CACHE_MAX = 10_000
_metadata_cache: dict[tuple[bytes, ...], str] = {}


def _decode_prom_type(raw: tuple[bytes, ...]) -> str:
    """Return the ``prometheus.type`` of a metric's serialized metadata, or "", and cache it.

    Raises DecodeError on bad bytes, as parsing the whole request with the
    standard classes would.
    """
    prom_type = ""
    for item in raw:
        kv = _KeyValue()
        kv.ParseFromString(item)
        if kv.key == "prometheus.type":
            prom_type = kv.value.string_value
    if len(_metadata_cache) >= METADATA_CACHE_MAX:
        _metadata_cache.clear()
    _metadata_cache[raw] = prom_type
    return prom_type


def point_attributes(dp) -> dict[str, str]:
    """Return the attributes of a point parsed with LazyExportRequest."""
    raw = tuple(dp.attributes[:])
    attrs = _attribute_cache.get(raw)
    if attrs is None:
        attrs = _decode_attribute_bytes(raw)
    return attrs


def decode_request(request) -> DecodeResult:
    """Decode a parsed LazyExportRequest into a batch; count unusable points.

    A standard ExportMetricsServiceRequest is accepted too (it is
    re-serialized first), for callers that built one in code.
    """
    if isinstance(request, ExportMetricsServiceRequest):
        lazy = LazyExportRequest()
        lazy.ParseFromString(request.SerializeToString())
        request = lazy
    result = DecodeResult(batch=[])
    batch = result.batch
    for rm_pb in request.resource_metrics:
        resource_attrs = attributes_dict(rm_pb.resource.attributes)
        for sm_pb in rm_pb.scope_metrics:
            metrics = []
            for m_pb in sm_pb.metrics:
                metric = _decode_metric(m_pb, result)
                if metric is not None:
                    metrics.append(metric)
            if metrics:
                scope = sm_pb.scope
                batch.append(ResourceMetrics(resource_attrs, metrics, scope.name, scope.version))
    return result


def _decode_metric(m_pb, result: DecodeResult) -> Metric | None:
    # Metadata is read first, for every metric, so bad metadata bytes fail
    # the request wherever they are, as a full parse would.
    raw_metadata = tuple(m_pb.metadata[:])
    prom_type = _metadata_cache.get(raw_metadata)
    if prom_type is None:
        prom_type = _decode_prom_type(raw_metadata)
    data_kind = m_pb.WhichOneof("data")
    if data_kind is None:
        return None
    if data_kind == "exponential_histogram":
        result.reject(
            "exponential histograms are not supported",
            len(m_pb.exponential_histogram.data_points),
        )
        return None
    kind = _KIND[data_kind]
    data = getattr(m_pb, data_kind)
    monotonic = False
    if kind is MetricKind.SUM:
        monotonic = data.is_monotonic
        if data.aggregation_temporality == 1:  # DELTA
            result.reject("delta temporality sums are not supported", len(data.data_points))
            return None
    elif kind is MetricKind.HISTOGRAM and data.aggregation_temporality == 1:
        result.reject("delta temporality histograms are not supported", len(data.data_points))
        return None

    if kind is MetricKind.GAUGE or kind is MetricKind.SUM:
        attrs, times, values = _number_points(data.data_points, result)
        if not values:
            return None
        result.points += len(values)
        # All fields by position (keyword arguments cost more per call):
        # name, kind, attrs, times, values, extras, deltas, intervals,
        # monotonic, unit, prom_type.
        return Metric(
            m_pb.name, kind, attrs, times, values, None, None, None, monotonic, m_pb.unit, prom_type
        )

    metric = Metric(m_pb.name, kind)
    if kind is MetricKind.HISTOGRAM:
        _aggregate_points(data.data_points, metric, result, _histogram_value)
    else:
        _aggregate_points(data.data_points, metric, result, _summary_value)
    if not metric.values:
        return None
    metric.monotonic = monotonic
    metric.unit = m_pb.unit
    metric.prom_type = prom_type
    result.points += len(metric.values)
    return metric


def _number_points(dps, result: DecodeResult) -> tuple[list, list, list]:
    """Return the attrs, times and values columns of Gauge or Sum points."""
    # The hot loop of the whole service: one dict lookup, three appends per point.
    # CPython 3.11+ specializes `list.append(x)` calls, so the appends are not
    # hoisted into bound-method locals (that is slower there).
    attrs_col: list[dict[str, str]] = []
    times_col: list[int] = []
    values_col: list[float | None] = []
    cache_get = _attribute_cache.get
    missing_time = bad_attrs = 0

    for dp in dps:
        t = dp.time_unix_nano
        if not t:
            missing_time += 1
            continue
        # Slicing copies the container in C; iterating it from Python is slower.
        raw = tuple(dp.attributes[:])
        attrs = cache_get(raw)
        if attrs is None:
            try:
                attrs = _decode_attribute_bytes(raw)
            except DecodeError:
                bad_attrs += 1
                continue
        attrs_col.append(attrs)
        times_col.append(t)
        if dp.flags & NO_RECORDED_VALUE:
            values_col.append(None)
            continue
        value = dp.as_double
        if not value:
            # 0.0 is also what an as_int point or an unset oneof reads as.
            which = dp.WhichOneof("value")
            if which == "as_int":
                value = float(dp.as_int)
            elif which is None:
                value = None
        values_col.append(value)

    if missing_time:
        result.reject("time_unix_nano is 0", missing_time)
    if bad_attrs:
        result.reject("attributes are not valid protobuf", bad_attrs)
    return attrs_col, times_col, values_col


def _histogram_value(dp) -> HistogramValue:
    return HistogramValue(
        count=float(dp.count),
        sum=dp.sum if dp.HasField("sum") else None,
        bounds=tuple(dp.explicit_bounds),
        bucket_counts=tuple(dp.bucket_counts),
    )


def _summary_value(dp) -> SummaryValue:
    return SummaryValue(
        count=float(dp.count),
        sum=dp.sum,
        quantiles=tuple((q.quantile, q.value) for q in dp.quantile_values),
    )


def _aggregate_points(dps, metric: Metric, result: DecodeResult, make_value) -> None:
    """Fill the columns of a histogram or summary metric; ``make_value`` builds extras[i]."""
    metric.extras = []
    missing_time = 0
    for dp in dps:
        if not dp.time_unix_nano:
            missing_time += 1
            continue
        try:
            attrs = point_attributes(dp)
        except DecodeError:
            result.reject("attributes are not valid protobuf", 1)
            continue
        metric.attrs.append(attrs)
        metric.times.append(dp.time_unix_nano)
        if dp.flags & NO_RECORDED_VALUE:
            metric.values.append(None)
            metric.extras.append(None)
            continue
        metric.values.append(float(dp.count))
        metric.extras.append(make_value(dp))
    result.reject("time_unix_nano is 0", missing_time)


def decode_bytes(body: bytes) -> DecodeResult:
    """Parse a serialized Export request and decode it.

    Raises google.protobuf.message.DecodeError when the bytes are not a valid
    request.
    """
    request = LazyExportRequest()
    request.ParseFromString(body)
    return decode_request(request)
