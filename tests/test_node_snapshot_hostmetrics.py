"""The node snapshot from the hostmetrics receiver's metrics.

There is no recorded hostmetrics traffic in testdata, so the requests are
built here in the shape the receiver sends. Names, attributes, int or
double values and monotonic cumulative Sums follow its scrapers'
metadata.yaml. Each scraper has its own scope, stamped a few milliseconds
after the previous one, and the resource has ``host.name``. They go through
the real decoder, delta_rate and node_snapshot.
"""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from pipeline import convert, decode, promtext
from pipeline.component import ComponentContext, Snapshot
from processors.delta_rate import DeltaRateConfig, DeltaRateProcessor
from processors.node_snapshot import DROPPED_SNAPSHOTS, NodeSnapshotConfig, NodeSnapshotProcessor

T0 = 1_766_400_000_000_000_000
STEP_S = 10
CUMULATIVE = 2
GIB = 1024**3


def _attrs(target, attrs: dict[str, str]) -> None:
    target.extend(KeyValue(key=k, value={"string_value": v}) for k, v in attrs.items())


def add_metric(scope, name: str, points, time_ns: int, kind: str = "sum", monotonic: bool = True, as_int=True):
    metric = scope.metrics.add()
    metric.name = name
    if kind == "sum":
        metric.sum.is_monotonic = monotonic
        metric.sum.aggregation_temporality = CUMULATIVE
        data_points = metric.sum.data_points
    else:
        data_points = metric.gauge.data_points
    for attrs, value in points:
        point = data_points.add()
        _attrs(point.attributes, attrs)
        point.time_unix_nano = time_ns
        point.start_time_unix_nano = T0 - 3600 * 10**9
        if as_int:
            point.as_int = int(value)
        else:
            point.as_double = float(value)


def collection(step: int, host: str = "hm-node") -> ExportMetricsServiceRequest:
    """One hostmetrics collection; counters grow by ``step`` × the per-step amounts."""
    base_ns = T0 + step * STEP_S * 10**9
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    _attrs(rm.resource.attributes, {"host.name": host, "os.type": "linux"})

    def scope(index: int, name: str):
        sm = rm.scope_metrics.add()
        sm.scope.name = f"github.com/open-telemetry/opentelemetry-collector-contrib/receiver/hostmetricsreceiver/internal/scraper/{name}"
        return sm, base_ns + index * 3_000_000  # each scraper 3 ms after the previous one

    cpu, t = scope(0, "cpuscraper")
    # Per step (10 s): cpu0 7 s idle, 2 s user, 1 s wait (iowait); cpu1 9 s
    # idle, 1 s system.
    cpu_seconds = {
        ("cpu0", "idle"): 1000 + 7 * step,
        ("cpu0", "user"): 200 + 2 * step,
        ("cpu0", "wait"): 10 + 1 * step,
        ("cpu0", "interrupt"): 1,
        ("cpu1", "idle"): 1100 + 9 * step,
        ("cpu1", "system"): 50 + 1 * step,
    }
    add_metric(
        cpu,
        "system.cpu.time",
        [({"cpu": c, "state": s}, v) for (c, s), v in cpu_seconds.items()],
        t,
        as_int=False,
    )
    add_metric(cpu, "system.cpu.frequency", [({"cpu": "cpu0"}, 2.0e9), ({"cpu": "cpu1"}, 3.0e9)], t, kind="gauge", as_int=False)

    load, t = scope(1, "loadscraper")
    for name, value in (("1m", 0.5), ("5m", 0.25), ("15m", 0.125)):
        add_metric(load, f"system.cpu.load_average.{name}", [({}, value)], t, kind="gauge", as_int=False)

    memory, t = scope(2, "memoryscraper")
    add_metric(
        memory,
        "system.memory.usage",
        [
            ({"state": "used"}, 3 * GIB),
            ({"state": "free"}, 1 * GIB),
            ({"state": "buffered"}, GIB // 2),
            ({"state": "cached"}, 3 * GIB + GIB // 2),
            ({"state": "slab_reclaimable"}, GIB // 4),
        ],
        t,
        monotonic=False,
    )
    add_metric(memory, "system.linux.memory.available", [({}, 4 * GIB)], t, monotonic=False)

    paging, t = scope(3, "pagingscraper")
    add_metric(
        paging,
        "system.paging.usage",
        [({"device": "/dev/zram0", "state": "used"}, GIB // 4), ({"device": "/dev/zram0", "state": "free"}, 3 * GIB // 4)],
        t,
        monotonic=False,
    )

    filesystem, t = scope(4, "filesystemscraper")
    fs = {"device": "/dev/sda1", "mode": "rw", "mountpoint": "/", "type": "ext4"}
    add_metric(
        filesystem,
        "system.filesystem.usage",
        [({**fs, "state": "used"}, 60 * GIB), ({**fs, "state": "free"}, 35 * GIB), ({**fs, "state": "reserved"}, 5 * GIB)],
        t,
        monotonic=False,
    )

    disk, t = scope(5, "diskscraper")
    add_metric(
        disk,
        "system.disk.io",
        [({"device": "sda", "direction": "read"}, 10**9 + 4_000_000 * step), ({"device": "sda", "direction": "write"}, 2 * 10**9 + 8_000_000 * step)],
        t,
    )
    add_metric(
        disk,
        "system.disk.operations",
        [({"device": "sda", "direction": "read"}, 10_000 + 50 * step), ({"device": "sda", "direction": "write"}, 20_000 + 250 * step)],
        t,
    )
    add_metric(disk, "system.disk.io_time", [({"device": "sda"}, 100.0 + 2.5 * step)], t, as_int=False)

    network, t = scope(6, "networkscraper")
    add_metric(
        network,
        "system.network.io",
        [({"device": "eth0", "direction": "receive"}, 10**8 + 1_000_000 * step), ({"device": "eth0", "direction": "transmit"}, 10**7 + 500_000 * step)],
        t,
    )
    add_metric(
        network,
        "system.network.packets",
        [({"device": "eth0", "direction": "receive"}, 5000 + 10 * step), ({"device": "eth0", "direction": "transmit"}, 4000)],
        t,
    )
    add_metric(network, "system.network.errors", [({"device": "eth0", "direction": "receive"}, 3)], t)
    add_metric(network, "system.network.dropped", [({"device": "eth0", "direction": "transmit"}, 7)], t)

    system, t = scope(7, "systemscraper")
    add_metric(system, "system.uptime", [({}, 86400.9 + STEP_S * step)], t, kind="gauge", as_int=False)
    return request


def run(requests) -> list[Snapshot]:
    delta_rate = DeltaRateProcessor(DeltaRateConfig(), ComponentContext("delta_rate"))
    snapshot = NodeSnapshotProcessor(NodeSnapshotConfig(), ComponentContext("node_snapshot"))
    out = []
    for index, request in enumerate(requests):
        now_ns = T0 + index * STEP_S * 10**9
        out.extend(snapshot.process(delta_rate.process(decode.decode_request(request).batch, now_ns), now_ns))
    out.extend(snapshot.shutdown())
    return [item for item in out if isinstance(item, Snapshot)], snapshot


@pytest.fixture(scope="module")
def second_body():
    snapshots, _ = run([collection(0), collection(1)])
    assert [s.key for s in snapshots] == ["hm-node", "hm-node"]
    assert snapshots[1].time_ns == T0 + STEP_S * 10**9
    return snapshots[1].body


def test_identity(second_body):
    assert second_body["node_name"] == "hm-node"
    assert second_body["hostname"] == "hm-node"
    assert second_body["uptime"] == 86410
    assert second_body["kernel"] == ""


def test_cpu(second_body):
    cpu = second_body["cpu"]
    # 20 s of CPU time per step: 16 s idle, 2 s user, 1 s system, 1 s wait.
    assert cpu["usage_percent"] == pytest.approx(4 / 20 * 100)
    assert cpu["user_percent"] == pytest.approx(2 / 20 * 100)
    assert cpu["system_percent"] == pytest.approx(1 / 20 * 100)
    assert cpu["iowait_percent"] == pytest.approx(1 / 20 * 100)
    assert cpu["idle_percent"] == pytest.approx(16 / 20 * 100)
    assert cpu["per_core"] == pytest.approx([30.0, 10.0])
    assert (cpu["cores"], cpu["threads"]) == (2, 2)
    assert (cpu["load_1"], cpu["load_5"], cpu["load_15"]) == (0.5, 0.25, 0.125)
    assert cpu["frequency"] == pytest.approx(2500.0)


def test_memory(second_body):
    memory = second_body["memory"]
    total = 3 * GIB + 1 * GIB + GIB // 2 + 3 * GIB + GIB // 2  # used + free + buffered + cached
    assert memory["total"] == total
    assert memory["available"] == 4 * GIB
    assert memory["used"] == total - 4 * GIB
    assert (memory["free"], memory["buffers"], memory["cached"]) == (GIB, GIB // 2, 3 * GIB + GIB // 2)
    assert (memory["swap_total"], memory["swap_free"], memory["swap_used"]) == (GIB, 3 * GIB // 4, GIB // 4)
    assert memory["swap_percent"] == pytest.approx(25.0)


def test_filesystem_and_disk(second_body):
    (disk,) = second_body["disks"]
    assert (disk["device"], disk["mount_point"], disk["fs_type"]) == ("/dev/sda1", "/", "ext4")
    assert (disk["total"], disk["used"], disk["available"]) == (100 * GIB, 60 * GIB, 35 * GIB)
    assert disk["usage_percent"] == pytest.approx(60 / 95 * 100)
    assert disk["read_bytes"] == 10**9 + 4_000_000
    assert disk["read_rate"] == pytest.approx(400_000.0)
    assert disk["write_rate"] == pytest.approx(800_000.0)
    assert disk["read_iops"] == pytest.approx(5.0)
    assert disk["write_iops"] == pytest.approx(25.0)
    assert disk["io_util"] == pytest.approx(25.0)


def test_network(second_body):
    (eth0,) = second_body["networks"]
    assert eth0["interface"] == "eth0"
    assert eth0["status"] == "unknown"  # hostmetrics has no link state
    assert eth0["speed"] == 0
    assert eth0["rx_bytes"] == 10**8 + 1_000_000
    assert eth0["rx_rate"] == pytest.approx(100_000.0)
    assert eth0["tx_rate"] == pytest.approx(50_000.0)
    assert (eth0["rx_packets"], eth0["rx_errors"], eth0["tx_dropped"]) == (5010, 3, 7)


def test_sections_without_equivalent_unavailable(second_body):
    assert second_body["unavailable"] == ["ntp", "psi", "softnet", "system", "tcp", "temperature", "vmstat"]


def test_memory_limit_is_total():
    request = collection(0)
    scope = request.resource_metrics[0].scope_metrics[2]
    add_metric(scope, "system.memory.limit", [({}, 16 * GIB)], scope.metrics[0].sum.data_points[0].time_unix_nano, monotonic=False)
    snapshots, _ = run([request])
    assert snapshots[0].body["memory"]["total"] == 16 * GIB
    assert snapshots[0].body["memory"]["used"] == 12 * GIB


def test_scopes_of_one_collection_make_one_snapshot():
    snapshots, _ = run([collection(0)])
    assert len(snapshots) == 1
    assert snapshots[0].time_ns == T0  # the first scraper's time


def test_same_host_from_node_exporter_is_a_conflict():
    text = 'node_uname_info{nodename="hm-node",release="6.1.0"} 1\nnode_load1 2.0\n'
    options = convert.ConvertOptions(job="node-exporter", instance="10.0.0.9:9100")
    node_exporter = decode.decode_request(convert.exposition_to_request(promtext.parse(text), T0, options)).batch
    processor = NodeSnapshotProcessor(NodeSnapshotConfig(scrape_wait_s=0), ComponentContext("node_snapshot"))
    first = processor.process(decode.decode_request(collection(0)).batch, T0)
    second = processor.process(node_exporter, T0)
    assert [item.body["cpu"]["load_1"] for item in first] == [0.5]
    assert second == []
    assert processor.telemetry.get(DROPPED_SNAPSHOTS, processor="node_snapshot", reason="name_conflict") == 1


# Newer names for the same values. Semantic conventions v1.31 to v1.34 named
# the CPU metrics cpu.time and cpu.frequency; v1.35 renamed them back to
# system.cpu.*. The attribute names are the conventions' current ones.
NAMES_V1_31 = {"system.cpu.time": "cpu.time", "system.cpu.frequency": "cpu.frequency"}
NAMES_CURRENT = {
    "system.linux.memory.available": "system.memory.linux.available",
    "system.network.packets": "system.network.packet.count",
    "system.network.dropped": "system.network.packet.dropped",
}
ATTRIBUTES_CURRENT = {
    "cpu": "cpu.logical_number",
    "device": "system.device",
    "mountpoint": "system.filesystem.mountpoint",
    "type": "system.filesystem.type",
    "mode": "system.filesystem.mode",
}
STATE_ATTRIBUTE = {
    "cpu.time": "cpu.mode",
    "system.cpu.time": "cpu.mode",
    "system.memory.usage": "system.memory.state",
    "system.paging.usage": "system.paging.state",
    "system.filesystem.usage": "system.filesystem.state",
}
# Attribute values that changed with the attribute: cpu.mode has iowait
# where the receiver's state has wait, and system.memory.state has buffers
# where the receiver's state has buffered.
VALUES_CURRENT = {("cpu.mode", "wait"): "iowait", ("system.memory.state", "buffered"): "buffers"}


def with_newer_names(request: ExportMetricsServiceRequest, metric_names: dict[str, str]) -> ExportMetricsServiceRequest:
    """Rename metrics and attributes of a hostmetrics request to the conventions' names."""
    renamed = ExportMetricsServiceRequest()
    renamed.CopyFrom(request)
    for scope in renamed.resource_metrics[0].scope_metrics:
        for metric in scope.metrics:
            metric.name = metric_names.get(metric.name, metric.name)
            kind = metric.WhichOneof("data")
            for point in getattr(metric, kind).data_points:
                attributes = []
                for attribute in point.attributes:
                    name = attribute.key
                    value = attribute.value.string_value
                    if name == "state":
                        name = STATE_ATTRIBUTE[metric.name]
                    elif name == "direction":
                        name = "disk.io.direction" if metric.name.startswith("system.disk.") else "network.io.direction"
                    elif name == "device" and metric.name.startswith("system.network."):
                        name = "network.interface.name"
                    else:
                        name = ATTRIBUTES_CURRENT.get(name, name)
                    value = VALUES_CURRENT.get((name, value), value)
                    if name == "cpu.logical_number":
                        # An int attribute in the conventions: "cpu1" → 1.
                        attributes.append(KeyValue(key=name, value={"int_value": int(value[3:])}))
                    else:
                        attributes.append(KeyValue(key=name, value={"string_value": value}))
                del point.attributes[:]
                point.attributes.extend(attributes)
    return renamed


def test_newer_names_request_is_renamed():
    # Checks the helper itself, so the equality tests below cannot pass
    # because nothing was renamed.
    request = with_newer_names(collection(1), {**NAMES_V1_31, **NAMES_CURRENT})
    names = {m.name for s in request.resource_metrics[0].scope_metrics for m in s.metrics}
    assert {"cpu.time", "cpu.frequency", "system.memory.linux.available", "system.network.packet.count"} <= names
    assert "system.cpu.time" not in names
    cpu_time = request.resource_metrics[0].scope_metrics[0].metrics[0]
    first = {a.key: a.value for a in cpu_time.sum.data_points[2].attributes}
    assert first["cpu.logical_number"].int_value == 0
    assert first["cpu.mode"].string_value == "iowait"


@pytest.mark.parametrize(
    "metric_names",
    [pytest.param(NAMES_CURRENT, id="current"), pytest.param({**NAMES_V1_31, **NAMES_CURRENT}, id="v1.31-v1.34")],
)
def test_newer_names_give_same_snapshot(metric_names, second_body):
    snapshots, _ = run([with_newer_names(collection(0), metric_names), with_newer_names(collection(1), metric_names)])
    assert [s.key for s in snapshots] == ["hm-node", "hm-node"]
    assert snapshots[1].body == second_body


def test_newer_names_fill_cpu_and_memory():
    # The same values as test_cpu and test_memory, by the renamed route.
    names = {**NAMES_V1_31, **NAMES_CURRENT}
    snapshots, _ = run([with_newer_names(collection(0), names), with_newer_names(collection(1), names)])
    cpu = snapshots[1].body["cpu"]
    memory = snapshots[1].body["memory"]
    assert cpu["iowait_percent"] == pytest.approx(1 / 20 * 100)
    assert cpu["per_core"] == pytest.approx([30.0, 10.0])
    assert cpu["frequency"] == pytest.approx(2500.0)
    assert memory["available"] == 4 * GIB
    assert memory["buffers"] == GIB // 2
    assert snapshots[1].body["disks"][0]["fs_type"] == "ext4"
    assert snapshots[1].body["networks"][0]["tx_dropped"] == 7
