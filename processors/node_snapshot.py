"""The ``node_snapshot`` processor: one NodeMetricsSnapshot per node and scrape.

It reads node_exporter metrics (plain, prefixed such as ``otel_``, or with
``_total`` / unit suffixes trimmed) and the hostmetrics receiver's
``system.*`` metrics, after ``delta_rate`` has set the deltas and intervals
of counters. Every rate is delta / interval of one series, so rates follow
the samples' own timestamps and are 0 on a series' first sample.

One scrape may arrive split over several Export calls, so the parts of a
scrape are buffered by resource and scrape time. The snapshot is built when
a newer scrape of that resource arrives, when no new part has arrived for
``scrape_wait_s`` (runtime clock, checked in ``flush``), or at shutdown.
Items that carry no node metrics are passed on unchanged.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from dataclasses import dataclass, field

from pipeline.component import ConfigError, Item, Processor, Snapshot
from pipeline.config import raise_errors
from pipeline.logs import event
from pipeline.model import Metric, ResourceMetrics
from processors.names import NameResolver
from processors.node_cpu import build_cpu
from processors.node_disks import build_disks
from processors.node_identity import NodeNames, fallback_name
from processors.node_networks import build_networks
from processors.node_sources import (
    BLOCK_DEVICE,
    CPU,
    CPU_FREQUENCY,
    CPU_INFO,
    FILESYSTEM,
    HWMON,
    NETWORK,
    SOFTNET,
    SOURCES,
    SWAP,
    Tables,
    gather,
    resolve_staleness,
)
from processors.node_system import (
    MEMORY_SOURCES,
    NTP_FIELDS,
    PSI_FIELDS,
    SYSTEM_FIELDS,
    TCP_FIELDS,
    VMSTAT_FIELDS,
    build_memory,
    build_ntp,
    build_psi,
    build_softnet,
    build_system,
    build_tcp,
    build_vmstat,
    format_timestamp,
    info_label,
    node_fields,
    section_present,
    uptime_s,
)
from processors.node_temperature import build_temperature

SNAPSHOTS = "otelsnap_node_snapshot_snapshots"
DROPPED_SNAPSHOTS = "otelsnap_node_snapshot_dropped_snapshots"
DROPPED_POINTS = "otelsnap_processor_dropped_points"
MISSING_FIELDS = "otelsnap_node_snapshot_missing_fields"
STALE_ENTITIES = "otelsnap_node_snapshot_stale_entities"
TRACKED_NODES = "otelsnap_node_snapshot_nodes"

REASON_LATE_PART = "late_scrape_part"
REASON_NODE_LIMIT = "node_limit"
REASON_NAME_CONFLICT = "name_conflict"
REASON_NO_NAME = "no_node_name"
REASON_ALL_STALE = "all_stale"

LOG_EVERY_S = 60.0


@dataclass
class NodeSnapshotConfig:
    """Options of the node_snapshot processor.

    ``name_prefixes`` are stripped from metric names before they are
    matched (a collector's prometheus exporter with ``namespace: otel``
    adds ``otel_``). ``scrape_wait_s`` is how long a scrape's parts are
    awaited after the last one arrived; 0 builds every snapshot at the end
    of the batch that brought its parts. Points of one resource whose
    timestamps lie within ``scrape_time_tolerance_s`` of each other belong
    to one scrape (hostmetrics stamps each scraper's points separately).
    A resource not seen for ``node_expiry_s`` is forgotten; at most
    ``max_nodes`` resources are tracked.
    """

    name_prefixes: list[str] = field(default_factory=lambda: ["otel_"])
    scrape_wait_s: float = 5.0
    scrape_time_tolerance_s: float = 1.0
    node_expiry_s: float = 300.0
    max_nodes: int = 10_000

    def validate(self) -> None:
        """Check every option and raise all errors found (ConfigErrors when there are several)."""
        errors: list[ConfigError] = []
        if not isinstance(self.name_prefixes, list) or not all(
            isinstance(p, str) for p in self.name_prefixes
        ):
            errors.append(
                ConfigError("name_prefixes", f"expected a list of strings, got {self.name_prefixes!r}")
            )
        invalid: set[str] = set()
        for name in ("scrape_wait_s", "scrape_time_tolerance_s", "node_expiry_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                errors.append(ConfigError(name, f"must be a number of seconds >= 0, got {value!r}"))
                invalid.add(name)
        # Compared only when both are valid numbers, so one wrong value is reported once.
        if not invalid & {"scrape_wait_s", "node_expiry_s"} and self.node_expiry_s <= self.scrape_wait_s:
            errors.append(
                ConfigError(
                    "node_expiry_s",
                    f"must be longer than scrape_wait_s ({self.scrape_wait_s}), got {self.node_expiry_s}",
                )
            )
        if not isinstance(self.max_nodes, int) or isinstance(self.max_nodes, bool) or self.max_nodes < 1:
            errors.append(ConfigError("max_nodes", f"must be an integer >= 1, got {self.max_nodes!r}"))
        raise_errors(errors)


@dataclass(slots=True)
class PendingScrape:
    """The parts of one scrape received so far."""

    time_ns: int
    parts: list[tuple[str, Metric]]
    last_part_ns: int  # runtime clock


@dataclass(slots=True)
class ResourceState:
    """State kept per resource (scrape target)."""

    key: tuple
    attrs: dict[str, str]
    last_seen_ns: int  # runtime clock
    uname_name: str = ""  # nodename of node_uname_info, once seen
    name: str = ""  # the node name this resource owns
    pending: PendingScrape | None = None
    last_scrape_ns: int | None = None  # scrape time of the last snapshot built
    last_good: Tables = field(default_factory=dict)


@dataclass
class _BatchCounts:
    snapshots: int = 0
    dropped_snapshots: Counter = field(default_factory=Counter)
    dropped_points: Counter = field(default_factory=Counter)
    missing: Counter = field(default_factory=Counter)
    stale_entities: int = 0


class NodeSnapshotProcessor(Processor):
    type_name = "node_snapshot"
    Config = NodeSnapshotConfig

    def __init__(self, config: NodeSnapshotConfig, context) -> None:
        super().__init__(config, context)
        self.resolver = NameResolver(families=SOURCES, prefixes=config.name_prefixes)
        self.resources: dict[tuple, ResourceState] = {}
        self.names = NodeNames()
        self.wait_ns = int(config.scrape_wait_s * 1e9)
        self.tolerance_ns = int(config.scrape_time_tolerance_s * 1e9)
        self.expiry_ns = int(config.node_expiry_s * 1e9)
        self._component = context.component_id

    def process(self, items: list[Item], now_ns: int) -> list[Item]:
        out: list[Item] = []
        counts = _BatchCounts()
        for item in items:
            if not isinstance(item, ResourceMetrics):
                out.append(item)
                continue
            known, unknown = self._split(item)
            if unknown is not None:
                out.append(unknown)
            if known:
                self._add_resource(item, known, now_ns, out, counts)
        if self.wait_ns == 0:
            for state in self.resources.values():
                if state.pending is not None:
                    self._emit(state, out, counts)
        self._report(counts)
        return out

    def flush(self, now_ns: int) -> list[Item]:
        out: list[Item] = []
        counts = _BatchCounts()
        expired = []
        for key, state in self.resources.items():
            pending = state.pending
            if pending is not None and now_ns - pending.last_part_ns >= self.wait_ns:
                self._emit(state, out, counts)
            if state.pending is None and now_ns - state.last_seen_ns >= self.expiry_ns:
                expired.append(key)
        for key in expired:
            self._forget(key)
        self._report(counts)
        return out

    def shutdown(self) -> list[Item]:
        out: list[Item] = []
        counts = _BatchCounts()
        for state in self.resources.values():
            if state.pending is not None:
                self._emit(state, out, counts)
        self._report(counts)
        return out

    # Receiving parts of scrapes.

    def _split(self, rm: ResourceMetrics) -> tuple[list[tuple[str, Metric]], ResourceMetrics | None]:
        """Separate the metrics this processor reads from the others (passed on)."""
        known: list[tuple[str, Metric]] = []
        unknown: list[Metric] = []
        canonical_of = self.resolver.canonical
        for metric in rm.metrics:
            canonical = canonical_of(metric.name)
            if canonical is None:
                unknown.append(metric)
            elif metric.values:
                known.append((canonical, metric))
        if not unknown:
            return known, None
        if not known:
            return known, rm
        rest = ResourceMetrics(
            attrs=rm.attrs,
            metrics=unknown,
            scope_name=rm.scope_name,
            scope_version=rm.scope_version,
        )
        return known, rest

    def _add_resource(
        self,
        rm: ResourceMetrics,
        known: list[tuple[str, Metric]],
        now_ns: int,
        out: list[Item],
        counts: _BatchCounts,
    ) -> None:
        key = rm.key
        state = self.resources.get(key)
        if state is None:
            if len(self.resources) >= self.config.max_nodes:
                counts.dropped_points[REASON_NODE_LIMIT] += sum(len(m) for _, m in known)
                event(
                    self.log,
                    "node_limit_reached",
                    logging.WARNING,
                    every_s=LOG_EVERY_S,
                    processor=self._component,
                    max_nodes=self.config.max_nodes,
                    resource=_describe(rm.attrs),
                )
                return
            state = self.resources[key] = ResourceState(key=key, attrs=rm.attrs, last_seen_ns=now_ns)
        state.attrs = rm.attrs
        state.last_seen_ns = now_ns
        for time_ns, parts in self._scrapes_of(known):
            self._add_part(state, time_ns, parts, now_ns, out, counts)

    def _scrapes_of(self, known: list[tuple[str, Metric]]) -> list[tuple[int, list[tuple[str, Metric]]]]:
        """Group metrics by scrape time: timestamps within the tolerance are one scrape."""
        by_time: dict[int, list[tuple[str, Metric]]] = {}
        for part in known:
            times = part[1].times
            first = times[0]
            if times.count(first) == len(times):
                same_time = by_time.get(first)
                if same_time is None:
                    same_time = by_time[first] = []
                same_time.append(part)
                continue
            # Rare: one metric contains points of several timestamps.
            canonical, metric = part
            for time_ns in sorted(set(times)):
                part = copy.copy(metric)
                part.keep([t == time_ns for t in times])
                by_time.setdefault(time_ns, []).append((canonical, part))
        scrapes: list[tuple[int, list[tuple[str, Metric]]]] = []
        for time_ns in sorted(by_time):
            if scrapes and time_ns - scrapes[-1][0] <= self.tolerance_ns:
                scrapes[-1][1].extend(by_time[time_ns])
            else:
                scrapes.append((time_ns, by_time[time_ns]))
        return scrapes

    def _add_part(
        self,
        state: ResourceState,
        time_ns: int,
        parts: list[tuple[str, Metric]],
        now_ns: int,
        out: list[Item],
        counts: _BatchCounts,
    ) -> None:
        pending = state.pending
        if pending is not None:
            if abs(time_ns - pending.time_ns) <= self.tolerance_ns:
                pending.parts.extend(parts)
                pending.time_ns = min(pending.time_ns, time_ns)
                pending.last_part_ns = now_ns
                return
            if time_ns > pending.time_ns:
                self._emit(state, out, counts)
        if state.last_scrape_ns is not None and time_ns <= state.last_scrape_ns + self.tolerance_ns:
            # A part of a scrape whose snapshot was already built.
            counts.dropped_points[REASON_LATE_PART] += sum(len(m) for _, m in parts)
            event(
                self.log,
                "late_scrape_part_dropped",
                logging.INFO,
                every_s=LOG_EVERY_S,
                key=state.key,
                processor=self._component,
                node=state.name,
                scrape_time=format_timestamp(time_ns),
                last_scrape_time=format_timestamp(state.last_scrape_ns),
            )
            return
        state.pending = PendingScrape(time_ns=time_ns, parts=list(parts), last_part_ns=now_ns)

    # Building snapshots.

    def _emit(self, state: ResourceState, out: list[Item], counts: _BatchCounts) -> None:
        pending = state.pending
        state.pending = None
        if pending is None:
            return
        state.last_scrape_ns = pending.time_ns
        tables, stale_entities = resolve_staleness(gather(pending.parts), state.last_good)
        state.last_good = tables
        counts.stale_entities += stale_entities
        if not any(tables.values()):
            counts.dropped_snapshots[REASON_ALL_STALE] += 1
            return
        name = self._node_name(state, tables, counts)
        if not name:
            return
        body, missing = build_body(name, pending.time_ns, tables, state.attrs)
        counts.missing.update(missing)
        counts.snapshots += 1
        out.append(Snapshot(kind="node", key=name, time_ns=pending.time_ns, body=body))

    def _node_name(self, state: ResourceState, tables: Tables, counts: _BatchCounts) -> str:
        nodename = info_label(node_fields(tables), "uname", "nodename")
        if nodename:
            state.uname_name = nodename
        name = state.uname_name or fallback_name(state.attrs)
        if not name:
            counts.dropped_snapshots[REASON_NO_NAME] += 1
            event(
                self.log,
                "node_name_missing",
                logging.WARNING,
                every_s=LOG_EVERY_S,
                key=state.key,
                processor=self._component,
                resource=_describe(state.attrs),
            )
            return ""
        if state.name and state.name != name:
            self.names.release(state.name, state.key)
            state.name = ""
        if not self.names.claim(name, state.key):
            counts.dropped_snapshots[REASON_NAME_CONFLICT] += 1
            owner = self.resources.get(self.names.owner(name))
            event(
                self.log,
                "node_name_conflict",
                logging.WARNING,
                every_s=LOG_EVERY_S,
                key=(name, state.key),
                processor=self._component,
                node=name,
                resource=_describe(state.attrs),
                owner=_describe(owner.attrs) if owner is not None else "",
            )
            return ""
        state.name = name
        return name

    def _forget(self, key: tuple) -> None:
        state = self.resources.pop(key)
        if state.name:
            self.names.release(state.name, key)
        event(
            self.log,
            "node_forgotten",
            logging.DEBUG,
            processor=self._component,
            node=state.name,
            resource=_describe(state.attrs),
        )

    def _report(self, counts: _BatchCounts) -> None:
        telemetry = self.telemetry
        component = self._component
        telemetry.add(SNAPSHOTS, counts.snapshots, processor=component)
        telemetry.add(STALE_ENTITIES, counts.stale_entities, processor=component)
        for reason, n in counts.dropped_snapshots.items():
            telemetry.add(DROPPED_SNAPSHOTS, n, processor=component, reason=reason)
        for reason, n in counts.dropped_points.items():
            telemetry.add(DROPPED_POINTS, n, processor=component, reason=reason)
        for name, n in counts.missing.items():
            telemetry.add(MISSING_FIELDS, n, processor=component, field=name)
        telemetry.set(TRACKED_NODES, len(self.resources), processor=component)


def build_body(
    node_name: str, time_ns: int, tables: Tables, resource_attrs: dict[str, str]
) -> tuple[dict, list[str]]:
    """Build the snapshot body of one node and scrape; also list the missing fields.

    A missing field is named ``section.field``; a section without any
    source series is named by itself and listed in ``unavailable``.
    """
    missing: list[str] = []
    node = node_fields(tables)
    hostname = info_label(node, "uname", "nodename") or resource_attrs.get("host.name", "")
    kernel = info_label(node, "uname", "release")
    os_name = info_label(node, "os", "pretty_name") or resource_attrs.get("os.description", "")
    for name, value in (("hostname", hostname), ("kernel", kernel), ("os", os_name)):
        if not value:
            missing.append(name)

    body = {
        "node_name": node_name,
        "timestamp": format_timestamp(time_ns),
        "hostname": hostname,
        "os": os_name,
        "kernel": kernel,
        "uptime": uptime_s(node, time_ns, missing),
        "cpu": build_cpu(tables, missing),
        "memory": build_memory(tables, missing),
        "disks": build_disks(tables, missing),
        "networks": build_networks(tables, missing),
        "temperature": build_temperature(tables, missing),
        "processes": None,
        "psi": build_psi(node, missing),
        "tcp": build_tcp(node, missing),
        "system": build_system(node, missing),
        "vmstat": build_vmstat(node, missing),
        "ntp": build_ntp(node, missing),
        "softnet": build_softnet(tables),
    }
    unavailable = unavailable_sections(tables)
    body["unavailable"] = unavailable
    if unavailable:
        absent = set(unavailable)
        missing = [m for m in missing if m.partition(".")[0] not in absent]
        missing.extend(unavailable)
    return body, missing


def unavailable_sections(tables: Tables) -> list[str]:
    """Return the sorted names of sections that have no source series at all."""
    node = node_fields(tables)
    present = {
        "cpu": bool(tables.get(CPU) or tables.get(CPU_FREQUENCY) or tables.get(CPU_INFO))
        or any(name in node for name in ("load1", "load5", "load15")),
        "memory": any(name in node for name in MEMORY_SOURCES) or bool(tables.get(SWAP)),
        "disks": bool(tables.get(FILESYSTEM) or tables.get(BLOCK_DEVICE)),
        "networks": bool(tables.get(NETWORK)),
        "temperature": any("current" in fields for fields in tables.get(HWMON, {}).values()),
        "psi": section_present(node, PSI_FIELDS),
        "tcp": section_present(node, TCP_FIELDS),
        "system": section_present(node, SYSTEM_FIELDS),
        "vmstat": section_present(node, VMSTAT_FIELDS),
        "ntp": section_present(node, NTP_FIELDS),
        "softnet": bool(tables.get(SOFTNET)),
    }
    return sorted(name for name, found in present.items() if not found)


def _describe(attrs: dict[str, str]) -> str:
    """Name a resource in logs by its instance or host attributes."""
    for name in ("service.instance.id", "host.name", "k8s.node.name", "server.address"):
        value = attrs.get(name)
        if value:
            return value
    return ",".join(f"{k}={v}" for k, v in sorted(attrs.items()))
