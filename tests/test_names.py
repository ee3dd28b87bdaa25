"""Metric name variants a collector may send for node_exporter families."""

import pytest

from processors.names import NODE_FAMILIES, NameResolver, name_variants


@pytest.mark.parametrize(
    ("received", "canonical"),
    [
        ("node_cpu_seconds_total", "node_cpu_seconds_total"),
        ("otel_node_cpu_seconds_total", "node_cpu_seconds_total"),
        ("node_cpu_seconds", "node_cpu_seconds_total"),  # _total trimmed
        ("node_cpu", "node_cpu_seconds_total"),  # _total and unit trimmed
        ("otel_node_network_receive", "node_network_receive_bytes_total"),
        ("node_network_receive_packets", "node_network_receive_packets_total"),
        ("node_memory_MemTotal", "node_memory_MemTotal_bytes"),
        ("node_hwmon_temp_max", "node_hwmon_temp_max_celsius"),
        ("node_load1", "node_load1"),
        ("node_vmstat_pgfault", "node_vmstat_pgfault"),
        ("node_filesystem_files", None),
        ("otel_", None),
        ("up", None),
    ],
)
def test_canonical_names(received, canonical):
    assert NameResolver().canonical(received) == canonical


def test_prefix_is_configurable():
    resolver = NameResolver(prefixes=("k3s_",))
    assert resolver.canonical("k3s_node_load5") == "node_load5"
    assert resolver.canonical("otel_node_load5") is None


def test_variants_never_collide():
    seen = {}
    for family in NODE_FAMILIES:
        for variant in name_variants(family):
            assert seen.setdefault(variant, family) == family
