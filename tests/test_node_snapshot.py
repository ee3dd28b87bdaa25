"""The node_snapshot processor on the six-node sample, end to end.

Every test here runs real components: node_exporter text (the six-node
sample, real node_exporter v1.9.0 output) → converter → decoder → filter →
delta_rate → node_snapshot. The sample contains one scrape. The second
scrape is built in this file by advancing counters by the amounts in
``ADVANCES``, and the expected rates and percentages are worked out by hand
from those amounts. Staleness markers, split scrapes and conflicting node
names do not occur in the sample: those tests change the decoded data and
say so.
"""

from __future__ import annotations

import copy
from pathlib import Path

import orjson
import pytest

from pipeline import convert, decode, promtext
from pipeline.component import ComponentContext, ConfigError, Exporter, Snapshot
from pipeline.model import Metric, MetricKind, ResourceMetrics
from pipeline.runtime import Pipeline
from processors.delta_rate import DeltaRateConfig, DeltaRateProcessor
from processors.filter import FilterConfig, FilterProcessor
from processors.node_snapshot import (
    DROPPED_POINTS,
    DROPPED_SNAPSHOTS,
    MISSING_FIELDS,
    SNAPSHOTS,
    STALE_ENTITIES,
    TRACKED_NODES,
    NodeSnapshotConfig,
    NodeSnapshotProcessor,
)

SIX_NODES = Path(__file__).parent.parent / "testdata" / "atlhyper-six-nodes" / "otel_all_nodes.txt"
T0 = 1_766_400_000_000_000_000  # 2025-12-22T10:40:00Z
STEP_S = 15
STEP_NS = STEP_S * 1_000_000_000
NODE_NAMES = {"desk-zero", "desk-one", "desk-two", "raspi-zero", "raspi-one", "raspi-nfs"}
DESK_ZERO = "192.168.0.130:9100"
RASPI_ZERO = "192.168.0.182:9100"

# Counter advances from the first to the second scrape, 15 s apart:
# (metric, labels the sample must have, amount).
ADVANCES = [
    # Every CPU of every node: 15 s in total, 12 s idle, so 20 % busy.
    ("otel_node_cpu_seconds_total", {"mode": "idle"}, 12.0),
    ("otel_node_cpu_seconds_total", {"mode": "user"}, 2.0),
    ("otel_node_cpu_seconds_total", {"mode": "system"}, 0.75),
    ("otel_node_cpu_seconds_total", {"mode": "iowait"}, 0.25),
    # desk-zero CPU 5: 3 s more user time (18 s in total, 6 s busy).
    ("otel_node_cpu_seconds_total", {"instance": DESK_ZERO, "cpu": "5", "mode": "user"}, 3.0),
    # desk-zero disk sda (and dm-0, which the filter drops).
    ("otel_node_disk_read_bytes_total", {"instance": DESK_ZERO}, 15_000_000),
    ("otel_node_disk_written_bytes_total", {"instance": DESK_ZERO}, 30_000_000),
    ("otel_node_disk_reads_completed_total", {"instance": DESK_ZERO}, 150),
    ("otel_node_disk_writes_completed_total", {"instance": DESK_ZERO}, 300),
    ("otel_node_disk_io_time_seconds_total", {"instance": DESK_ZERO}, 1.5),
    # desk-zero eno1.
    ("otel_node_network_receive_bytes_total", {"instance": DESK_ZERO, "device": "eno1"}, 1_500_000),
    ("otel_node_network_transmit_bytes_total", {"instance": DESK_ZERO, "device": "eno1"}, 3_000_000),
    # desk-zero pressure and vmstat.
    ("otel_node_pressure_cpu_waiting_seconds_total", {"instance": DESK_ZERO}, 0.75),
    ("otel_node_pressure_io_waiting_seconds_total", {"instance": DESK_ZERO}, 1.5),
    ("otel_node_pressure_io_stalled_seconds_total", {"instance": DESK_ZERO}, 0.3),
    ("otel_node_vmstat_pgfault", {"instance": DESK_ZERO}, 15_000),
    ("otel_node_vmstat_pgmajfault", {"instance": DESK_ZERO}, 15),
    # raspi-zero: NVMe writes and eth0 receive.
    ("otel_node_disk_written_bytes_total", {"instance": RASPI_ZERO, "device": "nvme0n1"}, 1_500_000),
    ("otel_node_network_receive_bytes_total", {"instance": RASPI_ZERO, "device": "eth0"}, 150_000),
]


class ListExporter(Exporter):
    """Keeps what it is given, for assertions."""

    type_name = "list"

    def __init__(self) -> None:
        super().__init__(None, ComponentContext("list"))
        self.items: list = []

    def export(self, items, now_ns):
        self.items.extend(items)


def advance(exposition: promtext.Exposition, advances=ADVANCES) -> promtext.Exposition:
    """Return a copy of the exposition with the counter advances applied."""
    out = promtext.Exposition(types=dict(exposition.types), helps=dict(exposition.helps))
    for sample in exposition.samples:
        amount = sum(
            value
            for name, labels, value in advances
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )
        out.samples.append(promtext.Sample(sample.name, sample.labels, sample.value + amount))
    return out


def decode_exposition(exposition, time_ns: int, **options) -> list[ResourceMetrics]:
    options.setdefault("strip_prefix", "otel_")
    request = convert.exposition_to_request(exposition, time_ns, convert.ConvertOptions(**options))
    return decode.decode_request(request).batch


def six_node_scrapes() -> tuple[list[ResourceMetrics], list[ResourceMetrics]]:
    first = promtext.parse(SIX_NODES.read_text())
    return decode_exposition(first, T0), decode_exposition(advance(first), T0 + STEP_NS)


def make_pipeline(**options):
    snapshot = NodeSnapshotProcessor(NodeSnapshotConfig(**options), ComponentContext("node_snapshot"))
    exporter = ListExporter()
    pipeline = Pipeline(
        "node",
        [
            FilterProcessor(FilterConfig(), ComponentContext("filter")),
            DeltaRateProcessor(DeltaRateConfig(), ComponentContext("delta_rate")),
            snapshot,
        ],
        [exporter],
    )
    return pipeline, snapshot, exporter


def snapshot_keys(items) -> list[str]:
    return [item.key for item in items if isinstance(item, Snapshot)]


def bodies(items) -> dict[str, dict]:
    return {item.key: item.body for item in items if isinstance(item, Snapshot)}


@pytest.fixture(scope="module")
def golden():
    """Snapshots of both scrapes: (first scrape's bodies, second scrape's bodies)."""
    first, second = six_node_scrapes()
    pipeline, _, exporter = make_pipeline()
    pipeline.consume(first, T0)
    pipeline.consume(second, T0 + STEP_NS)
    after_second = list(exporter.items)
    pipeline.drain(T0 + STEP_NS)
    return bodies(after_second), bodies(exporter.items[len(after_second):])


# The wire contract: every key of a snapshot body and its JSON type.
CONTRACT = {
    "node_name": str,
    "timestamp": str,
    "hostname": str,
    "os": str,
    "kernel": str,
    "uptime": int,
    "cpu": {
        "usage_percent": float,
        "user_percent": float,
        "system_percent": float,
        "idle_percent": float,
        "iowait_percent": float,
        "per_core": [float],
        "load_1": float,
        "load_5": float,
        "load_15": float,
        "model": str,
        "cores": int,
        "threads": int,
        "frequency": float,
    },
    "memory": {
        "total": int,
        "used": int,
        "available": int,
        "free": int,
        "usage_percent": float,
        "cached": int,
        "buffers": int,
        "swap_total": int,
        "swap_used": int,
        "swap_free": int,
        "swap_percent": float,
    },
    "disks": [
        {
            "device": str,
            "mount_point": str,
            "fs_type": str,
            "total": int,
            "used": int,
            "available": int,
            "usage_percent": float,
            "read_bytes": int,
            "write_bytes": int,
            "read_rate": float,
            "write_rate": float,
            "read_iops": float,
            "write_iops": float,
            "io_util": float,
        }
    ],
    "networks": [
        {
            "interface": str,
            "ip_address": str,
            "mac_address": str,
            "status": str,
            "speed": int,
            "mtu": int,
            "rx_bytes": int,
            "tx_bytes": int,
            "rx_packets": int,
            "tx_packets": int,
            "rx_rate": float,
            "tx_rate": float,
            "rx_errors": int,
            "tx_errors": int,
            "rx_dropped": int,
            "tx_dropped": int,
        }
    ],
    "temperature": {
        "cpu_temp": float,
        "cpu_temp_max": float,
        "sensors": [{"name": str, "label": str, "current": float, "max": float, "critical": float}],
    },
    "processes": None,
    "psi": {
        "cpu_some_percent": float,
        "memory_some_percent": float,
        "memory_full_percent": float,
        "io_some_percent": float,
        "io_full_percent": float,
    },
    "tcp": {
        "curr_estab": int,
        "time_wait": int,
        "orphan": int,
        "alloc": int,
        "in_use": int,
        "sockets_used": int,
    },
    "system": {
        "conntrack_entries": int,
        "conntrack_limit": int,
        "filefd_allocated": int,
        "filefd_maximum": int,
        "entropy_available": int,
    },
    "vmstat": {"pgfault_ps": float, "pgmajfault_ps": float, "pswpin_ps": float, "pswpout_ps": float},
    "ntp": {"offset_seconds": float, "synced": bool},
    "softnet": {"dropped": int, "squeezed": int},
    "unavailable": [str],
}


def contract_violations(value, spec, path="") -> list[str]:
    """List where a body differs from the contract's keys, key order and types."""
    if spec is None:
        return [] if value is None else [f"{path}: expected null, got {value!r}"]
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return [f"{path}: expected an object"]
        if list(value) != list(spec):
            return [f"{path}: keys {list(value)} != {list(spec)}"]
        return [v for key in spec for v in contract_violations(value[key], spec[key], f"{path}.{key}")]
    if isinstance(spec, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [v for i, item in enumerate(value) for v in contract_violations(item, spec[0], f"{path}[{i}]")]
    if type(value) is not spec:
        return [f"{path}: expected {spec.__name__}, got {type(value).__name__} {value!r}"]
    return []


def by_mount(body: dict) -> dict[str, dict]:
    return {disk["mount_point"]: disk for disk in body["disks"]}


def by_interface(body: dict) -> dict[str, dict]:
    return {net["interface"]: net for net in body["networks"]}


def sample_value(name: str, **labels: str) -> float:
    """Read one sample of the six-node text, independently of the product's code."""
    found = [
        s.value
        for s in promtext.parse(SIX_NODES.read_text()).samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


# Golden values, scrape by scrape.


def test_six_nodes_one_snapshot_each(golden):
    first, second = golden
    assert set(first) == NODE_NAMES
    assert set(second) == NODE_NAMES


def test_bodies_follow_contract(golden):
    for scrape in golden:
        for name, body in scrape.items():
            assert contract_violations(body, CONTRACT) == [], name
            assert orjson.loads(orjson.dumps(body)) == body


def test_first_scrape_has_no_rates(golden):
    first, _ = golden
    for body in first.values():
        cpu = body["cpu"]
        assert cpu["usage_percent"] == 0.0
        assert cpu["per_core"] == [0.0] * cpu["cores"]
        assert all(d["read_rate"] == d["write_rate"] == d["io_util"] == 0.0 for d in body["disks"])
        assert all(n["rx_rate"] == n["tx_rate"] == 0.0 for n in body["networks"])
        assert set(body["psi"].values()) == {0.0}
        assert set(body["vmstat"].values()) == {0.0}


def test_desk_zero_identity(golden):
    _, second = golden
    body = second["desk-zero"]
    assert body["node_name"] == "desk-zero"
    assert body["hostname"] == "desk-zero"
    assert body["kernel"] == "6.8.0-85-generic"
    assert body["os"] == ""  # node_os_info is not in the sample
    assert body["timestamp"] == "2025-12-22T10:40:15.000Z"
    boot_s = sample_value("otel_node_boot_time_seconds", instance=DESK_ZERO)
    assert body["uptime"] == int(T0 // 1_000_000_000 + STEP_S - boot_s)
    assert body["processes"] is None
    assert body["unavailable"] == []


def test_desk_zero_cpu(golden):
    _, second = golden
    cpu = second["desk-zero"]["cpu"]
    # 8 CPUs × 15 s plus CPU 5's extra 3 s of user time = 123 s in total;
    # idle 8 × 12 = 96 s; user 8 × 2 + 3 = 19 s; system 8 × 0.75 = 6 s;
    # iowait 8 × 0.25 = 2 s.
    assert cpu["usage_percent"] == pytest.approx(27 / 123 * 100)
    assert cpu["user_percent"] == pytest.approx(19 / 123 * 100)
    assert cpu["system_percent"] == pytest.approx(6 / 123 * 100)
    assert cpu["idle_percent"] == pytest.approx(96 / 123 * 100)
    assert cpu["iowait_percent"] == pytest.approx(2 / 123 * 100)
    assert cpu["per_core"] == pytest.approx([20.0] * 5 + [6 / 18 * 100] + [20.0] * 2)
    assert cpu["cores"] == cpu["threads"] == 8
    assert cpu["load_1"] == sample_value("otel_node_load1", instance=DESK_ZERO)
    assert cpu["model"] == ""
    frequencies = [
        sample_value("otel_node_cpu_scaling_frequency_hertz", instance=DESK_ZERO, cpu=str(i))
        for i in range(8)
    ]
    assert cpu["frequency"] == pytest.approx(sum(frequencies) / 8 / 1e6)


def test_desk_zero_memory(golden):
    _, second = golden
    memory = second["desk-zero"]["memory"]
    available = int(sample_value("otel_node_memory_MemAvailable_bytes", instance=DESK_ZERO))
    assert memory["total"] == 33528840192
    assert memory["available"] == available
    assert memory["used"] == 33528840192 - available
    assert memory["usage_percent"] == pytest.approx((33528840192 - available) / 33528840192 * 100)
    assert memory["swap_total"] == memory["swap_used"] == 0
    assert memory["swap_percent"] == 0.0


def test_desk_zero_disks(golden):
    _, second = golden
    disks = second["desk-zero"]["disks"]
    assert [d["mount_point"] for d in disks] == ["/", "/boot", "/boot/efi"]
    root = disks[0]
    assert root["device"] == "/dev/mapper/ubuntu--vg-ubuntu--lv"
    assert root["fs_type"] == "ext4"
    size = sample_value("otel_node_filesystem_size_bytes", instance=DESK_ZERO, mountpoint="/")
    avail = sample_value("otel_node_filesystem_avail_bytes", instance=DESK_ZERO, mountpoint="/")
    assert root["total"] == int(size)
    assert root["available"] == int(avail)
    assert root["used"] == int(size) - int(avail)  # no free_bytes in the sample
    assert root["usage_percent"] == pytest.approx((size - avail) / size * 100)
    # The LVM root lives on sda, the only physical disk, and carries its I/O.
    sda_read = sample_value("otel_node_disk_read_bytes_total", instance=DESK_ZERO, device="sda")
    assert root["read_bytes"] == int(sda_read + 15_000_000)
    assert root["read_rate"] == pytest.approx(1_000_000.0)
    assert root["write_rate"] == pytest.approx(2_000_000.0)
    assert root["read_iops"] == pytest.approx(10.0)
    assert root["write_iops"] == pytest.approx(20.0)
    assert root["io_util"] == pytest.approx(10.0)
    # /boot and /boot/efi are partitions of sda too: they carry no I/O.
    for disk in disks[1:]:
        assert (disk["read_bytes"], disk["read_rate"], disk["io_util"]) == (0, 0.0, 0.0)


def test_desk_zero_network(golden):
    _, second = golden
    networks = second["desk-zero"]["networks"]
    assert [n["interface"] for n in networks] == ["eno1"]
    eno1 = networks[0]
    assert (eno1["status"], eno1["speed"], eno1["mtu"]) == ("up", 1000, 1500)
    assert eno1["rx_rate"] == pytest.approx(100_000.0)
    assert eno1["tx_rate"] == pytest.approx(200_000.0)
    rx = sample_value("otel_node_network_receive_bytes_total", instance=DESK_ZERO, device="eno1")
    assert eno1["rx_bytes"] == int(rx + 1_500_000)
    assert (eno1["mac_address"], eno1["ip_address"]) == ("", "")


def test_desk_zero_other_sections(golden):
    _, second = golden
    body = second["desk-zero"]
    assert body["psi"] == pytest.approx(
        {
            "cpu_some_percent": 5.0,
            "memory_some_percent": 0.0,
            "memory_full_percent": 0.0,
            "io_some_percent": 10.0,
            "io_full_percent": 2.0,
        }
    )
    assert body["vmstat"] == pytest.approx(
        {"pgfault_ps": 1000.0, "pgmajfault_ps": 1.0, "pswpin_ps": 0.0, "pswpout_ps": 0.0}
    )
    assert body["softnet"] == {"dropped": 0, "squeezed": 204}
    assert body["system"]["filefd_maximum"] == 9223372036854775807
    assert b'"filefd_maximum":9223372036854775807' in orjson.dumps(body)
    assert body["system"]["conntrack_limit"] == 262144
    assert body["tcp"]["curr_estab"] == 138
    assert body["tcp"]["in_use"] == 0  # node_sockstat_TCP_inuse is not in the sample
    assert body["ntp"]["synced"] is True
    assert body["temperature"]["cpu_temp"] == 54.0  # coretemp temp1, the package
    assert body["temperature"]["cpu_temp_max"] == 74.0
    assert [s["label"] for s in body["temperature"]["sensors"]] == [f"temp{i}" for i in range(1, 6)]


def test_raspi_zero(golden):
    _, second = golden
    body = second["raspi-zero"]
    assert body["cpu"]["cores"] == 4
    assert body["cpu"]["usage_percent"] == pytest.approx(20.0)
    assert [d["mount_point"] for d in body["disks"]] == ["/", "/boot/firmware"]
    assert body["disks"][0]["device"] == "/dev/nvme0n1p2"
    assert body["disks"][0]["write_rate"] == pytest.approx(100_000.0)
    assert body["disks"][1]["write_rate"] == 0.0
    networks = by_interface(body)
    assert list(networks) == ["eth0", "wlan0"]
    assert networks["eth0"]["status"] == "up"
    assert networks["wlan0"]["status"] == "down"
    assert networks["wlan0"]["speed"] == 0  # no speed series for wlan0
    assert networks["eth0"]["rx_rate"] == pytest.approx(10_000.0)
    assert body["system"]["conntrack_limit"] == 131072
    # Thermal zones come before the RP1 ADC (56.634 °C is not the CPU).
    assert body["temperature"]["cpu_temp"] == 52.9
    assert body["temperature"]["cpu_temp_max"] == 0.0


def test_raspi_nfs_whole_disk_and_partition(golden):
    _, second = golden
    disks = by_mount(second["raspi-nfs"])
    assert list(disks) == ["/", "/boot/firmware", "/media/operator/DATA", "/media/operator/DATA2T"]
    sda_read = sample_value("otel_node_disk_read_bytes_total", instance="192.168.0.153:9100", device="sda")
    sdb_read = sample_value("otel_node_disk_read_bytes_total", instance="192.168.0.153:9100", device="sdb")
    assert disks["/media/operator/DATA2T"]["read_bytes"] == int(sda_read)  # /dev/sda, whole disk
    assert disks["/media/operator/DATA"]["read_bytes"] == int(sdb_read)  # /dev/sdb1
    assert len(second["raspi-nfs"]["disks"]) == 4  # every disk carries a filesystem


def test_all_nodes_filtered_lists(golden):
    _, second = golden
    assert "docker0" not in by_interface(second["desk-one"])
    for name, body in second.items():
        assert all(n["speed"] >= 0 for n in body["networks"]), name
        assert all(not n["interface"].startswith(("veth", "flannel", "cni", "lo")) for n in body["networks"])
        assert all(d["device"].startswith("/dev/") for d in body["disks"] if d["mount_point"])
        assert len(body["cpu"]["per_core"]) == body["cpu"]["cores"]


def test_missing_fields_counted():
    first, _ = six_node_scrapes()
    pipeline, snapshot, _ = make_pipeline()
    pipeline.consume(first, T0)
    pipeline.drain(T0)
    telemetry = snapshot.telemetry
    assert telemetry.get(SNAPSHOTS) == 6
    # Absent from the sample on every node.
    for field in ("os", "cpu.model", "tcp.in_use", "temperature.critical"):
        assert telemetry.get(MISSING_FIELDS, processor="node_snapshot", field=field) == 6, field
    assert telemetry.get(MISSING_FIELDS, processor="node_snapshot", field="psi") == 0


# Names as a collector may send them.


def _trimmed(name: str) -> str:
    """What a collector's trim_metric_suffixes makes of a name."""
    if name.endswith("_total"):
        name = name[: -len("_total")]
    for suffix in ("_seconds", "_bytes", "_celsius", "_hertz", "_bits"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _snapshots_for(renamed_first, renamed_second, **convert_options) -> dict[str, dict]:
    pipeline, _, exporter = make_pipeline()
    pipeline.consume(decode_exposition(renamed_first, T0, **convert_options), T0)
    pipeline.consume(decode_exposition(renamed_second, T0 + STEP_NS, **convert_options), T0 + STEP_NS)
    pipeline.drain(T0 + STEP_NS)
    return {(item.key, item.time_ns): item.body for item in exporter.items}


def test_name_variants_give_same_snapshots():
    first = promtext.parse(SIX_NODES.read_text())
    second = advance(first)
    prefixed = _snapshots_for(first, second, strip_prefix="")
    plain = _snapshots_for(first, second)

    def trim(exposition):
        out = promtext.Exposition()
        for s in exposition.samples:
            name = "otel_" + _trimmed(s.name[len("otel_"):])
            out.samples.append(promtext.Sample(name, s.labels, s.value))
            if s.name.endswith("_total"):
                # The receiver trims after reading the type, so counters stay Sums.
                out.types[name[len("otel_"):]] = "counter"
        return out

    trimmed = _snapshots_for(trim(first), trim(second))
    assert len(plain) == 12
    assert prefixed == plain
    assert trimmed == plain


def test_custom_prefix():
    first = promtext.parse(SIX_NODES.read_text().replace("otel_node_", "edge_node_"))
    snapshot = NodeSnapshotProcessor(
        NodeSnapshotConfig(name_prefixes=["edge_"], scrape_wait_s=0), ComponentContext("node_snapshot")
    )
    out = snapshot.process(decode_exposition(first, T0, strip_prefix=""), T0)
    assert set(snapshot_keys(out)) == NODE_NAMES


# Buffering of split scrapes.


def _split_metric(metric: Metric, parts: int) -> list[Metric]:
    size = len(metric)
    pieces = []
    for index in range(parts):
        piece = copy.copy(metric)
        piece.keep([i * parts // size == index for i in range(size)])
        pieces.append(piece)
    return [p for p in pieces if len(p)]


def split_in_three(batch: list[ResourceMetrics]) -> list[list[ResourceMetrics]]:
    """Split each resource's metrics over three requests, the CPU metric's points too."""
    calls: list[list[ResourceMetrics]] = [[], [], []]
    for rm in batch:
        groups: list[list[Metric]] = [[], [], []]
        for index, metric in enumerate(rm.metrics):
            if metric.name == "node_cpu_seconds_total":
                for part, piece in enumerate(_split_metric(metric, 3)):
                    groups[part].append(piece)
            else:
                groups[index % 3].append(metric)
        for part, metrics in enumerate(groups):
            calls[part].append(ResourceMetrics(attrs=rm.attrs, metrics=metrics, scope_name=rm.scope_name))
    return calls


def test_split_scrape_gives_one_snapshot(golden):
    _, expected = golden
    first, second = six_node_scrapes()
    pipeline, _, exporter = make_pipeline()
    for offset_ns, call in enumerate(split_in_three(first)):
        pipeline.consume(call, T0 + offset_ns * 100_000_000)
    assert exporter.items == []
    for offset_ns, call in enumerate(split_in_three(second)):
        pipeline.consume(call, T0 + STEP_NS + offset_ns * 100_000_000)
    assert sorted(item.key for item in exporter.items) == sorted(NODE_NAMES)
    emitted = len(exporter.items)
    pipeline.drain(T0 + STEP_NS)
    assert bodies(exporter.items[emitted:]) == expected


def test_flush_waits_for_parts():
    first, _ = six_node_scrapes()
    pipeline, _, exporter = make_pipeline(scrape_wait_s=5.0)
    pipeline.consume(first, T0)
    pipeline.tick(T0 + 4_900_000_000)
    assert exporter.items == []
    pipeline.tick(T0 + 5_000_000_000)
    assert {item.key for item in exporter.items} == NODE_NAMES


def test_late_part_dropped_and_counted():
    first, _ = six_node_scrapes()
    calls = split_in_three(first)
    pipeline, snapshot, exporter = make_pipeline(scrape_wait_s=5.0)
    pipeline.consume(calls[0] + calls[1], T0)
    pipeline.tick(T0 + 5_000_000_000)
    assert len(exporter.items) == 6
    pipeline.consume(calls[2], T0 + 6_000_000_000)
    pipeline.drain(T0 + 6_000_000_000)
    assert len(exporter.items) == 6
    late_points = sum(len(m) for rm in calls[2] for m in rm.metrics)
    counted = snapshot.telemetry.get(DROPPED_POINTS, processor="node_snapshot", reason="late_scrape_part")
    # The filter drops some of those points before they reach the snapshot.
    assert 0 < counted <= late_points


def test_retried_scrape_gives_no_second_snapshot():
    first, _ = six_node_scrapes()
    retry = decode_exposition(promtext.parse(SIX_NODES.read_text()), T0)
    pipeline, _, exporter = make_pipeline()
    pipeline.consume(first, T0)
    pipeline.consume(retry, T0 + 5_000_000_000)
    pipeline.drain(T0 + 5_000_000_000)
    assert sorted(item.key for item in exporter.items) == sorted(NODE_NAMES)


def test_wait_zero_emits_at_batch_end():
    first, _ = six_node_scrapes()
    pipeline, _, exporter = make_pipeline(scrape_wait_s=0)
    pipeline.consume(first, T0)
    assert {item.key for item in exporter.items} == NODE_NAMES


# Staleness (the sample has no staleness markers: they are set in the
# decoded data here).


def _mark_stale(batch, instance: str, predicate) -> None:
    """Turn the points matching predicate(metric name, attrs) into staleness markers."""
    for rm in batch:
        if rm.attrs.get("service.instance.id") != instance:
            continue
        for metric in rm.metrics:
            metric.values = [
                None if predicate(metric.name, attrs) else value
                for attrs, value in zip(metric.attrs, metric.values)
            ]


def _three_scrapes():
    first = promtext.parse(SIX_NODES.read_text())
    second = advance(first)
    third = advance(second)
    return [decode_exposition(e, T0 + i * STEP_NS) for i, e in enumerate((first, second, third))]


def _run(scrapes):
    pipeline, snapshot, exporter = make_pipeline()
    for i, batch in enumerate(scrapes):
        pipeline.consume(batch, T0 + i * STEP_NS)
    pipeline.drain(T0 + len(scrapes) * STEP_NS)
    by_time: dict[int, dict[str, dict]] = {}
    for item in exporter.items:
        by_time.setdefault(item.time_ns, {})[item.key] = item.body
    return [by_time[T0 + i * STEP_NS] for i in range(len(scrapes))], snapshot


def test_entity_all_stale_is_absent():
    scrapes = _three_scrapes()
    _mark_stale(scrapes[2], DESK_ZERO, lambda name, attrs: attrs.get("device") == "eno1")
    results, snapshot = _run(scrapes)
    assert "eno1" in by_interface(results[1]["desk-zero"])
    assert by_interface(results[2]["desk-zero"]) == {}
    assert "networks" in results[2]["desk-zero"]["unavailable"]
    assert snapshot.telemetry.get(STALE_ENTITIES) == 1


def test_some_stale_series_repeat_last_good():
    scrapes = _three_scrapes()
    _mark_stale(
        scrapes[2],
        DESK_ZERO,
        lambda name, attrs: name == "node_network_receive_bytes_total" and attrs.get("device") == "eno1",
    )
    results, _ = _run(scrapes)
    second = by_interface(results[1]["desk-zero"])["eno1"]
    third = by_interface(results[2]["desk-zero"])["eno1"]
    assert third["rx_bytes"] == second["rx_bytes"]
    assert third["rx_rate"] == second["rx_rate"] == pytest.approx(100_000.0)
    assert third["tx_bytes"] == second["tx_bytes"] + 3_000_000


def test_all_stale_node_gives_no_snapshot():
    scrapes = _three_scrapes()
    _mark_stale(scrapes[2], DESK_ZERO, lambda name, attrs: True)
    results, snapshot = _run(scrapes)
    assert set(results[2]) == NODE_NAMES - {"desk-zero"}
    assert snapshot.telemetry.get(DROPPED_SNAPSHOTS, processor="node_snapshot", reason="all_stale") == 1


def test_new_cpu_and_interface_no_spike():
    first = promtext.parse(SIX_NODES.read_text())
    without = promtext.Exposition(
        samples=[
            s
            for s in first.samples
            if not (s.labels.get("instance") == DESK_ZERO and (s.labels.get("cpu") == "7" or s.labels.get("device") == "eno1"))
        ]
    )
    scrapes = [decode_exposition(without, T0), decode_exposition(advance(first), T0 + STEP_NS)]
    results, _ = _run(scrapes)
    before, after = results[0]["desk-zero"], results[1]["desk-zero"]
    assert before["cpu"]["cores"] == 7
    assert after["cpu"]["cores"] == 8
    # CPU 7 has only a first sample: 0 and left out of the totals.
    assert after["cpu"]["per_core"][7] == 0.0
    assert after["cpu"]["usage_percent"] == pytest.approx(24 / 108 * 100)
    assert by_interface(after)["eno1"]["rx_rate"] == 0.0


# Node identity.


def _desk_zero_text(instance: str = DESK_ZERO) -> str:
    text = (SIX_NODES.parent / "otel_desk_zero.txt").read_text()
    return text.replace(DESK_ZERO, instance)


def test_name_conflict_counted_not_merged():
    text = _desk_zero_text() + _desk_zero_text("192.168.0.131:9100")
    batch = decode_exposition(promtext.parse(text), T0)
    assert len(batch) == 2
    snapshot = NodeSnapshotProcessor(NodeSnapshotConfig(scrape_wait_s=0), ComponentContext("node_snapshot"))
    out = snapshot.process(batch, T0)
    assert snapshot_keys(out) == ["desk-zero"]
    assert snapshot.telemetry.get(DROPPED_SNAPSHOTS, processor="node_snapshot", reason="name_conflict") == 1


def test_name_freed_after_expiry():
    owner = decode_exposition(promtext.parse(_desk_zero_text()), T0)
    other = decode_exposition(promtext.parse(_desk_zero_text("192.168.0.131:9100")), T0 + 400 * 10**9)
    snapshot = NodeSnapshotProcessor(
        NodeSnapshotConfig(scrape_wait_s=0, node_expiry_s=300), ComponentContext("node_snapshot")
    )
    assert snapshot_keys(snapshot.process(owner, T0)) == ["desk-zero"]
    snapshot.flush(T0 + 300 * 10**9)
    assert snapshot.telemetry.get(TRACKED_NODES) == 0
    out = snapshot.process(other, T0 + 400 * 10**9)
    assert snapshot_keys(out) == ["desk-zero"]


@pytest.mark.parametrize(
    ("extra_resource", "expected"),
    [
        ({}, "192.168.0.130"),
        ({"k8s.node.name": "k8s-desk"}, "k8s-desk"),
        ({"host.name": "host-desk", "k8s.node.name": "k8s-desk"}, "host-desk"),
    ],
)
def test_name_fallbacks_without_uname(extra_resource, expected):
    text = "".join(line for line in _desk_zero_text().splitlines(True) if "uname_info" not in line)
    batch = decode_exposition(promtext.parse(text), T0, extra_resource=extra_resource)
    snapshot = NodeSnapshotProcessor(NodeSnapshotConfig(scrape_wait_s=0), ComponentContext("node_snapshot"))
    out = snapshot.process(batch, T0)
    assert snapshot_keys(out) == [expected]
    assert bodies(out)[expected]["kernel"] == ""


def test_uname_name_kept_once_seen():
    text = _desk_zero_text()
    without = "".join(line for line in text.splitlines(True) if "uname_info" not in line)
    snapshot = NodeSnapshotProcessor(NodeSnapshotConfig(scrape_wait_s=0), ComponentContext("node_snapshot"))
    snapshot.process(decode_exposition(promtext.parse(text), T0), T0)
    out = snapshot.process(decode_exposition(promtext.parse(without), T0 + STEP_NS), T0 + STEP_NS)
    assert snapshot_keys(out) == ["desk-zero"]


# Bounds, pass-through and config.


def test_node_limit_drops_and_counts():
    first, _ = six_node_scrapes()
    snapshot = NodeSnapshotProcessor(
        NodeSnapshotConfig(scrape_wait_s=0, max_nodes=2), ComponentContext("node_snapshot")
    )
    out = snapshot.process(first, T0)
    assert len(snapshot_keys(out)) == 2
    assert snapshot.telemetry.get(DROPPED_POINTS, processor="node_snapshot", reason="node_limit") > 0
    assert snapshot.telemetry.get(TRACKED_NODES) == 2


def test_other_items_pass_through():
    passing = Snapshot(kind="slo", key="cluster", time_ns=T0, body={})
    other = Metric(name="response_total", kind=MetricKind.SUM, attrs=[{}], times=[T0], values=[1.0])
    mixed = ResourceMetrics(
        attrs={"service.instance.id": "x:1"},
        metrics=[other, Metric(name="node_load1", kind=MetricKind.GAUGE, attrs=[{}], times=[T0], values=[0.5])],
    )
    snapshot = NodeSnapshotProcessor(NodeSnapshotConfig(), ComponentContext("node_snapshot"))
    out = snapshot.process([passing, mixed], T0)
    assert out[0] is passing
    assert isinstance(out[1], ResourceMetrics)
    assert out[1].metrics == [other]
    assert len(out) == 2


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"name_prefixes": "otel_"}, "name_prefixes"),
        ({"scrape_wait_s": -1}, "scrape_wait_s"),
        ({"scrape_time_tolerance_s": "1s"}, "scrape_time_tolerance_s"),
        ({"node_expiry_s": 5, "scrape_wait_s": 5}, "node_expiry_s"),
        ({"max_nodes": 0}, "max_nodes"),
    ],
)
def test_config_errors_name_field(options, path):
    with pytest.raises(ConfigError) as error:
        NodeSnapshotConfig(**options).validate()
    assert error.value.path == path


def test_default_config_valid():
    NodeSnapshotConfig().validate()
