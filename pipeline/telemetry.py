"""otelsnap's own telemetry: counters and gauges with attributes.

Every count is kept in memory (tests and the replay summary read it there)
and, once ``bind_meter`` is called, mirrored into OpenTelemetry SDK
instruments so the Prometheus endpoint exposes them. Call sites add counts
per batch, not per point, so the SDK's cost stays off the hot loop.

Names follow the Collector's style: ``otelsnap_<component>_<what>``, with
the unit in the name where it is not a plain count. ``INSTRUMENTS`` gives
each name its unit and description (the ``# HELP`` text). The
``*_START_SERIES`` tables list the drop, refusal and rejection series that
the service creates at 0 before any traffic, so alerts on them have a
series from the start.
"""

from __future__ import annotations

import threading
from typing import Any

# name → (unit, description). Units follow OpenTelemetry: "s", "By", or a
# count's annotation such as "{point}", which the Prometheus exporter drops.
INSTRUMENTS: dict[str, tuple[str, str]] = {
    # service
    "otelsnap_service_accepted_requests": ("{request}", "Requests queued for the pipelines."),
    "otelsnap_service_accepted_points": ("{point}", "Points of the requests queued for the pipelines."),
    "otelsnap_service_refused_requests": (
        "{request}",
        "Requests rejected with a retryable status because the queue or an exporter's queue was full, "
        "or otelsnap was shutting down.",
    ),
    "otelsnap_service_refused_points": ("{point}", "Points of the requests rejected with a retryable status."),
    "otelsnap_service_dropped_points": (
        "{point}",
        "Points of accepted batches dropped because a component raised an error.",
    ),
    "otelsnap_service_component_errors": ("{error}", "Exceptions caught from components, by stage."),
    "otelsnap_service_queue_size": ("{request}", "Requests waiting for the worker thread."),
    "otelsnap_service_queue_capacity": ("{request}", "Requests the worker thread's queue can hold."),
    # receiver
    "otelsnap_receiver_requests": ("{request}", "Export requests received, by outcome."),
    "otelsnap_receiver_accepted_points": ("{point}", "Points handed to the pipelines."),
    "otelsnap_receiver_refused_points": (
        "{point}",
        "Points of requests refused with a retryable status; the sender retries them.",
    ),
    "otelsnap_receiver_rejected_points": (
        "{point}",
        "Points left out of accepted requests and reported back as partial success.",
    ),
    "otelsnap_receiver_raw_sink_errors": ("{error}", "Requests that could not be recorded."),
    # processors
    "otelsnap_processor_dropped_points": ("{point}", "Points a processor dropped, by reason."),
    "otelsnap_delta_rate_counter_resets": ("{point}", "Counter points treated as a restarted counter."),
    "otelsnap_delta_rate_jitter_points": (
        "{point}",
        "Counter decreases below jitter_max_ratio treated as jitter (delta 0).",
    ),
    "otelsnap_delta_rate_reboots_detected": (
        "{reboot}",
        "Forward moves of a resource's boot time beyond boot_time_tolerance_s.",
    ),
    "otelsnap_delta_rate_series": ("{series}", "Series delta_rate tracks."),
    "otelsnap_delta_rate_series_evicted": ("{series}", "Series forgotten after max_staleness_s without a point."),
    "otelsnap_node_snapshot_snapshots": ("{snapshot}", "Node snapshots built."),
    "otelsnap_node_snapshot_dropped_snapshots": ("{snapshot}", "Scrapes that gave no snapshot, by reason."),
    "otelsnap_node_snapshot_missing_fields": ("{snapshot}", "Snapshots in which a field had no source, by field."),
    "otelsnap_node_snapshot_stale_entities": (
        "{entity}",
        "Entities left out of snapshots because none of their points had a sample.",
    ),
    "otelsnap_node_snapshot_nodes": ("{node}", "Resources node_snapshot tracks."),
    "otelsnap_slo_snapshot_snapshots": ("{snapshot}", "SLO snapshots built."),
    "otelsnap_slo_snapshot_counter_resets": (
        "{point}",
        "Request counter and latency histogram points treated as a restarted counter.",
    ),
    "otelsnap_slo_snapshot_series": ("{series}", "Series slo_snapshot tracks."),
    "otelsnap_slo_snapshot_series_evicted": ("{series}", "Series forgotten after max_staleness_s without a point."),
    # exporters
    "otelsnap_exporter_enqueued_snapshots": ("{snapshot}", "Snapshots stored in the exporter's queue."),
    "otelsnap_exporter_sent_snapshots": ("{snapshot}", "Snapshots the Master accepted."),
    "otelsnap_exporter_failed_snapshots": (
        "{snapshot}",
        "Snapshots the Master will never get because of their content or the Master's response.",
    ),
    "otelsnap_exporter_dropped_snapshots": ("{snapshot}", "Snapshots given up for lack of room, time or fit."),
    "otelsnap_exporter_queue_overflow_snapshots": (
        "{snapshot}",
        "Snapshots stored past the queue's bounds under when_full: block.",
    ),
    "otelsnap_exporter_send_retries": ("{attempt}", "Failed send attempts that will be retried, by reason."),
    "otelsnap_exporter_send_duration_seconds": ("s", "Total time of the requests to the Master."),
    "otelsnap_exporter_sends": ("{request}", "Requests sent to the Master, whatever their outcome."),
    "otelsnap_exporter_queue_size": ("{snapshot}", "Snapshots in the exporter's queue."),
    "otelsnap_exporter_queue_bytes": ("By", "Serialized bytes in the exporter's queue."),
    "otelsnap_exporter_written_lines": ("{line}", "JSON lines written."),
    "otelsnap_exporter_dropped_lines": ("{line}", "JSON lines not written, by reason."),
}

# Series that exist at 0 from the start. Each table maps a counter to the
# values of its ``reason`` (or ``outcome``) attribute known before any
# traffic. The service adds the component id and the other attributes.
SERVICE_START_SERIES: dict[str, tuple[str, ...]] = {
    # per receiver id
    "otelsnap_service_refused_requests": ("queue_full", "exporter_queue_full", "shutting_down"),
    "otelsnap_service_refused_points": ("queue_full", "exporter_queue_full", "shutting_down"),
}
# per pipeline and component of that pipeline
SERVICE_DROP_REASONS = {"processor": ("component_error",), "exporter": ("component_error", "exporter_queue_full")}
# per enabled transport of a receiver: ``outcome`` values, and ``reason``
# values of rejected points (the decoder's messages)
RECEIVER_OUTCOMES = {
    "grpc": ("accepted", "refused", "invalid", "unauthenticated", "internal_error"),
    "http": ("accepted", "refused", "invalid", "unauthenticated", "too_large", "internal_error"),
}
RECEIVER_REJECT_REASONS = (
    "exponential histograms are not supported",
    "delta temporality sums are not supported",
    "delta temporality histograms are not supported",
    "time_unix_nano is 0",
    "attributes are not valid protobuf",
)
# component type → counter → reasons; the attribute ``processor`` or
# ``exporter`` carries the component id.
PROCESSOR_START_SERIES: dict[str, dict[str, tuple[str, ...]]] = {
    "filter": {
        "otelsnap_processor_dropped_points": (
            "metric_not_included",
            "filesystem_device",
            "network_interface",
            "block_device",
        ),
    },
    "delta_rate": {"otelsnap_processor_dropped_points": ("duplicate", "out_of_order", "series_limit")},
    "node_snapshot": {
        "otelsnap_processor_dropped_points": ("late_scrape_part", "node_limit"),
        "otelsnap_node_snapshot_dropped_snapshots": ("name_conflict", "no_node_name", "all_stale"),
    },
    "slo_snapshot": {
        "otelsnap_processor_dropped_points": (
            "duplicate",
            "out_of_order",
            "series_limit",
            "probe_route",
            "admin_port",
            "system_namespace",
            "internal_service",
            "no_workload",
            "no_destination",
            "no_service",
            "unexpected_type",
        ),
    },
}
EXPORTER_START_SERIES: dict[str, dict[str, tuple[str, ...]]] = {
    "master": {
        "otelsnap_exporter_dropped_snapshots": (
            "queue_full",
            "retry_expired",
            "queue_write_error",
            "not_a_snapshot",
            "unsupported_kind",
            "shutdown",
        ),
        "otelsnap_exporter_failed_snapshots": ("too_large", "encode_error"),
    },
    "file": {"otelsnap_exporter_dropped_lines": ("write_error",)},
    "stdout": {"otelsnap_exporter_dropped_lines": ("write_error", "stdout_closed")},
}


def _attr_key(attrs: dict[str, Any]) -> tuple:
    return tuple(sorted(attrs.items()))


class Telemetry:
    """Thread-safe counters and gauges, keyed by name and attributes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple, float]] = {}
        self._gauges: dict[str, dict[tuple, float]] = {}
        self._meter = None
        self._instruments: dict[str, Any] = {}
        # Counter series created at 0 on the meter; not in the in-memory tables.
        self._declared: dict[str, list[dict[str, Any]]] = {}

    def add(self, name: str, value: float = 1, **attrs: Any) -> None:
        """Add ``value`` to counter ``name`` for the given attributes."""
        if not value:
            return
        key = _attr_key(attrs)
        with self._lock:
            series = self._counters.setdefault(name, {})
            series[key] = series.get(key, 0) + value
        if self._meter is not None:
            self._sdk_counter(name).add(value, attrs)

    def declare(self, name: str, **attrs: Any) -> None:
        """Make counter ``name`` with ``attrs`` exist at 0 on the meter, before any count.

        In-memory counts (``get``, ``snapshot``) are not changed.
        """
        with self._lock:
            self._declared.setdefault(name, []).append(attrs)
            meter = self._meter
        if meter is not None:
            self._sdk_counter(name).add(0, attrs)

    def set(self, name: str, value: float, **attrs: Any) -> None:
        """Set gauge ``name`` for the given attributes."""
        key = _attr_key(attrs)
        with self._lock:
            self._gauges.setdefault(name, {})[key] = value
            if self._meter is not None and name not in self._instruments:
                self._instruments[name] = self._sdk_gauge(name)

    def get(self, name: str, **attrs: Any) -> float:
        """Return a counter or gauge value; with no attributes, the sum over all."""
        with self._lock:
            table = self._counters.get(name) or self._gauges.get(name) or {}
            if attrs:
                return table.get(_attr_key(attrs), 0)
            return sum(table.values())

    def snapshot(self) -> dict[str, dict[tuple, float]]:
        """Copy every counter and gauge, for summaries and tests."""
        with self._lock:
            out = {name: dict(t) for name, t in self._counters.items()}
            out.update({name: dict(t) for name, t in self._gauges.items()})
            return out

    def bind_meter(self, meter: Any) -> None:
        """Mirror all counts into instruments of an OpenTelemetry meter."""
        with self._lock:
            self._meter = meter
            counters = {n: dict(t) for n, t in self._counters.items()}
            declared = {n: list(a) for n, a in self._declared.items()}
            gauges = list(self._gauges)
        for name, attr_sets in declared.items():
            counter = self._sdk_counter(name)
            for attrs in attr_sets:
                counter.add(0, attrs)
        for name, table in counters.items():
            counter = self._sdk_counter(name)
            for key, value in table.items():
                counter.add(value, dict(key))
        for name in gauges:
            with self._lock:
                if name not in self._instruments:
                    self._instruments[name] = self._sdk_gauge(name)

    def _sdk_counter(self, name: str) -> Any:
        inst = self._instruments.get(name)
        if inst is None:
            unit, description = INSTRUMENTS.get(name, ("", ""))
            inst = self._instruments[name] = self._meter.create_counter(
                name, unit=unit, description=description
            )
        return inst

    def _sdk_gauge(self, name: str) -> Any:
        unit, description = INSTRUMENTS.get(name, ("", ""))
        return self._meter.create_observable_gauge(
            name, callbacks=[self._gauge_callback(name)], unit=unit, description=description
        )

    def _gauge_callback(self, name: str):
        from opentelemetry.metrics import Observation

        def observe(_options):
            with self._lock:
                table = dict(self._gauges.get(name, {}))
            return [Observation(v, dict(k)) for k, v in table.items()]

        return observe
