"""The ``networks`` section of a node snapshot: one entry per interface seen
in any network series, ordered by name."""

from __future__ import annotations

from processors.node_sources import (
    ATTRS,
    INT64_MAX,
    NETWORK,
    VALUE,
    Sample,
    Tables,
    int_of,
    rate,
)


def build_networks(tables: Tables, missing: list[str]) -> list[dict]:
    interfaces = tables.get(NETWORK, {})
    out = []
    lacks_speed = lacks_status = False
    for name in sorted(interfaces):
        fields = interfaces[name]
        lacks_speed = lacks_speed or "speed_bytes" not in fields
        lacks_status = lacks_status or "up" not in fields
        info = fields.get("info")
        out.append(
            {
                "interface": name,
                "ip_address": "",
                "mac_address": info[ATTRS].get("address", "") if info is not None else "",
                "status": _status(fields.get("up")),
                "speed": speed_mbps(fields.get("speed_bytes")),
                "mtu": int_of(fields, "mtu"),
                "rx_bytes": int_of(fields, "rx_bytes"),
                "tx_bytes": int_of(fields, "tx_bytes"),
                "rx_packets": int_of(fields, "rx_packets"),
                "tx_packets": int_of(fields, "tx_packets"),
                "rx_rate": rate(fields.get("rx_bytes")),
                "tx_rate": rate(fields.get("tx_bytes")),
                "rx_errors": int_of(fields, "rx_errors"),
                "tx_errors": int_of(fields, "tx_errors"),
                "rx_dropped": int_of(fields, "rx_dropped"),
                "tx_dropped": int_of(fields, "tx_dropped"),
            }
        )
    if lacks_speed:
        missing.append("networks.speed")
    if lacks_status:
        missing.append("networks.status")
    return out


def speed_mbps(sample: Sample | None) -> int:
    """Convert node_network_speed_bytes to whole Mbps; negative (unknown) or missing is 0."""
    if sample is None:
        return 0
    speed_bytes = int(sample[VALUE])  # samples are finite
    if speed_bytes <= 0:
        return 0
    return min(speed_bytes * 8 // 1_000_000, INT64_MAX)


def _status(sample: Sample | None) -> str:
    if sample is None:
        return "unknown"
    if sample[VALUE] == 1:
        return "up"
    if sample[VALUE] == 0:
        return "down"
    return "unknown"
