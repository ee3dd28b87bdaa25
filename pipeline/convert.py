"""Convert Prometheus exposition text into OTLP, the way a Collector's
prometheus receiver forwards a scrape.

What a collector does, and this module copies (collector-contrib
receiver/prometheusreceiver, internal/metricfamily.go, transaction.go and
util.go; v0.140+ defaults unless an option selects otherwise):
- one ResourceMetrics per (job, instance), with resource attributes
  service.name = job, service.instance.id = instance, server.address (left
  out for loopback hosts), server.port (a string) and url.scheme; the
  labels of a ``target_info`` series become further resource attributes;
- counters become monotonic cumulative Sums; gauges and untyped families
  become Gauges; info and stateset families become non-monotonic
  cumulative Sums; the original type goes into the metric's metadata as
  ``prometheus.type`` (``unknown`` for untyped);
- classic histograms become cumulative Histograms: ``explicit_bounds``
  from the ``le`` labels without +Inf, per-bucket (not cumulative) counts,
  ``count`` from ``_count`` and ``sum`` only when ``_sum`` exists; a
  histogram without ``_count`` produces no point, and one whose bucket
  counts decrease or exceed ``_count`` is dropped;
- summaries become Summaries with quantiles in ascending order;
- all other labels become point attributes; empty-valued labels are dropped;
- start_time_unix_nano is 0 (v0.140 and later) unless the series has a
  ``_created`` sample, which a histogram, a summary or an OpenMetrics
  counter (``# TYPE foo counter``) may have. A counter's ``foo_created``
  sets the start of the ``foo_total`` point with the same labels and is not
  a metric of its own (internal/metadata.go). ``start_time="first_point"``
  gives the behaviour up to v0.139 instead: a series' start is the time of
  its first point, and of the point where its value went down;
- a series present in one scrape and missing from the next scrape of the
  same target gets a staleness marker (flag NO_RECORDED_VALUE, value unset)
  at the next scrape's time;
- with ``scrape_series``, each target also gets the Gauges that the scrape
  loop adds (internal/metadata.go lists them): ``up``,
  ``scrape_duration_seconds``, ``scrape_samples_scraped``,
  ``scrape_samples_post_metric_relabeling`` and ``scrape_series_added``.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from pipeline import promtext
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

# Type names a "# TYPE" line or a type table may use.
PROMETHEUS_TYPES = promtext.TYPES

START_TIME_MODES = ("zero", "first_point")

# The scrape loop's own series, in the order Prometheus appends them:
# (name, description, unit). The collector's receiver makes them Gauges.
SCRAPE_SERIES: tuple[tuple[str, str, str], ...] = (
    ("up", "The scraping was successful", ""),
    ("scrape_duration_seconds", "Duration of the scrape", "s"),
    ("scrape_samples_scraped", "The number of samples the target exposed", ""),
    (
        "scrape_samples_post_metric_relabeling",
        "The number of samples remaining after metric relabeling was applied",
        "",
    ),
    ("scrape_series_added", "The approximate number of new series in this scrape", ""),
)

_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]", "0.0.0.0"}

# Suffixes the receiver strips to find a sample's family, tried in this order.
_FAMILY_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_info", "_created")

# The collector's Prometheus unit words → UCUM (pkg/translator/prometheus).
_UNIT_WORDS = {
    "days": "d", "hours": "h", "minutes": "min", "seconds": "s",
    "milliseconds": "ms", "microseconds": "us", "nanoseconds": "ns",
    "bytes": "By", "kibibytes": "KiBy", "mebibytes": "MiBy", "gibibytes": "GiBy",
    "tibibytes": "TiBy", "kilobytes": "KBy", "megabytes": "MBy", "gigabytes": "GBy",
    "terabytes": "TBy", "meters": "m", "volts": "V", "amperes": "A", "joules": "J",
    "watts": "W", "grams": "g", "celsius": "Cel", "hertz": "Hz", "ratio": "1",
    "percent": "%",
}  # fmt: skip
_PER_UNIT_WORDS = {
    "second": "s", "minute": "m", "hour": "h", "day": "d", "week": "w", "month": "mo", "year": "y",
}  # fmt: skip

_CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_NO_RECORDED_VALUE = 1


@dataclass
class ConvertOptions:
    """How to turn text into OTLP.

    ``strip_prefix`` is removed from metric names (a collector's prometheus
    exporter with ``namespace: otel`` adds ``otel_``). ``type_table`` is used
    for families without a ``# TYPE`` line: (glob, type) pairs, first match.
    ``job`` and ``instance`` apply to samples without those labels.
    ``start_time`` is "zero" (collector v0.140+) or "first_point" (up to
    v0.139). ``staleness_markers`` adds a marker for every series that
    disappeared since the previous scrape of the same target.
    ``scrape_series`` adds the scrape loop's series (``up`` and
    ``scrape_*``) to every target, with ``scrape_duration_s`` as
    ``scrape_duration_seconds``.
    """

    strip_prefix: str = ""
    type_table: tuple[tuple[str, str], ...] = NODE_EXPORTER_TYPES
    job: str = ""
    instance: str = ""
    scheme: str = "http"
    type_metadata: bool = True
    extra_resource: dict[str, str] = field(default_factory=dict)
    start_time: str = "zero"
    staleness_markers: bool = True
    scrape_series: bool = False
    scrape_duration_s: float = 0.0

    def validate(self) -> None:
        if not math.isfinite(self.scrape_duration_s) or self.scrape_duration_s < 0:
            raise ValueError(
                f"invalid scrape_duration_s {self.scrape_duration_s!r}: use a finite number of seconds >= 0"
            )
        if self.start_time not in START_TIME_MODES:
            raise ValueError(
                f"invalid start_time {self.start_time!r}: use one of {', '.join(START_TIME_MODES)}"
            )
        for pattern, kind in self.type_table:
            if kind not in PROMETHEUS_TYPES:
                raise ValueError(
                    f"invalid type {kind!r} for pattern {pattern!r}: use one of "
                    f"{', '.join(PROMETHEUS_TYPES)}"
                )


def parse_type_table(text: str, source: str = "<types>") -> tuple[tuple[str, str], ...]:
    """Parse a type table: one ``GLOB TYPE`` pair per line, ``#`` comments.

    Raises ValueError naming the line on a malformed entry or unknown type.
    """
    table = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{source}:{lineno}: expected 'GLOB TYPE', got {raw.strip()!r}")
        pattern, kind = parts
        if kind not in PROMETHEUS_TYPES:
            raise ValueError(
                f"{source}:{lineno}: invalid type {kind!r}: use one of {', '.join(PROMETHEUS_TYPES)}"
            )
        table.append((pattern, kind))
    return tuple(table)


def unit_to_ucum(unit: str) -> str:
    """Translate a Prometheus unit word (``seconds``, ``bytes_per_second``) to UCUM."""
    if not unit:
        return ""
    word, _, per = unit.partition("_per_")
    ucum = _UNIT_WORDS.get(word, word)
    if per:
        ucum += "/" + _PER_UNIT_WORDS.get(per, per)
    return ucum


def _normalize_type(declared: str) -> str:
    return "unknown" if declared == "untyped" else declared


def _table_type(name: str, options: ConvertOptions) -> str | None:
    for pattern, kind in options.type_table:
        if fnmatch.fnmatchcase(name, pattern):
            return _normalize_type(kind)
    return None


def _declared_type(name: str, exposition: Exposition, options: ConvertOptions) -> str | None:
    declared = exposition.types.get(name) or exposition.types.get(options.strip_prefix + name)
    return _normalize_type(declared) if declared else None


def _base_name(name: str) -> str:
    for suffix in _FAMILY_SUFFIXES:
        if name.endswith(suffix) and name != suffix:
            return name[: -len(suffix)]
    return name


def resolve_family(name: str, exposition: Exposition, options: ConvertOptions) -> tuple[str, str]:
    """Return (family name, Prometheus type) of a sample name (prefix removed).

    As the receiver does: the sample's own ``# TYPE`` wins; then the type of
    its name without a ``_bucket``/``_count``/``_sum``/``_total``/``_info``/
    ``_created`` suffix; then the type table, where a histogram or summary
    entry matching the base name claims its ``_bucket``/``_sum``/``_count``
    series. A counter keeps the sample's name, except that a counter's
    ``_created`` sample belongs to its ``_total`` family.
    """
    declared = _declared_type(name, exposition, options)
    if declared:
        return name, declared
    base = _base_name(name)
    if base != name:
        declared = _declared_type(base, exposition, options)
        if declared == "counter" and name.endswith("_created"):
            return base + "_total", declared
        if declared:
            return (name, declared) if declared == "counter" else (base, declared)
        table_kind = _table_type(base, options)
        if table_kind in ("histogram", "summary"):
            return base, table_kind
    return name, _table_type(name, options) or "unknown"


def family_type(name: str, exposition: Exposition, options: ConvertOptions) -> str:
    """Return the Prometheus type of sample name ``name`` (after prefix removal)."""
    return resolve_family(name, exposition, options)[1]


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


def _timestamp_from_seconds(seconds: float) -> int:
    """Convert a ``_created`` value in Unix seconds to ns as the receiver does.

    Whole seconds and the fraction are converted apart, each truncated, so a
    large value keeps its nanoseconds better than ``seconds * 1e9`` would.
    """
    whole = int(seconds)
    return whole * 1_000_000_000 + int((seconds - whole) * 1e9)


def _parse_bound(text: str) -> float:
    lowered = text.lower()
    if lowered in ("+inf", "inf"):
        return math.inf
    if lowered == "-inf":
        return -math.inf
    return float(text)


# --- per-scrape grouping -----------------------------------------------------


@dataclass(slots=True)
class _Group:
    """The samples of one histogram or summary series (one label set)."""

    attrs: dict[str, str]
    time_ns: int
    count: float | None = None
    sum: float | None = None
    created_s: float | None = None
    stale: bool = False
    # (bound or quantile, value)
    entries: list[tuple[float, float]] = field(default_factory=list)


@dataclass(slots=True)
class _Family:
    name: str
    prom_type: str
    description: str = ""
    unit: str = ""
    # Number series: (attrs, time_ns, value or None for a staleness marker).
    points: list[tuple[dict[str, str], int, float | None]] = field(default_factory=list)
    groups: dict[tuple, _Group] = field(default_factory=dict)
    # A counter's _created values in Unix seconds, by attributes key.
    created_s: dict[tuple, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Target:
    resource: dict[str, str]
    families: dict[str, _Family] = field(default_factory=dict)
    samples: int = 0
    # (sample name, sorted labels) of every sample; filled for scrape_series only.
    series: set[tuple] = field(default_factory=set)


def _attrs_key(attrs: dict[str, str]) -> tuple:
    return tuple(sorted(attrs.items()))


class Converter:
    """Convert successive scrapes, keeping what a receiver keeps between them.

    One Converter stands for one collector: it remembers each target's
    series (for staleness markers) and, with ``start_time="first_point"``,
    each series' start time. ``warnings`` lists samples it left out and why.
    """

    def __init__(self, options: ConvertOptions | None = None) -> None:
        self.options = options or ConvertOptions()
        self.options.validate()
        self.warnings: list[str] = []
        # (job, instance) → {(family, kind, attrs key): attrs} seen in the last scrape.
        self._last_series: dict[tuple[str, str], dict[tuple, tuple[str, str, dict[str, str]]]] = {}
        # (job, instance, metric, attrs key) → [start_ns, previous value, previous sum]
        self._starts: dict[tuple, list] = {}
        # (job, instance) → the target's series in its last scrape, for scrape_series_added.
        self._scraped_series: dict[tuple[str, str], set[tuple]] = {}

    def convert(self, exposition: Exposition, time_ns: int) -> ExportMetricsServiceRequest:
        """Build one Export request holding every target of one scrape.

        Samples with an explicit timestamp keep it; the others get ``time_ns``.
        """
        targets = self._group(exposition, time_ns)
        if self.options.staleness_markers:
            self._add_staleness_markers(targets, time_ns)
        if self.options.scrape_series:
            self._add_scrape_series(targets, time_ns)
        request = ExportMetricsServiceRequest()
        for (job, instance), target in targets.items():
            rm = request.resource_metrics.add()
            _set_attributes(rm.resource.attributes, target.resource)
            sm = rm.scope_metrics.add()
            sm.scope.name = SCOPE_NAME
            sm.scope.version = SCOPE_VERSION
            for family in target.families.values():
                self._write_family(sm, family, (job, instance))
            if not sm.metrics:
                del request.resource_metrics[-1]
        return request

    # -- grouping samples into targets, families and series --

    def _group(self, exposition: Exposition, time_ns: int) -> dict[tuple[str, str], _Target]:
        options = self.options
        prefix = options.strip_prefix
        targets: dict[tuple[str, str], _Target] = {}
        resolved: dict[str, tuple[str, str]] = {}
        track_series = options.scrape_series
        for sample in exposition.samples:
            name = sample.name
            if prefix and name.startswith(prefix):
                name = name[len(prefix):]
            labels = dict(sample.labels)
            job = labels.pop("job", options.job)
            instance = labels.pop("instance", options.instance)
            target = targets.get((job, instance))
            if target is None:
                target = targets[(job, instance)] = _Target(_resource_attrs(job, instance, options))
            target.samples += 1
            if track_series:
                target.series.add((name, _attrs_key(labels)))
            if name == "target_info":
                target.resource.update(labels)
                continue
            family_name, kind = resolved.get(name) or resolved.setdefault(
                name, resolve_family(name, exposition, options)
            )
            family = target.families.get(family_name)
            if family is None:
                family = target.families[family_name] = _Family(
                    family_name,
                    kind,
                    exposition.helps.get(family_name)
                    or exposition.helps.get(prefix + family_name, ""),
                    unit_to_ucum(
                        exposition.units.get(family_name)
                        or exposition.units.get(prefix + family_name, "")
                    ),
                )
            t = sample.timestamp_ms * 1_000_000 if sample.timestamp_ms is not None else time_ns
            if kind in ("histogram", "summary"):
                self._add_complex_sample(family, name, labels, t, sample.value)
            elif name != family_name and kind == "counter":
                # An OpenMetrics counter's _created sample: the start time of
                # the _total point with the same labels, not a point itself.
                attrs = {k: v for k, v in labels.items() if v != ""}
                family.created_s[_attrs_key(attrs)] = sample.value
            else:
                attrs = {k: v for k, v in labels.items() if v != ""}
                family.points.append((attrs, t, sample.value))
        return targets

    def _add_complex_sample(
        self, family: _Family, name: str, labels: dict[str, str], time_ns: int, value: float
    ) -> None:
        boundary_label = "le" if family.prom_type == "histogram" else "quantile"
        boundary_text = labels.pop(boundary_label, None)
        attrs = {k: v for k, v in labels.items() if v != ""}
        key = _attrs_key(attrs)
        group = family.groups.get(key)
        if group is None:
            group = family.groups[key] = _Group(attrs, time_ns)
        if name == family.name + "_sum":
            group.sum = value
        elif name == family.name + "_count":
            group.count = value
            group.time_ns = time_ns  # the receiver takes the point's time from _count
        elif name == family.name + "_created":
            group.created_s = value
        else:
            if not boundary_text:
                self.warnings.append(
                    f"{name}{attrs}: {boundary_label!r} label is missing or empty; sample left out"
                )
                return
            try:
                bound = _parse_bound(boundary_text)
            except ValueError:
                self.warnings.append(
                    f"{name}{attrs}: invalid {boundary_label} {boundary_text!r}; sample left out"
                )
                return
            group.entries.append((bound, value))

    def _add_staleness_markers(self, targets: dict[tuple[str, str], _Target], time_ns: int) -> None:
        # NOTE: a target absent from a whole scrape gets no markers. Prometheus
        # marks every series of a target whose scrape fails or that is removed.
        for target_key, target in targets.items():
            current: dict[tuple, tuple[str, str, dict[str, str]]] = {}
            for family in target.families.values():
                for attrs, _, _ in family.points:
                    current[(family.name, family.prom_type, _attrs_key(attrs))] = (
                        family.name, family.prom_type, attrs
                    )
                for key, group in family.groups.items():
                    current[(family.name, family.prom_type, key)] = (
                        family.name, family.prom_type, group.attrs
                    )
            previous = self._last_series.get(target_key, {})
            for series_key, (name, kind, attrs) in previous.items():
                if series_key in current:
                    continue
                family = target.families.get(name)
                if family is None:
                    family = target.families[name] = _Family(name, kind)
                if kind in ("histogram", "summary"):
                    family.groups[series_key[2]] = _Group(attrs, time_ns, stale=True)
                else:
                    family.points.append((attrs, time_ns, None))
            self._last_series[target_key] = current

    def _add_scrape_series(self, targets: dict[tuple[str, str], _Target], time_ns: int) -> None:
        """Add the scrape loop's Gauges to every target, after its own families.

        ``scrape_series_added`` counts the (name, labels) series that were not
        in the target's previous scrape, as Prometheus' scrape cache does.
        """
        # NOTE: up is always 1 because a converted scrape cannot fail, and the
        # optional series (scrape_timeout_seconds, scrape_sample_limit,
        # scrape_body_size_bytes) are not added.
        for target_key, target in targets.items():
            previous = self._scraped_series.get(target_key, set())
            values = {
                "up": 1.0,
                "scrape_duration_seconds": self.options.scrape_duration_s,
                "scrape_samples_scraped": float(target.samples),
                # No metric relabeling here, so every sample remains.
                "scrape_samples_post_metric_relabeling": float(target.samples),
                "scrape_series_added": float(len(target.series - previous)),
            }
            self._scraped_series[target_key] = target.series
            for name, description, unit in SCRAPE_SERIES:
                if name in target.families:
                    self.warnings.append(
                        f"{name}: the target exposes a metric with the scrape loop's name; "
                        "its own samples are kept and the scrape series is left out"
                    )
                    continue
                target.families[name] = _Family(
                    name, "gauge", description, unit, [({}, time_ns, values[name])]
                )

    # -- writing OTLP --

    def _write_family(self, sm, family: _Family, target_key: tuple[str, str]) -> None:
        metric = sm.metrics.add()
        metric.name = family.name
        metric.description = family.description
        metric.unit = family.unit
        if self.options.type_metadata:
            metric.metadata.add(key="prometheus.type", value={"string_value": family.prom_type})
        kind = family.prom_type
        if kind == "histogram":
            metric.histogram.aggregation_temporality = _CUMULATIVE
            for group in family.groups.values():
                self._write_histogram_point(metric, group, target_key)
            written = len(metric.histogram.data_points)
        elif kind == "summary":
            for group in family.groups.values():
                self._write_summary_point(metric, group, target_key)
            written = len(metric.summary.data_points)
        elif kind in ("counter", "info", "stateset"):
            metric.sum.is_monotonic = kind == "counter"
            metric.sum.aggregation_temporality = _CUMULATIVE
            self._write_number_points(metric.sum.data_points, family, target_key, cumulative=True)
            written = len(metric.sum.data_points)
        else:
            # NOTE: gaugehistogram families are written as gauges, one per
            # sample name, where the receiver drops their type.
            self._write_number_points(metric.gauge.data_points, family, target_key, cumulative=False)
            written = len(metric.gauge.data_points)
        if not written:
            del sm.metrics[-1]

    def _write_number_points(self, points, family: _Family, target_key, cumulative: bool) -> None:
        first_point = cumulative and self.options.start_time == "first_point"
        created = family.created_s
        for attrs, time_ns, value in family.points:
            dp = points.add()
            _set_attributes(dp.attributes, attrs)
            dp.time_unix_nano = time_ns
            if value is None:
                dp.flags = _NO_RECORDED_VALUE
            else:
                dp.as_double = value
            created_s = created.get(_attrs_key(attrs)) if created else None
            if created_s:
                dp.start_time_unix_nano = _timestamp_from_seconds(created_s)
            elif first_point:
                dp.start_time_unix_nano = self._start_time(
                    target_key, family.name, attrs, time_ns, value, None
                )

    def _write_histogram_point(self, metric, group: _Group, target_key) -> None:
        if group.stale:
            dp = metric.histogram.data_points.add()
            dp.flags = _NO_RECORDED_VALUE
            self._finish_point(dp, metric.name, group, target_key, None, None)
            return
        if group.count is None:
            self.warnings.append(f"{metric.name}{group.attrs}: no _count series; point left out")
            return
        entries = sorted(group.entries, key=lambda e: e[0])
        if entries and entries[-1][0] == math.inf:
            entries.pop()
        previous = 0.0
        for _, cumulative in entries:
            if math.isnan(cumulative) or cumulative < previous:
                self.warnings.append(
                    f"{metric.name}{group.attrs}: bucket counts are NaN or decreasing; point left out"
                )
                return
            previous = cumulative
        if math.isnan(group.count) or group.count < previous:
            self.warnings.append(
                f"{metric.name}{group.attrs}: _count is NaN or below the largest bucket; point left out"
            )
            return
        dp = metric.histogram.data_points.add()
        dp.count = int(group.count)
        if group.sum is not None:
            dp.sum = group.sum
        below = 0.0
        for bound, cumulative in entries:
            dp.explicit_bounds.append(bound)
            dp.bucket_counts.append(int(cumulative - below))
            below = cumulative
        dp.bucket_counts.append(int(group.count - below))
        self._finish_point(dp, metric.name, group, target_key, group.count, group.sum)

    def _write_summary_point(self, metric, group: _Group, target_key) -> None:
        if not group.stale and group.count is None:
            self.warnings.append(f"{metric.name}{group.attrs}: no _count series; point left out")
            return
        dp = metric.summary.data_points.add()
        if group.stale:
            dp.flags = _NO_RECORDED_VALUE
        else:
            dp.count = int(group.count)
            if group.sum is not None:
                dp.sum = group.sum
            for quantile, value in sorted(group.entries, key=lambda e: e[0]):
                dp.quantile_values.add(quantile=quantile, value=value)
        self._finish_point(
            dp, metric.name, group, target_key, None if group.stale else group.count, group.sum
        )

    def _finish_point(self, dp, name: str, group: _Group, target_key, count, total) -> None:
        _set_attributes(dp.attributes, group.attrs)
        dp.time_unix_nano = group.time_ns
        if group.created_s:
            dp.start_time_unix_nano = _timestamp_from_seconds(group.created_s)
        elif self.options.start_time == "first_point":
            dp.start_time_unix_nano = self._start_time(
                target_key, name, group.attrs, group.time_ns, count, total
            )

    def _start_time(
        self, target_key, name: str, attrs: dict[str, str], time_ns: int, value, total
    ) -> int:
        """Start time as receivers up to v0.139 set it (their metrics adjuster)."""
        key = (*target_key, name, _attrs_key(attrs))
        state = self._starts.get(key)
        if state is None:
            if value is None:
                return 0
            self._starts[key] = [time_ns, value, total]
            return time_ns
        if value is None:
            return state[0]
        reset = value < state[1] or (total is not None and state[2] is not None and total < state[2])
        if reset:
            state[0] = time_ns
        state[1], state[2] = value, total
        return state[0]


def exposition_to_request(
    exposition: Exposition, time_ns: int, options: ConvertOptions | None = None
) -> ExportMetricsServiceRequest:
    """Build one Export request holding every target of one scrape.

    Samples with an explicit timestamp keep it; the others get ``time_ns``.
    For several scrapes of the same targets use one ``Converter``, which
    adds staleness markers and keeps start times between them.
    """
    return Converter(options).convert(exposition, time_ns)
