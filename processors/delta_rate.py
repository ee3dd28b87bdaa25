"""The ``delta_rate`` processor: per-series increases of cumulative counters.

For every counter point it sets ``metric.deltas[i]`` (the increase since
the previous good sample of the same series) and ``metric.intervals[i]``
(the seconds between the two samples' own timestamps). Consumers divide one
by the other to get a rate; nothing here reads the wall clock for data.

A series is (resource identity, metric name, point attributes). Counters are
monotonic cumulative Sums, metrics whose ``prometheus.type`` is "counter",
and Gauges whose canonical name matches ``gauges_as_counters``
(node_exporter's untyped ``node_vmstat_*`` counters arrive as Gauges).

For consecutive samples (t0, v0) → (t1, v1) of one series:

- t1 <= t0: a duplicate (a retried Export) or out of order; the point is
  dropped. This holds for every series, gauges included, so a retried
  request leaves nothing for the next processor.
- the resource's ``node_boot_time_seconds`` moved forward by more than
  ``boot_time_tolerance_s`` at a scrape time T with t0 < T <= t1: the node
  rebooted, so the counter restarted: delta = v1. This rule wins.
- v1 >= v0: delta = v1 - v0.
- v1 < v0 by less than ``jitter_max_ratio`` of v0: jitter (the kernel's
  idle and iowait counters step back slightly): delta = 0, v1 is the new base.
- v1 < v0 otherwise: the counter restarted: delta = v1, as Prometheus
  ``rate()`` assumes.

Start times are not used: collectors rewrite them when they restart, and
from collector v0.140 they are usually 0. A point without a sample (a
staleness marker, an unset value, NaN or ±Inf) passes with no delta and is
not stored, so the next good sample pairs with the last good one. The first
sample of a series has no delta.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from pipeline.component import ConfigError, Item, Processor
from pipeline.config import raise_errors
from pipeline.logs import event
from pipeline.model import Metric, MetricKind, ResourceMetrics
from processors.filter import compile_patterns, format_resource_key, keep_points
from processors.names import HOSTMETRICS_FAMILIES, NODE_FAMILIES, NameResolver, name_variants

BOOT_TIME_FAMILY = "node_boot_time_seconds"

DROPPED_POINTS = "otelsnap_processor_dropped_points"
SERIES_GAUGE = "otelsnap_delta_rate_series"
COUNTER_RESETS = "otelsnap_delta_rate_counter_resets"
JITTER_POINTS = "otelsnap_delta_rate_jitter_points"
REBOOTS = "otelsnap_delta_rate_reboots_detected"
EVICTED_SERIES = "otelsnap_delta_rate_series_evicted"

# Metric flags, decided once per (name, kind, monotonic, prom_type).
COUNTER = 1

# Indexes into a series' state list. A list, not an object, because the hot
# loop reads and writes these fields for every point.
LAST_TIME = 0  # timestamp of the last point accepted, sample or not (ns)
BASE_TIME = 1  # timestamp of the last good sample, None before the first (ns)
BASE_VALUE = 2  # value of the last good sample
SEEN_NS = 3  # runtime clock when the series last had a point
ATTRS = 4  # the attribute dict last used to find this state (see _MetricState)

NS_PER_S = 1_000_000_000


@dataclass
class DeltaRateConfig:
    """Config of the ``delta_rate`` processor."""

    # Prefixes removed before a name is compared with gauges_as_counters.
    name_prefixes: list[str] = field(default_factory=lambda: ["otel_"])
    # Gauge (untyped) families to treat as counters, as names or globs
    # matched against the canonical node_exporter name.
    gauges_as_counters: list[str] = field(default_factory=lambda: ["node_vmstat_*"])
    # A decrease smaller than this fraction of the previous value is jitter.
    jitter_max_ratio: float = 0.01
    # node_boot_time_seconds moving forward by more than this is a reboot;
    # smaller moves are clock adjustments.
    boot_time_tolerance_s: float = 60.0
    # Series without a point for this long (runtime clock) are forgotten.
    max_staleness_s: float = 300.0
    # Series tracked at most; points of new series beyond it are dropped.
    max_series: int = 200_000

    def validate(self) -> None:
        """Check every option and raise all errors found (ConfigErrors when there are several)."""
        errors: list[ConfigError] = []
        for name in ("name_prefixes", "gauges_as_counters"):
            patterns = getattr(self, name)
            if not isinstance(patterns, list):
                errors.append(ConfigError(name, f"expected a list of names, got {patterns!r}"))
                continue
            errors += [
                ConfigError(f"{name}[{index}]", f"expected a non-empty string, got {pattern!r}")
                for index, pattern in enumerate(patterns)
                if not isinstance(pattern, str) or not pattern
            ]
        if not 0 <= self.jitter_max_ratio < 1:
            errors.append(
                ConfigError(
                    "jitter_max_ratio",
                    f"must be at least 0 and below 1 (0.01 is 1 %), got {self.jitter_max_ratio!r}",
                )
            )
        if self.boot_time_tolerance_s < 0:
            errors.append(
                ConfigError(
                    "boot_time_tolerance_s", f"must not be negative, got {self.boot_time_tolerance_s!r}"
                )
            )
        if self.max_staleness_s <= 0:
            errors.append(
                ConfigError(
                    "max_staleness_s",
                    f"must be a positive number of seconds, got {self.max_staleness_s!r}",
                )
            )
        if not isinstance(self.max_series, int) or self.max_series < 1:
            errors.append(
                ConfigError("max_series", f"must be a positive integer, got {self.max_series!r}")
            )
        raise_errors(errors)


class _MetricState:
    """The series of one metric of one resource.

    ``series`` is keyed by the sorted attribute items. Two caches avoid
    building that key per point. Both rely on attribute dicts never being
    modified, and work best because the decoder shares one dict per distinct
    attribute set between points and requests:

    - ``layout_attrs`` / ``layout_states``: the attribute dicts of the last
      request and their states, position by position. A request with equal
      dicts in the same order (the usual case: the same scrape target, the
      same collector) reuses the states list as is.
    - ``by_id``: id of an attribute dict → state. A hit counts only when the
      state's ATTRS entry is that same dict, which rules out a reused id.
    """

    __slots__ = ("series", "by_id", "layout_attrs", "layout_states")

    def __init__(self) -> None:
        self.series: dict[tuple, list] = {}
        self.by_id: dict[int, list] = {}
        self.layout_attrs: list | None = None
        self.layout_states: list | None = None


class _ResourceState:
    """Per-resource state: its metrics and its boot time."""

    __slots__ = ("metrics", "boot_time_ns", "boot_value_s", "reboot_ns", "seen_ns")

    def __init__(self, now_ns: int) -> None:
        self.metrics: dict[str, _MetricState] = {}
        self.boot_time_ns: int | None = None  # timestamp of the last boot-time sample
        self.boot_value_s: float | None = None
        self.reboot_ns: int | None = None  # scrape time of the last detected reboot
        self.seen_ns = now_ns


class _BatchCounts:
    """Counts of one process() call, added to telemetry once at its end."""

    __slots__ = ("duplicate", "out_of_order", "series_limit", "value_decrease", "reboot", "jitter")

    def __init__(self) -> None:
        self.duplicate = self.out_of_order = self.series_limit = 0
        self.value_decrease = self.reboot = self.jitter = 0


class DeltaRateProcessor(Processor):
    """Fill ``deltas`` and ``intervals`` on counters, and drop duplicate and out-of-order points."""

    type_name = "delta_rate"
    Config = DeltaRateConfig

    def __init__(self, config: DeltaRateConfig, context) -> None:
        super().__init__(config, context)
        self._resolver = NameResolver(NODE_FAMILIES | HOSTMETRICS_FAMILIES, config.name_prefixes)
        self._prefixes = tuple(config.name_prefixes)
        self._gauge_counters = compile_patterns(config.gauges_as_counters)
        self._jitter_ratio = config.jitter_max_ratio
        self._boot_tolerance_s = config.boot_time_tolerance_s
        self._max_staleness_ns = int(config.max_staleness_s * NS_PER_S)
        self._max_series = config.max_series
        self._component_id = context.component_id
        self._resources: dict[tuple, _ResourceState] = {}
        self._series_count = 0
        # A lower bound of every series' SEEN_NS, so flush() sweeps only
        # when something may be stale. None while nothing is tracked.
        self._oldest_seen_ns: int | None = None
        # metric name → (kind, monotonic, prom_type, flags)
        self._flags: dict[str, tuple] = {}
        self._boot_names = frozenset(
            prefix + variant
            for variant in name_variants(BOOT_TIME_FAMILY)
            for prefix in ("", *self._prefixes)
        )

    # -- the pipeline interface ------------------------------------------------

    def process(self, items: list[Item], now_ns: int) -> list[Item]:
        counts = _BatchCounts()
        self._read_boot_times(items, now_ns)
        out: list[Item] = []
        for item in items:
            if not isinstance(item, ResourceMetrics):
                out.append(item)
                continue
            metrics = self._process_resource(item, now_ns, counts)
            if metrics is None:
                out.append(item)
            elif metrics:
                item.metrics = metrics
                out.append(item)
        self._report(counts)
        return out

    def flush(self, now_ns: int) -> list[Item]:
        oldest = self._oldest_seen_ns
        if oldest is not None and now_ns - oldest > self._max_staleness_ns:
            self._evict_stale(now_ns)
        return []

    def shutdown(self) -> list[Item]:
        self._resources.clear()
        self._series_count = 0
        self._oldest_seen_ns = None
        self.telemetry.set(SERIES_GAUGE, 0, processor=self._component_id)
        return []

    @property
    def series_count(self) -> int:
        """Number of series whose state is held."""
        return self._series_count

    # -- per resource and metric -------------------------------------------------

    def _process_resource(
        self, rm: ResourceMetrics, now_ns: int, counts: _BatchCounts
    ) -> list[Metric] | None:
        """Process every metric and return the metrics left, or None when no point was dropped."""
        key = rm.key
        state = self._resources.get(key)
        if state is not None:
            state.seen_ns = now_ns
        kept: list[Metric] = []
        changed = False
        flags_get = self._flags.get
        for metric in rm.metrics:
            group = state.metrics.get(metric.name) if state is not None else None
            if group is None:
                if self._series_count >= self._max_series:
                    counts.series_limit += len(metric.values)
                    changed = True
                    continue
                if state is None:
                    state = self._resources[key] = _ResourceState(now_ns)
                group = state.metrics[metric.name] = _MetricState()

            # The states of this request's points: the last request's list
            # when its attribute dicts are the same, in the same order.
            # List equality compares the dicts by identity first, so this is
            # fast, and equal dicts that are not identical still match.
            if metric.attrs == group.layout_attrs:
                states = group.layout_states
            else:
                states = self._states(group, metric.attrs, now_ns)

            entry = flags_get(metric.name)
            if (
                entry is None
                or entry[0] is not metric.kind
                or entry[1] != metric.monotonic
                or entry[2] != metric.prom_type
            ):
                entry = self._flags_entry(metric)
            if entry[3] & COUNTER:
                keep = self._counter_points(metric, states, state.reboot_ns, now_ns, counts)
            else:
                keep = self._other_points(metric, states, now_ns, counts)
            if keep is not None:
                changed = True
                if not any(keep):
                    continue
                keep_points(metric, keep)
            kept.append(metric)
        if self._oldest_seen_ns is None and self._series_count:
            self._oldest_seen_ns = now_ns
        return kept if changed else None

    def _flags_entry(self, metric: Metric) -> tuple:
        """Decide a metric's flags and cache them as (kind, monotonic, prom_type, flags)."""
        entry = (metric.kind, metric.monotonic, metric.prom_type, self._decide_flags(metric))
        if len(self._flags) >= 100_000:
            self._flags.clear()
        self._flags[metric.name] = entry
        return entry

    def _decide_flags(self, metric: Metric) -> int:
        canonical = self._resolver.canonical(metric.name)
        name = canonical or _strip_prefix(metric.name, self._prefixes)
        flags = 0
        if metric.kind is MetricKind.SUM and metric.monotonic:
            flags |= COUNTER
        elif metric.prom_type == "counter" and metric.kind is not MetricKind.HISTOGRAM:
            flags |= COUNTER
        elif (
            metric.kind is MetricKind.GAUGE
            and self._gauge_counters is not None
            and self._gauge_counters.match(name)
        ):
            flags |= COUNTER
        return flags

    def _states(self, group: _MetricState, attrs: list[dict[str, str]], now_ns: int) -> list:
        """Look up each point's series state (None where max_series is reached) and cache the layout."""
        by_id_get = group.by_id.get
        states = []
        for a in attrs:
            s = by_id_get(id(a))
            if s is None or s[ATTRS] is not a:
                s = self._find_series(group, a, now_ns)
            states.append(s)
        if None in states:
            group.layout_attrs = group.layout_states = None
        else:
            group.layout_attrs = list(attrs)
            group.layout_states = states
        return states

    def _find_series(self, group: _MetricState, attrs: dict[str, str], now_ns: int) -> list | None:
        """Find or create a series' state by its sorted attributes, or return None over max_series."""
        key = tuple(sorted(attrs.items()))
        s = group.series.get(key)
        if s is None:
            if self._series_count >= self._max_series:
                return None
            s = [-1, None, 0.0, now_ns, attrs]
            group.series[key] = s
            self._series_count += 1
        else:
            s[ATTRS] = attrs
        by_id = group.by_id
        if len(by_id) > 2 * len(group.series) + 64:
            # Entries of attribute dicts that were replaced by equal ones.
            group.by_id = by_id = {id(state[ATTRS]): state for state in group.series.values()}
        by_id[id(attrs)] = s
        return s

    # -- the per-point loops -----------------------------------------------------
    #
    # These run for every point, so they use literal state indexes (see
    # LAST_TIME ... ATTRS) and `v - v` as the finiteness test: it is 0.0 for
    # a finite float and NaN (truthy) for NaN and ±Inf.

    def _counter_points(
        self,
        metric: Metric,
        states: list,
        reboot_ns: int | None,
        now_ns: int,
        counts: _BatchCounts,
    ) -> list[bool] | None:
        """Set deltas and intervals, and return a keep-mask when points were dropped."""
        jitter_ratio = self._jitter_ratio
        deltas: list = []
        intervals: list[float | None] = []
        dropped = 0
        for s, t, v in zip(states, metric.times, metric.values):
            if s is None or t <= s[0]:
                # Over max_series, a duplicate or out of order: marked, removed below.
                dropped += 1
                deltas.append(_DROPPED)
                intervals.append(None)
                if s is None:
                    counts.series_limit += 1
                elif t == s[0]:
                    counts.duplicate += 1
                else:
                    counts.out_of_order += 1
                continue
            s[0] = t
            s[3] = now_ns
            if v is None or v - v:
                deltas.append(None)
                intervals.append(None)
                continue
            t0 = s[1]
            v0 = s[2]
            s[1] = t
            s[2] = v
            if t0 is None:
                deltas.append(None)
                intervals.append(None)
                continue
            if reboot_ns is not None and t0 < reboot_ns <= t:
                delta = v
                counts.reboot += 1
            elif v >= v0:
                delta = v - v0
            elif v0 - v < jitter_ratio * v0:
                delta = 0.0
                counts.jitter += 1
            else:
                delta = v
                counts.value_decrease += 1
            deltas.append(delta)
            intervals.append((t - t0) / 1e9)
        metric.deltas = deltas
        metric.intervals = intervals
        if not dropped:
            return None
        return [d is not _DROPPED for d in deltas]

    def _other_points(
        self, metric: Metric, states: list, now_ns: int, counts: _BatchCounts
    ) -> list[bool] | None:
        """Track timestamps of a non-counter, and return a keep-mask when points were dropped."""
        keep: list[bool] | None = None
        index = 0
        for s, t in zip(states, metric.times):
            if s is not None and t > s[0]:
                s[0] = t
                s[3] = now_ns
            else:
                if keep is None:
                    keep = [True] * len(states)
                keep[index] = False
                if s is None:
                    counts.series_limit += 1
                elif t == s[0]:
                    counts.duplicate += 1
                else:
                    counts.out_of_order += 1
            index += 1
        return keep

    # -- boot time, reboots ------------------------------------------------------

    def _read_boot_times(self, items: list[Item], now_ns: int) -> None:
        """Record boot-time samples before any counter, so a reboot in this batch applies."""
        for item in items:
            if not isinstance(item, ResourceMetrics):
                continue
            for metric in item.metrics:
                if metric.name in self._boot_names and metric.kind is MetricKind.GAUGE:
                    self._read_boot_time(item.key, metric, now_ns)

    def _read_boot_time(self, key: tuple, metric: Metric, now_ns: int) -> None:
        state = self._resources.get(key)
        if state is None:
            if self._series_count >= self._max_series:
                return
            state = self._resources[key] = _ResourceState(now_ns)
            if self._oldest_seen_ns is None:
                self._oldest_seen_ns = now_ns
        for t, v in zip(metric.times, metric.values):
            if v is None or not math.isfinite(v):
                continue
            if state.boot_time_ns is not None and t <= state.boot_time_ns:
                continue
            previous = state.boot_value_s
            if previous is not None and v - previous > self._boot_tolerance_s:
                state.reboot_ns = t
                self.telemetry.add(REBOOTS, 1, processor=self._component_id)
                event(
                    self.log,
                    "node_reboot_detected",
                    logging.INFO,
                    processor=self._component_id,
                    resource=format_resource_key(key),
                    previous_boot_time_s=previous,
                    boot_time_s=v,
                    scrape_time_ns=t,
                )
            state.boot_time_ns = t
            state.boot_value_s = v

    # -- limits, eviction, telemetry -------------------------------------------

    def _evict_stale(self, now_ns: int) -> None:
        cutoff = now_ns - self._max_staleness_ns
        evicted = 0
        oldest: int | None = None
        for key, state in list(self._resources.items()):
            for name, group in list(state.metrics.items()):
                stale = [k for k, s in group.series.items() if s[SEEN_NS] < cutoff]
                for k in stale:
                    del group.series[k]
                if stale:
                    evicted += len(stale)
                    group.by_id = {id(s[ATTRS]): s for s in group.series.values()}
                    group.layout_attrs = group.layout_states = None
                if not group.series:
                    del state.metrics[name]
                    continue
                for s in group.series.values():
                    if oldest is None or s[SEEN_NS] < oldest:
                        oldest = s[SEEN_NS]
            if not state.metrics and state.seen_ns < cutoff:
                del self._resources[key]
            elif not state.metrics:
                oldest = state.seen_ns if oldest is None else min(oldest, state.seen_ns)
        self._series_count -= evicted
        self._oldest_seen_ns = oldest
        if evicted:
            self.telemetry.add(EVICTED_SERIES, evicted, processor=self._component_id)
            event(
                self.log,
                "stale_series_evicted",
                logging.DEBUG,
                processor=self._component_id,
                series=evicted,
                tracked=self._series_count,
            )
        self.telemetry.set(SERIES_GAUGE, self._series_count, processor=self._component_id)

    def _report(self, counts: _BatchCounts) -> None:
        add, component = self.telemetry.add, self._component_id
        add(DROPPED_POINTS, counts.duplicate, processor=component, reason="duplicate")
        add(DROPPED_POINTS, counts.out_of_order, processor=component, reason="out_of_order")
        add(DROPPED_POINTS, counts.series_limit, processor=component, reason="series_limit")
        add(COUNTER_RESETS, counts.value_decrease, processor=component, reason="value_decrease")
        add(COUNTER_RESETS, counts.reboot, processor=component, reason="reboot")
        add(JITTER_POINTS, counts.jitter, processor=component)
        self.telemetry.set(SERIES_GAUGE, self._series_count, processor=component)
        if counts.series_limit:
            event(
                self.log,
                "series_limit_reached",
                logging.WARNING,
                every_s=60.0,
                key=component,
                processor=component,
                max_series=self._max_series,
                dropped_points=counts.series_limit,
            )


# Marks a dropped point in the deltas column until the column is filtered.
_DROPPED = object()


def _strip_prefix(name: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix):]
    return name
