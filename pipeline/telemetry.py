"""otelsnap's own telemetry: counters and gauges with attributes.

Every count is kept in memory (tests and the replay summary read it there)
and, once ``bind_meter`` is called, mirrored into OpenTelemetry SDK
instruments so the Prometheus endpoint exposes them. Call sites add counts
per batch, not per point, so the SDK's cost stays off the hot loop.

Names follow the Collector's style: ``otelsnap_<component>_<what>``, with
the unit in the name where it is not a plain count.
"""

from __future__ import annotations

import threading
from typing import Any


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

    def set(self, name: str, value: float, **attrs: Any) -> None:
        """Set gauge ``name`` for the given attributes."""
        key = _attr_key(attrs)
        with self._lock:
            self._gauges.setdefault(name, {})[key] = value
            if self._meter is not None and name not in self._instruments:
                self._instruments[name] = self._meter.create_observable_gauge(
                    name, callbacks=[self._gauge_callback(name)]
                )

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
            gauges = list(self._gauges)
        for name, table in counters.items():
            counter = self._sdk_counter(name)
            for key, value in table.items():
                counter.add(value, dict(key))
        for name in gauges:
            with self._lock:
                if name not in self._instruments:
                    self._instruments[name] = self._meter.create_observable_gauge(
                        name, callbacks=[self._gauge_callback(name)]
                    )

    def _sdk_counter(self, name: str) -> Any:
        inst = self._instruments.get(name)
        if inst is None:
            inst = self._instruments[name] = self._meter.create_counter(name)
        return inst

    def _gauge_callback(self, name: str):
        from opentelemetry.metrics import Observation

        def observe(_options):
            with self._lock:
                table = dict(self._gauges.get(name, {}))
            return [Observation(v, dict(k)) for k, v in table.items()]

        return observe
