"""The ``slo_snapshot`` processor: request and latency deltas per service, edge and ingress.

It reads Linkerd's ``response_total`` and ``response_latency_ms``,
Traefik's ``traefik_service_requests_total`` and
``traefik_service_request_duration_seconds``, and ingress-nginx's
``nginx_ingress_controller_requests`` and
``nginx_ingress_controller_request_duration_seconds``. Deltas are taken
per series, so per pod (see ``processors.slo_series``), then summed per
service, edge and ingress service key, so a restarted pod never turns a
total negative.

- Linkerd ``direction="inbound"`` points describe the service
  (``namespace``/``deployment``) that answered; ``direction="outbound"``
  points with ``dst_namespace`` and ``dst_deployment`` describe the edge
  from the calling deployment to the destination.
- Latency buckets are keyed by their upper bound in milliseconds and hold
  cumulative deltas, as a Prometheus ``le`` bucket does: the key "50"
  counts the requests that took at most 50 ms.

Deltas from every resource are summed until ``interval_s`` (runtime clock)
has passed since the first one, then ``flush`` emits one
``Snapshot(kind="slo")``; ``shutdown`` emits what is left. Metrics of
other families are passed on unchanged.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal

from pipeline.component import ConfigError, Item, Processor, Snapshot
from pipeline.config import raise_errors
from pipeline.logs import event
from pipeline.model import Metric, MetricKind, ResourceMetrics
from processors.names import NameResolver
from processors.slo_series import SeriesTable

LINKERD_RESPONSES = "response_total"
LINKERD_LATENCY = "response_latency_ms"
TRAEFIK_REQUESTS = "traefik_service_requests_total"
TRAEFIK_LATENCY = "traefik_service_request_duration_seconds"
NGINX_REQUESTS = "nginx_ingress_controller_requests"
NGINX_LATENCY = "nginx_ingress_controller_request_duration_seconds"
SLO_FAMILIES = frozenset(
    {LINKERD_RESPONSES, LINKERD_LATENCY, TRAEFIK_REQUESTS, TRAEFIK_LATENCY, NGINX_REQUESTS, NGINX_LATENCY}
)
# Families whose histogram bounds and sums are in seconds.
SECONDS_FAMILIES = frozenset({TRAEFIK_LATENCY, NGINX_LATENCY})
HISTOGRAM_FAMILIES = frozenset({LINKERD_LATENCY, TRAEFIK_LATENCY, NGINX_LATENCY})

DROPPED_POINTS = "otelsnap_processor_dropped_points"
SNAPSHOTS = "otelsnap_slo_snapshot_snapshots"
COUNTER_RESETS = "otelsnap_slo_snapshot_counter_resets"
SERIES_GAUGE = "otelsnap_slo_snapshot_series"
EVICTED_SERIES = "otelsnap_slo_snapshot_series_evicted"

REASON_PROBE = "probe_route"
REASON_ADMIN_PORT = "admin_port"
REASON_SYSTEM_NAMESPACE = "system_namespace"
REASON_INTERNAL_SERVICE = "internal_service"
REASON_NO_WORKLOAD = "no_workload"
REASON_NO_DESTINATION = "no_destination"
REASON_NO_SERVICE = "no_service"
REASON_WRONG_TYPE = "unexpected_type"

PROBE_ROUTE = "probe"
ADMIN_PORT = "4191"
NS_PER_S = 1_000_000_000


@dataclass
class SloSnapshotConfig:
    """Options of the slo_snapshot processor."""

    # Prefixes removed before a name is compared with the SLO families.
    name_prefixes: list[str] = field(default_factory=lambda: ["otel_"])
    # Namespaces whose traffic is left out (Linkerd namespace and
    # dst_namespace, ingress-nginx namespace).
    system_namespaces: list[str] = field(
        default_factory=lambda: ["linkerd", "linkerd-viz", "kube-system", "otel"]
    )
    # Runtime-clock seconds between SLO snapshots; 0 emits one per batch.
    interval_s: float = 15.0
    # The snapshot key; "slo" when empty.
    cluster_id: str = ""
    # Series without a point for this long (runtime clock) are forgotten.
    max_staleness_s: float = 300.0
    # Series tracked at most; points of new series beyond it are dropped.
    max_series: int = 100_000

    def validate(self) -> None:
        """Check every option and raise all errors found (ConfigErrors when there are several)."""
        errors: list[ConfigError] = []
        for name in ("name_prefixes", "system_namespaces"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                errors.append(ConfigError(name, f"expected a list of strings, got {value!r}"))
        if not isinstance(self.interval_s, (int, float)) or isinstance(self.interval_s, bool) or self.interval_s < 0:
            errors.append(ConfigError("interval_s", f"must be a number of seconds >= 0, got {self.interval_s!r}"))
        if (
            not isinstance(self.max_staleness_s, (int, float))
            or isinstance(self.max_staleness_s, bool)
            or self.max_staleness_s <= 0
        ):
            errors.append(
                ConfigError("max_staleness_s", f"must be a positive number of seconds, got {self.max_staleness_s!r}")
            )
        if not isinstance(self.cluster_id, str):
            errors.append(ConfigError("cluster_id", f"expected a string, got {self.cluster_id!r}"))
        if not isinstance(self.max_series, int) or isinstance(self.max_series, bool) or self.max_series < 1:
            errors.append(ConfigError("max_series", f"must be an integer >= 1, got {self.max_series!r}"))
        raise_errors(errors)


@dataclass(slots=True)
class _Latency:
    """Latency deltas: cumulative bucket counts by bound key, sum in ms, count."""

    buckets: Counter = field(default_factory=Counter)
    sum_ms: float = 0.0
    count: float = 0.0

    def add(self, delta: tuple, scale: Decimal) -> None:
        count, total, bounds, bucket_counts = delta
        self.count += count
        self.sum_ms += total * float(scale)
        cumulative = 0
        for index, n in enumerate(bucket_counts):
            cumulative += n
            if cumulative:
                self.buckets[bound_key(bounds[index], scale) if index < len(bounds) else "+Inf"] += cumulative


@dataclass(slots=True)
class _Service:
    requests: Counter = field(default_factory=Counter)  # (status_code, classification) → delta
    latency: _Latency = field(default_factory=_Latency)
    tls: float = 0.0
    total: float = 0.0


@dataclass(slots=True)
class _Edge:
    requests: float = 0.0
    failures: float = 0.0
    latency: _Latency = field(default_factory=_Latency)


@dataclass(slots=True)
class _Ingress:
    requests: Counter = field(default_factory=Counter)  # (code, method) → delta
    latency: _Latency = field(default_factory=_Latency)


class _Window:
    """Deltas summed since the last snapshot."""

    def __init__(self) -> None:
        self.services: dict[tuple[str, str], _Service] = {}
        self.edges: dict[tuple[str, str, str, str], _Edge] = {}
        self.ingress: dict[str, _Ingress] = {}
        self.start_ns: int | None = None  # runtime clock of the first delta
        self.time_ns = 0  # latest scrape time of a delta


class SloSnapshotProcessor(Processor):
    """Build one SLO snapshot per interval from Linkerd and ingress controller metrics."""

    type_name = "slo_snapshot"
    Config = SloSnapshotConfig

    def __init__(self, config: SloSnapshotConfig, context) -> None:
        super().__init__(config, context)
        self._resolver = NameResolver(SLO_FAMILIES, config.name_prefixes)
        self._system = frozenset(config.system_namespaces)
        self._interval_ns = int(config.interval_s * NS_PER_S)
        self._max_staleness_ns = int(config.max_staleness_s * NS_PER_S)
        self._key = config.cluster_id or "slo"
        self._component_id = context.component_id
        self._table = SeriesTable(config.max_series)
        self._window = _Window()
        self._last_sweep_ns: int | None = None

    # -- the pipeline interface ------------------------------------------------

    def process(self, items: list[Item], now_ns: int) -> list[Item]:
        out: list[Item] = []
        drops: Counter = Counter()
        resets = self._table.resets
        for item in items:
            if not isinstance(item, ResourceMetrics):
                out.append(item)
                continue
            rest = [m for m in item.metrics if not self._consume(item, m, now_ns, drops)]
            if len(rest) == len(item.metrics):
                out.append(item)
            elif rest:
                item.metrics = rest
                out.append(item)
        for reason, n in drops.items():
            self.telemetry.add(DROPPED_POINTS, n, processor=self._component_id, reason=reason)
        self.telemetry.add(COUNTER_RESETS, self._table.resets - resets, processor=self._component_id)
        self.telemetry.set(SERIES_GAUGE, len(self._table.series), processor=self._component_id)
        if self._interval_ns == 0:
            out += self._emit()
        return out

    def flush(self, now_ns: int) -> list[Item]:
        if self._last_sweep_ns is None:
            self._last_sweep_ns = now_ns
        elif now_ns - self._last_sweep_ns >= self._max_staleness_ns:
            self._sweep(now_ns)
        start = self._window.start_ns
        if start is not None and now_ns - start >= self._interval_ns:
            return self._emit()
        return []

    def shutdown(self) -> list[Item]:
        out = self._emit()
        self._table = SeriesTable(self.config.max_series)
        self.telemetry.set(SERIES_GAUGE, 0, processor=self._component_id)
        return out

    @property
    def series_count(self) -> int:
        """Number of series whose state is held."""
        return len(self._table.series)

    # -- per metric ------------------------------------------------------------

    def _consume(self, rm: ResourceMetrics, metric: Metric, now_ns: int, drops: Counter) -> bool:
        """Add a metric's deltas to the window; return False when it is not an SLO family."""
        family = self._resolver.canonical(metric.name)
        if family is None:
            return False
        histogram = family in HISTOGRAM_FAMILIES
        if (metric.kind is MetricKind.HISTOGRAM) != histogram or (
            not histogram and metric.kind is not MetricKind.SUM
        ):
            drops[REASON_WRONG_TYPE] += len(metric.values)
            return True
        if family in (LINKERD_RESPONSES, LINKERD_LATENCY):
            route = self._linkerd_target
        elif family in (TRAEFIK_REQUESTS, TRAEFIK_LATENCY):
            route = _traefik_target
        else:
            route = self._nginx_target
        scale = Decimal(1000) if family in SECONDS_FAMILIES else Decimal(1)
        table = self._table
        window = self._window
        resource_key = rm.key
        columns = metric.extras if histogram else metric.values
        for attrs, t, value in zip(metric.attrs, metric.times, columns):
            target = route(attrs)
            if isinstance(target, str):
                drops[target] += 1
                continue
            pod = (resource_key, attrs.get("namespace", ""), attrs.get("pod", "")) if target[0] != "ingress" else (resource_key,)
            key = (resource_key, metric.name, tuple(sorted(attrs.items())))
            if histogram:
                delta = table.histogram_delta(key, pod, t, value, now_ns)
            else:
                delta = table.counter_delta(key, pod, t, value, now_ns)
            if delta is None:
                continue
            if isinstance(delta, str):
                drops[delta] += 1
                continue
            if histogram:
                if not delta[0]:
                    continue
                self._accumulator(target).latency.add(delta, scale)
            elif delta:
                self._add_requests(target, attrs, delta)
            else:
                continue
            if window.start_ns is None:
                window.start_ns = now_ns
            if t > window.time_ns:
                window.time_ns = t
        return True

    def _linkerd_target(self, attrs: dict[str, str]) -> tuple | str:
        """Return ("service", ns, name) or ("edge", src_ns, src_name, dst_ns, dst_name), or a drop reason."""
        if attrs.get("route_name") == PROBE_ROUTE:
            return REASON_PROBE
        if attrs.get("srv_port") == ADMIN_PORT:
            return REASON_ADMIN_PORT
        namespace = attrs.get("namespace", "")
        if namespace in self._system:
            return REASON_SYSTEM_NAMESPACE
        deployment = attrs.get("deployment", "")
        if not namespace or not deployment:
            # NOTE: workloads other than Deployments (statefulset, daemonset labels) are not read yet.
            return REASON_NO_WORKLOAD
        if attrs.get("direction") == "outbound":
            dst_namespace = attrs.get("dst_namespace", "")
            dst_deployment = attrs.get("dst_deployment", "")
            if not dst_namespace or not dst_deployment:
                return REASON_NO_DESTINATION
            if dst_namespace in self._system:
                return REASON_SYSTEM_NAMESPACE
            return ("edge", namespace, deployment, dst_namespace, dst_deployment)
        return ("service", namespace, deployment)

    def _nginx_target(self, attrs: dict[str, str]) -> tuple | str:
        namespace = attrs.get("namespace", "")
        service = attrs.get("service", "")
        if not namespace or not service:
            return REASON_NO_SERVICE
        if namespace in self._system:
            return REASON_SYSTEM_NAMESPACE
        # NOTE: ingress-nginx versions whose duration histogram has no service_port label
        # give a key without the port, so its latency lands under another key than its requests.
        port = attrs.get("service_port", "")
        return ("ingress", f"{namespace}-{service}-{port}" if port else f"{namespace}-{service}")

    def _accumulator(self, target: tuple) -> _Service | _Edge | _Ingress:
        window = self._window
        kind = target[0]
        if kind == "service":
            acc = window.services.get(target[1:])
            if acc is None:
                acc = window.services[target[1:]] = _Service()
        elif kind == "edge":
            acc = window.edges.get(target[1:])
            if acc is None:
                acc = window.edges[target[1:]] = _Edge()
        else:
            acc = window.ingress.get(target[1])
            if acc is None:
                acc = window.ingress[target[1]] = _Ingress()
        return acc

    def _add_requests(self, target: tuple, attrs: dict[str, str], delta: float) -> None:
        acc = self._accumulator(target)
        kind = target[0]
        if kind == "service":
            acc.requests[(attrs.get("status_code", ""), attrs.get("classification", ""))] += delta
            acc.total += delta
            if attrs.get("tls") == "true":
                acc.tls += delta
        elif kind == "edge":
            acc.requests += delta
            if attrs.get("classification") == "failure":
                acc.failures += delta
        else:
            code = attrs.get("code") or attrs.get("status", "")
            acc.requests[(code, attrs.get("method", ""))] += delta

    # -- the snapshot ------------------------------------------------------------

    def _emit(self) -> list[Item]:
        window = self._window
        if window.start_ns is None:
            return []
        self._window = _Window()
        body = build_body(window)
        self.telemetry.add(SNAPSHOTS, 1, processor=self._component_id)
        event(
            self.log,
            "slo_snapshot_built",
            logging.DEBUG,
            processor=self._component_id,
            scrape_time_ns=window.time_ns,
            services=len(body["services"]),
            edges=len(body["edges"]),
            ingress=len(body["ingress"]),
        )
        return [Snapshot(kind="slo", key=self._key, time_ns=window.time_ns, body=body)]

    def _sweep(self, now_ns: int) -> None:
        self._last_sweep_ns = now_ns
        evicted = self._table.evict(now_ns - self._max_staleness_ns)
        self.telemetry.add(EVICTED_SERIES, evicted, processor=self._component_id)
        self.telemetry.set(SERIES_GAUGE, len(self._table.series), processor=self._component_id)


def _traefik_target(attrs: dict[str, str]) -> tuple | str:
    service = attrs.get("service", "")
    if not service:
        return REASON_NO_SERVICE
    name, at, provider = service.rpartition("@")
    if not at:
        return ("ingress", service)
    if provider == "internal":
        return REASON_INTERNAL_SERVICE
    return ("ingress", name)


_BOUND_KEYS: dict[tuple[float, Decimal], str] = {}


def bound_key(bound: float, scale: Decimal) -> str:
    """Format a bucket bound times ``scale`` as the shortest decimal string ("5", "12.5", "+Inf").

    The product is taken in decimal, so 0.1 s gives "100", not "100.00000000000001".
    """
    key = _BOUND_KEYS.get((bound, scale))
    if key is None:
        if bound == float("inf"):
            key = "+Inf"
        else:
            key = format((Decimal(repr(bound)) * scale).normalize(), "f")
        if len(_BOUND_KEYS) < 10_000:
            _BOUND_KEYS[(bound, scale)] = key
    return key


def _count(value: float) -> int:
    return int(round(value))


def _latency_fields(latency: _Latency) -> dict:
    return {
        "latency_buckets": {k: _count(v) for k, v in sorted(latency.buckets.items(), key=_bucket_order) if _count(v)},
        "latency_sum": latency.sum_ms,
        "latency_count": _count(latency.count),
    }


def _bucket_order(item: tuple[str, float]) -> float:
    return float(item[0]) if item[0] != "+Inf" else float("inf")


def build_body(window: _Window) -> dict:
    """Build ``slo_data`` from a window's deltas; entries whose deltas are all 0 are left out."""
    services = []
    for (namespace, name), acc in sorted(window.services.items()):
        requests = [
            {"status_code": code, "classification": classification, "delta": _count(delta)}
            for (code, classification), delta in sorted(acc.requests.items())
            if _count(delta)
        ]
        if not requests and not _count(acc.latency.count):
            continue
        services.append(
            {
                "namespace": namespace,
                "name": name,
                "requests": requests,
                **_latency_fields(acc.latency),
                "tls_request_delta": _count(acc.tls),
                "total_request_delta": _count(acc.total),
            }
        )
    edges = []
    for (src_ns, src_name, dst_ns, dst_name), acc in sorted(window.edges.items()):
        if not _count(acc.requests) and not _count(acc.latency.count):
            continue
        edges.append(
            {
                "src_ns": src_ns,
                "src_name": src_name,
                "dst_ns": dst_ns,
                "dst_name": dst_name,
                "request_delta": _count(acc.requests),
                "failure_delta": _count(acc.failures),
                "latency_sum": acc.latency.sum_ms,
                "latency_count": _count(acc.latency.count),
            }
        )
    ingress = []
    for service_key, acc in sorted(window.ingress.items()):
        requests = [
            {"code": code, "method": method, "delta": _count(delta)}
            for (code, method), delta in sorted(acc.requests.items())
            if _count(delta)
        ]
        if not requests and not _count(acc.latency.count):
            continue
        ingress.append({"service_key": service_key, "requests": requests, **_latency_fields(acc.latency)})
    return {
        "timestamp": window.time_ns // NS_PER_S,
        "services": services,
        "edges": edges,
        "ingress": ingress,
    }
