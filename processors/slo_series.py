"""Per-series counter state of the ``slo_snapshot`` processor.

The SLO snapshot needs deltas per pod before it sums them per service, so
it keeps its own state per series instead of relying on ``delta_rate``.
A series is (resource identity, metric name, point attributes); its pod is
the Linkerd ``pod`` label on that resource, or the resource itself for an
ingress controller.

For consecutive samples of one series, the rules are those of
``delta_rate`` without its jitter rule (request counters are integers):

- t1 <= t0: duplicate or out of order, dropped and counted.
- v1 >= v0: delta = v1 - v0. v1 < v0: the counter restarted, delta = v1.
  A histogram restarted when its count or a bucket count decreased or its
  bounds changed.
- a staleness marker, an unset value, NaN or ±Inf is not a sample: the
  next good sample pairs with the last good one.
- the first sample of a series on a pod seen at an earlier scrape counts
  from zero (delta = its value), because the requests that created the
  series happened in the interval. On a pod seen for the first time it
  only sets the base.
"""

from __future__ import annotations

import math

from pipeline.model import HistogramValue

# Outcomes of SeriesTable.counter_delta / histogram_delta besides a delta.
DUPLICATE = "duplicate"
OUT_OF_ORDER = "out_of_order"
SERIES_LIMIT = "series_limit"

# Indexes into a series' state list.
LAST_TIME = 0  # timestamp of the last point accepted, sample or not (ns)
HAS_BASE = 1  # False until the first good sample
BASE = 2  # last good value: a float, or (count, sum, bounds, bucket_counts)
SEEN_NS = 3  # runtime clock when the series last had a point
POD = 4  # the pod key


class SeriesTable:
    """Series and pods of the SLO families, bounded and evicted by staleness."""

    def __init__(self, max_series: int) -> None:
        self.max_series = max_series
        self.series: dict[tuple, list] = {}
        # pod key → [scrape time of its first point (ns), runtime clock when last seen]
        self.pods: dict[tuple, list] = {}
        self.resets = 0

    def _state(self, key: tuple, pod: tuple, t: int, now_ns: int) -> list | str:
        """Find a series' state, or create it; return a drop reason when the point is not usable."""
        s = self.series.get(key)
        if s is None:
            if len(self.series) >= self.max_series:
                return SERIES_LIMIT
            s = self.series[key] = [-1, False, None, now_ns, pod]
        elif t <= s[LAST_TIME]:
            return DUPLICATE if t == s[LAST_TIME] else OUT_OF_ORDER
        s[LAST_TIME] = t
        s[SEEN_NS] = now_ns
        seen = self.pods.get(pod)
        if seen is None:
            self.pods[pod] = [t, now_ns]
        else:
            seen[1] = now_ns
        return s

    def _pod_seen_before(self, pod: tuple, t: int) -> bool:
        seen = self.pods.get(pod)
        return seen is not None and seen[0] < t

    def counter_delta(self, key: tuple, pod: tuple, t: int, v: float | None, now_ns: int) -> float | str | None:
        """Return the increase of a counter point, a drop reason, or None when there is no delta."""
        s = self._state(key, pod, t, now_ns)
        if isinstance(s, str):
            return s
        if v is None or not math.isfinite(v):
            return None
        if not s[HAS_BASE]:
            s[HAS_BASE] = True
            s[BASE] = v
            return v if self._pod_seen_before(pod, t) else None
        v0 = s[BASE]
        s[BASE] = v
        if v >= v0:
            return v - v0
        self.resets += 1
        return v

    def histogram_delta(
        self, key: tuple, pod: tuple, t: int, h: HistogramValue | None, now_ns: int
    ) -> tuple | str | None:
        """Return (count, sum, bounds, bucket_counts) increases of a histogram point, a drop reason, or None."""
        s = self._state(key, pod, t, now_ns)
        if isinstance(s, str):
            return s
        if h is None or not math.isfinite(h.count):
            return None
        total = h.sum if h.sum is not None and math.isfinite(h.sum) else 0.0
        value = (h.count, total, h.bounds, h.bucket_counts)
        if not s[HAS_BASE]:
            s[HAS_BASE] = True
            s[BASE] = value
            return value if self._pod_seen_before(pod, t) else None
        count0, sum0, bounds0, buckets0 = s[BASE]
        s[BASE] = value
        if (
            h.bounds != bounds0
            or h.count < count0
            or any(b < b0 for b, b0 in zip(h.bucket_counts, buckets0))
        ):
            self.resets += 1
            return value
        return (
            h.count - count0,
            max(total - sum0, 0.0),
            h.bounds,
            tuple(b - b0 for b, b0 in zip(h.bucket_counts, buckets0)),
        )

    def evict(self, cutoff_ns: int) -> int:
        """Forget series and pods last seen before ``cutoff_ns`` (runtime clock); return the series count freed."""
        stale = [k for k, s in self.series.items() if s[SEEN_NS] < cutoff_ns]
        for k in stale:
            del self.series[k]
        for pod in [p for p, seen in self.pods.items() if seen[1] < cutoff_ns]:
            del self.pods[pod]
        return len(stale)
