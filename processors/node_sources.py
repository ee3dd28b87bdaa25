"""Sources of the node snapshot's fields, and the gathering of one scrape's
points into entities before the sections are built.

Every metric the node snapshot reads (node_exporter or hostmetrics) maps to
a *table* (what kind of entity it describes), a *key* (which entity: a CPU
id, an interface, a filesystem) and a *field* (which value of that entity).
Hostmetrics metrics map onto the same tables and fields as their
node_exporter equivalents, so one set of section builders serves both.

A gathered value is a ``Sample`` tuple: (value, delta, interval_s, attrs),
with delta and interval_s as set by the delta_rate processor (None on a
first sample and on metrics that are not counters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pipeline.model import Metric

Sample = tuple  # (value: float | None, delta: float | None, interval_s: float | None, attrs: dict)
VALUE, DELTA, INTERVAL, ATTRS = range(4)

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

# Tables: the kinds of entity a scrape describes.
NODE = "node"  # node-wide values, key None
CPU = "cpu"  # key CPU id, field mode
CPU_FREQUENCY = "cpu_frequency"  # key CPU id
CPU_INFO = "cpu_info"  # key CPU id
FILESYSTEM = "filesystem"  # key (device, mount point)
BLOCK_DEVICE = "block_device"  # key device name
NETWORK = "network"  # key interface name
HWMON = "hwmon"  # key (chip, sensor)
HWMON_CHIP = "hwmon_chip"  # key chip
SOFTNET = "softnet"  # key CPU id
SWAP = "swap"  # key swap device (hostmetrics only)

KeyFunction = Callable[[dict], object]
FieldSpec = str | Callable[[dict], str | None]


def _node_key(attrs: dict) -> None:
    return None


def _label(name: str) -> KeyFunction:
    def key(attrs: dict) -> str:
        return attrs.get(name, "")

    return key


def _labels(first: str, second: str) -> KeyFunction:
    def key(attrs: dict) -> tuple[str, str]:
        return (attrs.get(first, ""), attrs.get(second, ""))

    return key


def _hostmetrics_cpu_key(attrs: dict) -> str:
    # hostmetrics names CPUs "cpu0", "cpu1"; node_exporter "0", "1".
    cpu = attrs.get("cpu", "")
    return cpu[3:] if cpu.startswith("cpu") else cpu


def _by_attribute(name: str, fields: dict[str, str]) -> Callable[[dict], str | None]:
    def field(attrs: dict) -> str | None:
        return fields.get(attrs.get(name, ""))

    return field


def _mode(attrs: dict) -> str | None:
    return attrs.get("mode")


# hostmetrics CPU states (receiver attribute ``state``, semantic conventions
# ``cpu.mode``) → node_exporter modes.
HOSTMETRICS_CPU_STATES = {
    "idle": "idle",
    "wait": "iowait",
    "iowait": "iowait",
    "interrupt": "irq",
    "kernel": "system",  # a cpu.mode value that the conventions renamed to system
    "nice": "nice",
    "softirq": "softirq",
    "steal": "steal",
    "system": "system",
    "user": "user",
}

# Semantic-conventions attribute names → the hostmetrics receiver's names,
# which the key and field functions read.
SEMCONV_ATTRIBUTES = {
    "cpu.logical_number": "cpu",
    "cpu.mode": "state",
    "system.memory.state": "state",
    "system.paging.state": "state",
    "system.filesystem.state": "state",
    "system.filesystem.mountpoint": "mountpoint",
    "system.filesystem.type": "type",
    "system.filesystem.mode": "mode",
    "system.device": "device",
    "network.interface.name": "device",
    "disk.io.direction": "direction",
    "network.io.direction": "direction",
}


def receiver_attributes(attrs: dict) -> dict:
    """Return ``attrs`` with semantic-conventions names renamed to the receiver's.

    Returns ``attrs`` itself when it has none. A name the receiver uses that
    is already present is kept.
    """
    if SEMCONV_ATTRIBUTES.keys().isdisjoint(attrs):
        return attrs
    renamed = {SEMCONV_ATTRIBUTES[n]: v for n, v in attrs.items() if n in SEMCONV_ATTRIBUTES}
    renamed.update((n, v) for n, v in attrs.items() if n not in SEMCONV_ATTRIBUTES)
    return renamed


NODE_KEY = _node_key
DEVICE_KEY = _label("device")
CPU_KEY = _label("cpu")
HWMON_KEY = _labels("chip", "sensor")
FILESYSTEM_KEY = _labels("device", "mountpoint")

# Canonical metric name → (table, key function, field name or field function).
SOURCES: dict[str, tuple[str, KeyFunction, FieldSpec]] = {
    # identity, uptime
    "node_uname_info": (NODE, NODE_KEY, "uname"),
    "node_os_info": (NODE, NODE_KEY, "os"),
    "node_boot_time_seconds": (NODE, NODE_KEY, "boot_time"),
    # cpu
    "node_cpu_seconds_total": (CPU, CPU_KEY, _mode),
    "node_cpu_scaling_frequency_hertz": (CPU_FREQUENCY, CPU_KEY, "hertz"),
    "node_cpu_info": (CPU_INFO, CPU_KEY, "info"),
    "node_load1": (NODE, NODE_KEY, "load1"),
    "node_load5": (NODE, NODE_KEY, "load5"),
    "node_load15": (NODE, NODE_KEY, "load15"),
    # memory
    "node_memory_MemTotal_bytes": (NODE, NODE_KEY, "mem_total"),
    "node_memory_MemAvailable_bytes": (NODE, NODE_KEY, "mem_available"),
    "node_memory_MemFree_bytes": (NODE, NODE_KEY, "mem_free"),
    "node_memory_Cached_bytes": (NODE, NODE_KEY, "mem_cached"),
    "node_memory_Buffers_bytes": (NODE, NODE_KEY, "mem_buffers"),
    "node_memory_SwapTotal_bytes": (NODE, NODE_KEY, "swap_total"),
    "node_memory_SwapFree_bytes": (NODE, NODE_KEY, "swap_free"),
    # filesystems and block devices
    "node_filesystem_size_bytes": (FILESYSTEM, FILESYSTEM_KEY, "size"),
    "node_filesystem_avail_bytes": (FILESYSTEM, FILESYSTEM_KEY, "avail"),
    "node_filesystem_free_bytes": (FILESYSTEM, FILESYSTEM_KEY, "free"),
    "node_disk_read_bytes_total": (BLOCK_DEVICE, DEVICE_KEY, "read_bytes"),
    "node_disk_written_bytes_total": (BLOCK_DEVICE, DEVICE_KEY, "write_bytes"),
    "node_disk_reads_completed_total": (BLOCK_DEVICE, DEVICE_KEY, "reads"),
    "node_disk_writes_completed_total": (BLOCK_DEVICE, DEVICE_KEY, "writes"),
    "node_disk_io_time_seconds_total": (BLOCK_DEVICE, DEVICE_KEY, "io_time"),
    # network
    "node_network_receive_bytes_total": (NETWORK, DEVICE_KEY, "rx_bytes"),
    "node_network_transmit_bytes_total": (NETWORK, DEVICE_KEY, "tx_bytes"),
    "node_network_receive_packets_total": (NETWORK, DEVICE_KEY, "rx_packets"),
    "node_network_transmit_packets_total": (NETWORK, DEVICE_KEY, "tx_packets"),
    "node_network_receive_errs_total": (NETWORK, DEVICE_KEY, "rx_errors"),
    "node_network_transmit_errs_total": (NETWORK, DEVICE_KEY, "tx_errors"),
    "node_network_receive_drop_total": (NETWORK, DEVICE_KEY, "rx_dropped"),
    "node_network_transmit_drop_total": (NETWORK, DEVICE_KEY, "tx_dropped"),
    "node_network_up": (NETWORK, DEVICE_KEY, "up"),
    "node_network_speed_bytes": (NETWORK, DEVICE_KEY, "speed_bytes"),
    "node_network_mtu_bytes": (NETWORK, DEVICE_KEY, "mtu"),
    "node_network_info": (NETWORK, DEVICE_KEY, "info"),
    # temperature
    "node_hwmon_temp_celsius": (HWMON, HWMON_KEY, "current"),
    "node_hwmon_temp_max_celsius": (HWMON, HWMON_KEY, "max"),
    "node_hwmon_temp_crit_celsius": (HWMON, HWMON_KEY, "critical"),
    "node_hwmon_sensor_label": (HWMON, HWMON_KEY, "label"),
    "node_hwmon_chip_names": (HWMON_CHIP, _label("chip"), "names"),
    # pressure stall information
    "node_pressure_cpu_waiting_seconds_total": (NODE, NODE_KEY, "psi_cpu_some"),
    "node_pressure_memory_waiting_seconds_total": (NODE, NODE_KEY, "psi_memory_some"),
    "node_pressure_memory_stalled_seconds_total": (NODE, NODE_KEY, "psi_memory_full"),
    "node_pressure_io_waiting_seconds_total": (NODE, NODE_KEY, "psi_io_some"),
    "node_pressure_io_stalled_seconds_total": (NODE, NODE_KEY, "psi_io_full"),
    # tcp
    "node_netstat_Tcp_CurrEstab": (NODE, NODE_KEY, "tcp_curr_estab"),
    "node_sockstat_TCP_tw": (NODE, NODE_KEY, "tcp_time_wait"),
    "node_sockstat_TCP_orphan": (NODE, NODE_KEY, "tcp_orphan"),
    "node_sockstat_TCP_alloc": (NODE, NODE_KEY, "tcp_alloc"),
    "node_sockstat_TCP_inuse": (NODE, NODE_KEY, "tcp_in_use"),
    "node_sockstat_sockets_used": (NODE, NODE_KEY, "tcp_sockets_used"),
    # system
    "node_nf_conntrack_entries": (NODE, NODE_KEY, "conntrack_entries"),
    "node_nf_conntrack_entries_limit": (NODE, NODE_KEY, "conntrack_limit"),
    "node_filefd_allocated": (NODE, NODE_KEY, "filefd_allocated"),
    "node_filefd_maximum": (NODE, NODE_KEY, "filefd_maximum"),
    "node_entropy_available_bits": (NODE, NODE_KEY, "entropy_available"),
    # vmstat
    "node_vmstat_pgfault": (NODE, NODE_KEY, "pgfault"),
    "node_vmstat_pgmajfault": (NODE, NODE_KEY, "pgmajfault"),
    "node_vmstat_pswpin": (NODE, NODE_KEY, "pswpin"),
    "node_vmstat_pswpout": (NODE, NODE_KEY, "pswpout"),
    # ntp
    "node_timex_offset_seconds": (NODE, NODE_KEY, "ntp_offset"),
    "node_timex_sync_status": (NODE, NODE_KEY, "ntp_sync_status"),
    # softnet
    "node_softnet_dropped_total": (SOFTNET, CPU_KEY, "dropped"),
    "node_softnet_times_squeezed_total": (SOFTNET, CPU_KEY, "squeezed"),
    # hostmetrics receiver (OpenTelemetry semantic conventions)
    "system.cpu.time": (
        CPU,
        _hostmetrics_cpu_key,
        _by_attribute("state", HOSTMETRICS_CPU_STATES),
    ),
    "system.cpu.frequency": (CPU_FREQUENCY, _hostmetrics_cpu_key, "hertz"),
    "system.cpu.load_average.1m": (NODE, NODE_KEY, "load1"),
    "system.cpu.load_average.5m": (NODE, NODE_KEY, "load5"),
    "system.cpu.load_average.15m": (NODE, NODE_KEY, "load15"),
    "system.memory.limit": (NODE, NODE_KEY, "mem_total"),
    "system.linux.memory.available": (NODE, NODE_KEY, "mem_available"),
    "system.memory.usage": (
        NODE,
        NODE_KEY,
        _by_attribute(
            "state",
            {
                "used": "hm_mem_used",
                "free": "mem_free",
                "buffered": "mem_buffers",
                "buffers": "mem_buffers",  # the conventions' system.memory.state value
                "cached": "mem_cached",
            },
        ),
    ),
    "system.paging.usage": (
        SWAP,
        DEVICE_KEY,
        _by_attribute("state", {"used": "used", "free": "free"}),
    ),
    "system.filesystem.usage": (
        FILESYSTEM,
        FILESYSTEM_KEY,
        _by_attribute("state", {"used": "hm_used", "free": "hm_free", "reserved": "hm_reserved"}),
    ),
    "system.disk.io": (
        BLOCK_DEVICE,
        DEVICE_KEY,
        _by_attribute("direction", {"read": "read_bytes", "write": "write_bytes"}),
    ),
    "system.disk.operations": (
        BLOCK_DEVICE,
        DEVICE_KEY,
        _by_attribute("direction", {"read": "reads", "write": "writes"}),
    ),
    "system.disk.io_time": (BLOCK_DEVICE, DEVICE_KEY, "io_time"),
    "system.network.io": (
        NETWORK,
        DEVICE_KEY,
        _by_attribute("direction", {"receive": "rx_bytes", "transmit": "tx_bytes"}),
    ),
    "system.network.packets": (
        NETWORK,
        DEVICE_KEY,
        _by_attribute("direction", {"receive": "rx_packets", "transmit": "tx_packets"}),
    ),
    "system.network.errors": (
        NETWORK,
        DEVICE_KEY,
        _by_attribute("direction", {"receive": "rx_errors", "transmit": "tx_errors"}),
    ),
    "system.network.dropped": (
        NETWORK,
        DEVICE_KEY,
        _by_attribute("direction", {"receive": "rx_dropped", "transmit": "tx_dropped"}),
    ),
    "system.network.conntrack.count": (NODE, NODE_KEY, "conntrack_entries"),
    "system.network.conntrack.max": (NODE, NODE_KEY, "conntrack_limit"),
    "system.uptime": (NODE, NODE_KEY, "uptime_s"),
}

# Other names the semantic conventions gave the same hostmetrics metrics:
# cpu.* in v1.31 to v1.34 (renamed back in v1.35), the others in newer ones.
SEMCONV_ALIASES = {
    "cpu.time": "system.cpu.time",
    "cpu.frequency": "system.cpu.frequency",
    "system.memory.linux.available": "system.linux.memory.available",  # v1.39+
    "system.network.packet.count": "system.network.packets",
    "system.network.packet.dropped": "system.network.dropped",
}
SOURCES.update({alias: SOURCES[name] for alias, name in SEMCONV_ALIASES.items()})

# Metrics whose attributes may use the semantic conventions' names.
SEMCONV_SOURCES = frozenset(name for name in SOURCES if not name.startswith("node_"))

# Tables of one scrape: table → key → field → Sample.
Tables = dict[str, dict[object, dict[str, Sample]]]


def gather(parts: Iterable[tuple[str, Metric]], tables: Tables | None = None) -> Tables:
    """Sort the points of (canonical name, metric) parts into entity tables.

    A later point for the same table, key and field replaces an earlier one.
    Points that are not samples (stale, NaN, ±Inf) are kept here and
    resolved by ``resolve_staleness``.
    """
    if tables is None:
        tables = {}
    for canonical, metric in parts:
        table_name, key_of, field_of = SOURCES[canonical]
        table = tables.get(table_name)
        if table is None:
            table = tables[table_name] = {}
        values = metric.values
        deltas = metric.deltas
        intervals = metric.intervals
        constant_field = field_of if isinstance(field_of, str) else None
        rename = canonical in SEMCONV_SOURCES
        for i, attrs in enumerate(metric.attrs):
            if rename:
                attrs = receiver_attributes(attrs)
            field = constant_field or field_of(attrs)
            if field is None:
                continue
            key = key_of(attrs)
            entity = table.get(key)
            if entity is None:
                entity = table[key] = {}
            entity[field] = (
                values[i],
                deltas[i] if deltas is not None else None,
                intervals[i] if intervals is not None else None,
                attrs,
            )
    return tables


def resolve_staleness(tables: Tables, last_good: Tables) -> tuple[Tables, int]:
    """Apply the staleness rules; return the tables left and the entities dropped.

    An entity whose points are all non-samples is left out. In an entity
    with some good points, a non-sample point is replaced by the last good
    sample of that field (value, delta and interval, so its rate repeats
    too), or left out when there is none.
    """
    dropped = 0
    resolved: Tables = {}
    for table_name, table in tables.items():
        previous = last_good.get(table_name, {})
        entities: dict[object, dict[str, Sample]] = {}
        for key, fields in table.items():
            # `v - v` is 0.0 for a finite float and NaN (truthy) for NaN and ±Inf.
            stale = [f for f, s in fields.items() if s[VALUE] is None or s[VALUE] - s[VALUE]]
            if not stale:
                entities[key] = fields
                continue
            if len(stale) == len(fields):
                dropped += 1
                continue
            fields = dict(fields)
            previous_fields = previous.get(key, {})
            for field in stale:
                last = previous_fields.get(field)
                if last is None:
                    del fields[field]
                else:
                    fields[field] = last
            entities[key] = fields
        resolved[table_name] = entities
    return resolved, dropped


# Small conversions shared by the section builders.


def rate(sample: Sample | None) -> float:
    """Return the per-second rate of a counter sample, 0.0 without a delta."""
    if sample is None:
        return 0.0
    delta = sample[DELTA]
    interval = sample[INTERVAL]
    if delta is None or not interval or interval <= 0 or delta <= 0:
        return 0.0
    return delta / interval


def to_int(value: float | None) -> int:
    """Convert a sample value to a JSON integer that fits int64 (truncated)."""
    if value is None or value != value:
        return 0
    if value >= INT64_MAX:
        # 2**63 as a double is one past int64's maximum.
        return INT64_MAX
    if value <= INT64_MIN:
        return INT64_MIN
    return int(value)


def int_of(fields: dict[str, Sample], name: str) -> int:
    sample = fields.get(name)
    return to_int(sample[VALUE]) if sample is not None else 0


def float_of(fields: dict[str, Sample], name: str) -> float:
    sample = fields.get(name)
    return float(sample[VALUE]) if sample is not None else 0.0


def percent(part: float, whole: float) -> float:
    """Return part/whole·100 clamped to 0–100, or 0.0 when whole is not positive."""
    if whole <= 0:
        return 0.0
    return clamp_percent(part / whole * 100.0)


def clamp_percent(value: float) -> float:
    if value <= 0.0:
        return 0.0
    if value >= 100.0:
        return 100.0
    return value
