"""The metric families the node snapshot reads, and the name variants a
collector may send for them.

A collector forwards node_exporter names unchanged by default
(``node_cpu_seconds_total``). Some setups add a prefix (a prometheus
exporter with ``namespace: otel`` gives ``otel_node_cpu_seconds_total``);
the prometheus receiver's ``trim_metric_suffixes`` option, and a feature
gate that was on by default around collector v0.76–v0.79, strip ``_total``
and unit suffixes (``node_cpu_seconds``, ``node_cpu``). ``NameResolver``
maps all of these to the canonical node_exporter name.
"""

from __future__ import annotations

from collections.abc import Iterable

# Canonical node_exporter (0.16+) names read by the node snapshot.
NODE_FAMILIES: frozenset[str] = frozenset(
    {
        # identity, uptime
        "node_uname_info",
        "node_os_info",
        "node_boot_time_seconds",
        # cpu
        "node_cpu_seconds_total",
        "node_cpu_scaling_frequency_hertz",
        "node_cpu_info",
        "node_load1",
        "node_load5",
        "node_load15",
        # memory
        "node_memory_MemTotal_bytes",
        "node_memory_MemAvailable_bytes",
        "node_memory_MemFree_bytes",
        "node_memory_Cached_bytes",
        "node_memory_Buffers_bytes",
        "node_memory_SwapTotal_bytes",
        "node_memory_SwapFree_bytes",
        # filesystems and block devices
        "node_filesystem_size_bytes",
        "node_filesystem_avail_bytes",
        "node_filesystem_free_bytes",
        "node_disk_read_bytes_total",
        "node_disk_written_bytes_total",
        "node_disk_reads_completed_total",
        "node_disk_writes_completed_total",
        "node_disk_io_time_seconds_total",
        # network
        "node_network_receive_bytes_total",
        "node_network_transmit_bytes_total",
        "node_network_receive_packets_total",
        "node_network_transmit_packets_total",
        "node_network_receive_errs_total",
        "node_network_transmit_errs_total",
        "node_network_receive_drop_total",
        "node_network_transmit_drop_total",
        "node_network_up",
        "node_network_speed_bytes",
        "node_network_mtu_bytes",
        "node_network_info",
        # temperature
        "node_hwmon_temp_celsius",
        "node_hwmon_temp_max_celsius",
        "node_hwmon_temp_crit_celsius",
        "node_hwmon_chip_names",
        "node_hwmon_sensor_label",
        # pressure stall information
        "node_pressure_cpu_waiting_seconds_total",
        "node_pressure_memory_waiting_seconds_total",
        "node_pressure_memory_stalled_seconds_total",
        "node_pressure_io_waiting_seconds_total",
        "node_pressure_io_stalled_seconds_total",
        # tcp
        "node_netstat_Tcp_CurrEstab",
        "node_sockstat_TCP_tw",
        "node_sockstat_TCP_orphan",
        "node_sockstat_TCP_alloc",
        "node_sockstat_TCP_inuse",
        "node_sockstat_sockets_used",
        # system
        "node_nf_conntrack_entries",
        "node_nf_conntrack_entries_limit",
        "node_filefd_allocated",
        "node_filefd_maximum",
        "node_entropy_available_bits",
        # vmstat (untyped in node_exporter, so they arrive as Gauges)
        "node_vmstat_pgfault",
        "node_vmstat_pgmajfault",
        "node_vmstat_pswpin",
        "node_vmstat_pswpout",
        # ntp
        "node_timex_offset_seconds",
        "node_timex_sync_status",
        # softnet
        "node_softnet_dropped_total",
        "node_softnet_times_squeezed_total",
    }
)

# The hostmetrics receiver's names (OpenTelemetry semantic conventions) that
# can fill the same snapshot fields, for nodes monitored without node_exporter.
HOSTMETRICS_FAMILIES: frozenset[str] = frozenset(
    {
        "system.cpu.time",
        "system.cpu.load_average.1m",
        "system.cpu.load_average.5m",
        "system.cpu.load_average.15m",
        "system.cpu.frequency",
        "system.memory.usage",
        "system.memory.limit",
        "system.paging.usage",
        "system.filesystem.usage",
        "system.disk.io",
        "system.disk.operations",
        "system.disk.io_time",
        "system.network.io",
        "system.network.packets",
        "system.network.errors",
        "system.network.dropped",
        "system.uptime",
        "system.processes.count",
        "system.linux.memory.available",
        "system.network.conntrack.count",
        "system.network.conntrack.max",
        # Newer semantic-conventions names for the same values.
        "cpu.time",
        "cpu.frequency",
        "system.memory.linux.available",
        "system.network.packet.count",
        "system.network.packet.dropped",
    }
)

# Unit suffixes a collector's name normalisation may strip (after _total).
UNIT_SUFFIXES = ("_seconds", "_bytes", "_celsius", "_hertz", "_bits")


def name_variants(canonical: str) -> list[str]:
    """List the names a collector may send for ``canonical``, itself first."""
    variants = [canonical]
    base = canonical[: -len("_total")] if canonical.endswith("_total") else canonical
    if base != canonical:
        variants.append(base)
    for suffix in UNIT_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            variants.append(base[: -len(suffix)])
            break
    return variants


class NameResolver:
    """Map received metric names to canonical family names.

    ``prefixes`` are stripped first (for example ``otel_``). Names that are
    not a variant of a known family resolve to None. Results are cached, so
    a lookup on the hot path is one dict access.
    """

    def __init__(
        self,
        families: Iterable[str] = NODE_FAMILIES,
        prefixes: Iterable[str] = ("otel_",),
        extra: dict[str, str] | None = None,
    ) -> None:
        self.prefixes = tuple(p for p in prefixes if p)
        self._table: dict[str, str] = {}
        for canonical in sorted(families):
            for variant in name_variants(canonical):
                other = self._table.get(variant)
                if other is not None and other != canonical:
                    raise ValueError(
                        f"metric name variant {variant!r} is ambiguous: {other} and {canonical}"
                    )
                self._table.setdefault(variant, canonical)
        if extra:
            self._table.update(extra)
        self._cache: dict[str, str | None] = {}

    def canonical(self, name: str) -> str | None:
        """Return the canonical name for ``name``, or None when it is not known."""
        try:
            return self._cache[name]
        except KeyError:
            pass
        found = self._table.get(name)
        if found is None:
            for prefix in self.prefixes:
                if name.startswith(prefix):
                    found = self._table.get(name[len(prefix):])
                    if found is not None:
                        break
        if len(self._cache) < 100_000:
            self._cache[name] = found
        return found
