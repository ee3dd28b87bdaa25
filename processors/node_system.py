"""The node-wide sections of a node snapshot: identity fields, memory, psi,
tcp, system, vmstat, ntp and softnet.
"""

from __future__ import annotations

import math
import time

from processors.node_sources import (
    ATTRS,
    NODE,
    SOFTNET,
    SWAP,
    VALUE,
    Tables,
    clamp_percent,
    float_of,
    int_of,
    percent,
    rate,
    to_int,
)

# Output field → source field in the NODE table, per section.
PSI_FIELDS = (
    ("cpu_some_percent", "psi_cpu_some"),
    ("memory_some_percent", "psi_memory_some"),
    ("memory_full_percent", "psi_memory_full"),
    ("io_some_percent", "psi_io_some"),
    ("io_full_percent", "psi_io_full"),
)
TCP_FIELDS = (
    ("curr_estab", "tcp_curr_estab"),
    ("time_wait", "tcp_time_wait"),
    ("orphan", "tcp_orphan"),
    ("alloc", "tcp_alloc"),
    ("in_use", "tcp_in_use"),
    ("sockets_used", "tcp_sockets_used"),
)
SYSTEM_FIELDS = (
    ("conntrack_entries", "conntrack_entries"),
    ("conntrack_limit", "conntrack_limit"),
    ("filefd_allocated", "filefd_allocated"),
    ("filefd_maximum", "filefd_maximum"),
    ("entropy_available", "entropy_available"),
)
VMSTAT_FIELDS = (
    ("pgfault_ps", "pgfault"),
    ("pgmajfault_ps", "pgmajfault"),
    ("pswpin_ps", "pswpin"),
    ("pswpout_ps", "pswpout"),
)
NTP_FIELDS = (("offset_seconds", "ntp_offset"), ("synced", "ntp_sync_status"))
MEMORY_SOURCES = (
    "mem_total",
    "mem_available",
    "mem_free",
    "mem_cached",
    "mem_buffers",
    "swap_total",
    "swap_free",
    "hm_mem_used",
)


def format_timestamp(time_ns: int) -> str:
    """Format Unix ns as RFC 3339 UTC with milliseconds (truncated) and ``Z``."""
    seconds, rest_ns = divmod(time_ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{rest_ns // 1_000_000:03d}Z"


def node_fields(tables: Tables) -> dict:
    return tables.get(NODE, {}).get(None, {})


def info_label(node: dict, field: str, label: str) -> str:
    sample = node.get(field)
    return sample[ATTRS].get(label, "") if sample is not None else ""


def uptime_s(node: dict, time_ns: int, missing: list[str]) -> int:
    """Return whole seconds since boot at the scrape time (truncated, never negative)."""
    boot = node.get("boot_time")
    if boot is not None:
        # Integer nanoseconds: a float of Unix seconds cannot hold the
        # scrape time's nanoseconds, and rounding would add a second.
        boot_s = boot[VALUE]
        whole_s = math.floor(boot_s)
        boot_ns = whole_s * 1_000_000_000 + round((boot_s - whole_s) * 1e9)
        seconds = (time_ns - boot_ns) // 1_000_000_000
        return seconds if seconds > 0 else 0
    uptime = node.get("uptime_s")
    if uptime is not None:
        return max(to_int(uptime[VALUE]), 0)
    missing.append("uptime")
    return 0


def build_memory(tables: Tables, missing: list[str]) -> dict:
    node = node_fields(tables)
    total = int_of(node, "mem_total")
    if "mem_total" not in node and "hm_mem_used" in node:
        # hostmetrics without system.memory.limit: on Linux its used, free,
        # buffered and cached states add up to MemTotal.
        total = sum(int_of(node, f) for f in ("hm_mem_used", "mem_free", "mem_buffers", "mem_cached"))
    available = int_of(node, "mem_available")
    if "mem_available" in node:
        used = total - available
    elif "hm_mem_used" in node:
        used = int_of(node, "hm_mem_used")
    else:
        used = 0
    used = max(used, 0)

    swap_total, swap_free = _swap(tables, node)
    swap_used = max(swap_total - swap_free, 0)

    for name in ("mem_available", "mem_free", "mem_cached", "mem_buffers"):
        if name not in node:
            missing.append("memory." + name[4:])
    if "mem_total" not in node and "hm_mem_used" not in node:
        missing.append("memory.total")
    if "swap_total" not in node and not tables.get(SWAP):
        missing.append("memory.swap_total")

    return {
        "total": total,
        "used": used,
        "available": available,
        "free": int_of(node, "mem_free"),
        "usage_percent": percent(used, total),
        "cached": int_of(node, "mem_cached"),
        "buffers": int_of(node, "mem_buffers"),
        "swap_total": swap_total,
        "swap_used": swap_used,
        "swap_free": swap_free,
        "swap_percent": percent(swap_used, swap_total),
    }


def _swap(tables: Tables, node: dict) -> tuple[int, int]:
    if "swap_total" in node or "swap_free" in node:
        return int_of(node, "swap_total"), int_of(node, "swap_free")
    devices = tables.get(SWAP, {}).values()
    used = sum(int_of(fields, "used") for fields in devices)
    free = sum(int_of(fields, "free") for fields in devices)
    return used + free, free


def build_psi(node: dict, missing: list[str]) -> dict:
    out = {}
    for name, source in PSI_FIELDS:
        sample = node.get(source)
        if sample is None:
            missing.append("psi." + name)
        out[name] = clamp_percent(rate(sample) * 100.0)
    return out


def build_tcp(node: dict, missing: list[str]) -> dict:
    return _ints("tcp", TCP_FIELDS, node, missing)


def build_system(node: dict, missing: list[str]) -> dict:
    return _ints("system", SYSTEM_FIELDS, node, missing)


def build_vmstat(node: dict, missing: list[str]) -> dict:
    out = {}
    for name, source in VMSTAT_FIELDS:
        sample = node.get(source)
        if sample is None:
            missing.append("vmstat." + name)
        out[name] = rate(sample)
    return out


def build_ntp(node: dict, missing: list[str]) -> dict:
    for name, source in NTP_FIELDS:
        if source not in node:
            missing.append("ntp." + name)
    sync = node.get("ntp_sync_status")
    return {
        "offset_seconds": float_of(node, "ntp_offset"),
        "synced": sync is not None and sync[VALUE] == 1,
    }


def build_softnet(tables: Tables) -> dict:
    cpus = tables.get(SOFTNET, {}).values()
    return {
        "dropped": to_int(sum(int_of(fields, "dropped") for fields in cpus)),
        "squeezed": to_int(sum(int_of(fields, "squeezed") for fields in cpus)),
    }


def _ints(section: str, fields: tuple, node: dict, missing: list[str]) -> dict:
    out = {}
    for name, source in fields:
        if source not in node:
            missing.append(f"{section}.{name}")
        out[name] = int_of(node, source)
    return out


def section_present(node: dict, fields: tuple) -> bool:
    return any(source in node for _, source in fields)
