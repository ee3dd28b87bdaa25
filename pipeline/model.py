"""The data that flows between receiver, processors and exporters.

The receiver decodes each OTLP Export request once into these plain objects;
no processor touches protobuf. One ``Batch`` is a list of ``ResourceMetrics``,
in arrival order. Times are Unix nanoseconds (int), values are floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

# Resource attributes that identify a scrape target. The prometheus receiver
# sets service.name (job) and service.instance.id (instance); hostmetrics sets
# host.name. Older collectors sent net.host.name / net.host.port instead.
IDENTITY_ATTRIBUTES = (
    "service.name",
    "service.instance.id",
    "host.name",
    "k8s.node.name",
    "net.host.name",
    "net.host.port",
)


class MetricKind(Enum):
    GAUGE = "gauge"
    SUM = "sum"
    HISTOGRAM = "histogram"
    SUMMARY = "summary"


@dataclass(slots=True)
class HistogramValue:
    """One cumulative explicit-bucket histogram sample.

    ``bucket_counts`` has len(bounds) + 1 entries and is per bucket, not
    cumulative (OTLP's layout); the last bucket is (bounds[-1], +Inf].
    """

    count: float
    sum: float | None
    bounds: tuple[float, ...]
    bucket_counts: tuple[int, ...]


@dataclass(slots=True)
class SummaryValue:
    count: float
    sum: float
    quantiles: tuple[tuple[float, float], ...]


@dataclass(slots=True)
class Metric:
    """One metric of one resource, its points stored column by column.

    Point i is (attrs[i], times[i], values[i]). Columns keep per-point cost
    low: decoding appends to three lists instead of building an object per
    point, and a filter rebuilds the lists it keeps.

    - ``values[i]`` is None when the point carries no sample: a Prometheus
      staleness marker (flag NO_RECORDED_VALUE) or an unset value oneof.
      NaN and ±Inf are kept as floats; processors decide what they mean.
      For histograms and summaries it is the count.
    - ``extras[i]`` is the HistogramValue / SummaryValue of point i
      (None for a staleness marker); it is None for number metrics.
    - ``deltas`` and ``intervals`` are filled by the delta_rate processor on
      counters: the increase since the previous good sample of the series
      and the seconds between the two samples. An entry is None on a first
      sample or a point that is not a sample; the lists are None on metrics
      that are not counters.
    - ``monotonic`` is only meaningful for SUM. ``prom_type`` is the
      original Prometheus type from the metric's metadata
      (``prometheus.type``) when a collector sent it, else "".
    """

    # pipeline.decode builds Metric with positional arguments: keep this order.
    name: str
    kind: MetricKind
    attrs: list[dict[str, str]] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)
    extras: list | None = None
    deltas: list[float | None] | None = None
    intervals: list[float | None] | None = None
    monotonic: bool = False
    unit: str = ""
    prom_type: str = ""
    description: str = ""

    def __len__(self) -> int:
        return len(self.values)

    def keep(self, mask: list[bool]) -> None:
        """Drop every point whose mask entry is False."""
        self.attrs = [a for a, k in zip(self.attrs, mask) if k]
        self.times = [t for t, k in zip(self.times, mask) if k]
        self.values = [v for v, k in zip(self.values, mask) if k]
        for column in ("extras", "deltas", "intervals"):
            data = getattr(self, column)
            if data is not None:
                setattr(self, column, [x for x, k in zip(data, mask) if k])


def is_sample(value: float | None) -> bool:
    """True when a point value is a usable sample (not stale, NaN or ±Inf)."""
    return value is not None and math.isfinite(value)


@dataclass(slots=True)
class ResourceMetrics:
    """The metrics of one resource (one scrape target) in one request."""

    attrs: dict[str, str]
    metrics: list[Metric] = field(default_factory=list)
    scope_name: str = ""
    scope_version: str = ""
    _key: tuple | None = None

    @property
    def key(self) -> tuple:
        """The resource's identity: its identifying attributes, sorted."""
        if self._key is None:
            attrs = self.attrs
            ident = tuple((k, attrs[k]) for k in IDENTITY_ATTRIBUTES if k in attrs)
            if not ident:
                ident = tuple(sorted(attrs.items()))
            self._key = ident
        return self._key

    def point_count(self) -> int:
        return sum(len(m.values) for m in self.metrics)


Batch = list[ResourceMetrics]


def batch_point_count(batch: Batch) -> int:
    """Count the data points in a batch."""
    return sum(rm.point_count() for rm in batch)
