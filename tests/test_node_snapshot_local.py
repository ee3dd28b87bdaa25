"""The node snapshot on a real node_exporter capture taken under load.

testdata/node-exporter-local contains five raw scrapes of node_exporter 1.5.0
(with ``# TYPE`` lines) and their scrape times. They are converted as a
collector's prometheus receiver would (job ``node-exporter``, instance
``127.0.0.1:9100``) and run through filter → delta_rate → node_snapshot.
The expected CPU usage, disk rates and pressure percentages are computed
in this file straight from the raw text with a regular expression, not
through the product's parser or processors.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline import convert, decode, promtext
from pipeline.component import ComponentContext, Exporter, Snapshot
from pipeline.runtime import Pipeline
from processors.delta_rate import DeltaRateConfig, DeltaRateProcessor
from processors.filter import FilterConfig, FilterProcessor
from processors.node_snapshot import NodeSnapshotConfig, NodeSnapshotProcessor

CAPTURE = Path(__file__).parent.parent / "testdata" / "node-exporter-local"
CPU_MODES = ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user")
LINE = re.compile(r"^(?P<name>\w+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$", re.MULTILINE)
LABEL = re.compile(r'(\w+)="([^"]*)"')


class ListExporter(Exporter):
    type_name = "list"

    def __init__(self) -> None:
        super().__init__(None, ComponentContext("list"))
        self.items: list = []

    def export(self, items, now_ns):
        self.items.extend(items)


def scrapes() -> list[tuple[str, int]]:
    """(raw text, scrape time in Unix ns) of each captured scrape, in order."""
    out = []
    for line in (CAPTURE / "times.txt").read_text().splitlines():
        name, unix_ms = line.split()
        out.append(((CAPTURE / name).read_text(), int(unix_ms) * 1_000_000))
    return out


def raw_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (m["name"], dict(LABEL.findall(m["labels"] or "")), float(m["value"]))
        for m in LINE.finditer(text)
    ]


def raw_sum(text: str, name: str, **labels: str) -> float:
    return sum(
        value
        for sample_name, sample_labels, value in raw_samples(text)
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
    )


def raw_cpu(text: str, cpu: str | None = None) -> tuple[float, float]:
    """Return (total seconds over the eight modes, idle seconds), of one CPU or all."""
    total = idle = 0.0
    for name, labels, value in raw_samples(text):
        if name != "node_cpu_seconds_total" or labels["mode"] not in CPU_MODES:
            continue
        if cpu is not None and labels["cpu"] != cpu:
            continue
        total += value
        if labels["mode"] == "idle":
            idle += value
    return total, idle


@pytest.fixture(scope="module")
def snapshots() -> list[Snapshot]:
    pipeline_snapshot = NodeSnapshotProcessor(NodeSnapshotConfig(), ComponentContext("node_snapshot"))
    exporter = ListExporter()
    pipeline = Pipeline(
        "node",
        [
            FilterProcessor(FilterConfig(), ComponentContext("filter")),
            DeltaRateProcessor(DeltaRateConfig(), ComponentContext("delta_rate")),
            pipeline_snapshot,
        ],
        [exporter],
    )
    options = convert.ConvertOptions(job="node-exporter", instance="127.0.0.1:9100")
    last_ns = 0
    for text, time_ns in scrapes():
        request = convert.exposition_to_request(promtext.parse(text), time_ns, options)
        pipeline.consume(decode.decode_request(request).batch, time_ns)
        last_ns = time_ns
    pipeline.drain(last_ns)
    return [item for item in exporter.items if isinstance(item, Snapshot)]


def intervals():
    """Consecutive scrape pairs: (previous text, current text, seconds between them)."""
    captured = scrapes()
    return [(a[0], b[0], (b[1] - a[1]) / 1e9) for a, b in zip(captured, captured[1:])]


def test_one_snapshot_per_scrape(snapshots):
    captured = scrapes()
    assert [s.time_ns for s in snapshots] == [time_ns for _, time_ns in captured]
    uname = re.search(r"^node_uname_info\{([^}]*)\}", captured[0][0], re.MULTILINE)
    labels = dict(LABEL.findall(uname[1]))
    assert {s.key for s in snapshots} == {labels["nodename"]}
    assert snapshots[0].body["kernel"] == labels["release"]


def test_first_snapshot_has_no_rates(snapshots):
    first = snapshots[0].body
    assert first["cpu"]["usage_percent"] == 0.0
    assert set(first["psi"].values()) == {0.0}
    assert first["disks"][0]["write_rate"] == 0.0


def test_cpu_usage_matches_raw_text(snapshots):
    for body, (before, after, _) in zip((s.body for s in snapshots[1:]), intervals()):
        total_before, idle_before = raw_cpu(before)
        total_after, idle_after = raw_cpu(after)
        d_total, d_idle = total_after - total_before, idle_after - idle_before
        assert body["cpu"]["usage_percent"] == pytest.approx((d_total - d_idle) / d_total * 100)
        for cpu, usage in enumerate(body["cpu"]["per_core"]):
            core_before = raw_cpu(before, str(cpu))
            core_after = raw_cpu(after, str(cpu))
            core_total = core_after[0] - core_before[0]
            assert usage == pytest.approx((core_total - (core_after[1] - core_before[1])) / core_total * 100)
        # The capture ran three busy loops on two CPUs between scrapes.
        assert body["cpu"]["usage_percent"] > 50


def test_disk_rates_match_raw_text(snapshots):
    for body, (before, after, dt) in zip((s.body for s in snapshots[1:]), intervals()):
        (root,) = body["disks"]  # zram0 is dropped by the filter; vda carries /
        assert (root["device"], root["mount_point"]) == ("/dev/vda", "/")
        written = raw_sum(after, "node_disk_written_bytes_total", device="vda") - raw_sum(
            before, "node_disk_written_bytes_total", device="vda"
        )
        writes = raw_sum(after, "node_disk_writes_completed_total", device="vda") - raw_sum(
            before, "node_disk_writes_completed_total", device="vda"
        )
        io_time = raw_sum(after, "node_disk_io_time_seconds_total", device="vda") - raw_sum(
            before, "node_disk_io_time_seconds_total", device="vda"
        )
        assert root["write_rate"] == pytest.approx(written / dt)
        assert root["write_iops"] == pytest.approx(writes / dt)
        assert root["io_util"] == pytest.approx(min(io_time / dt * 100, 100.0))
        assert root["write_bytes"] == int(raw_sum(after, "node_disk_written_bytes_total", device="vda"))
        # Each interval wrote a 64 MiB file.
        assert written >= 64 * 1024 * 1024


def test_filesystem_usage_matches_df(snapshots):
    text = scrapes()[-1][0]
    size = raw_sum(text, "node_filesystem_size_bytes", mountpoint="/")
    free = raw_sum(text, "node_filesystem_free_bytes", mountpoint="/")
    avail = raw_sum(text, "node_filesystem_avail_bytes", mountpoint="/")
    root = snapshots[-1].body["disks"][0]
    assert root["used"] == int(size) - int(free)
    assert root["usage_percent"] == pytest.approx((size - free) / (size - free + avail) * 100)


@pytest.mark.parametrize(
    ("field", "metric"),
    [
        ("cpu_some_percent", "node_pressure_cpu_waiting_seconds_total"),
        ("memory_some_percent", "node_pressure_memory_waiting_seconds_total"),
        ("memory_full_percent", "node_pressure_memory_stalled_seconds_total"),
        ("io_some_percent", "node_pressure_io_waiting_seconds_total"),
        ("io_full_percent", "node_pressure_io_stalled_seconds_total"),
    ],
)
def test_psi_matches_raw_text(snapshots, field, metric):
    for body, (before, after, dt) in zip((s.body for s in snapshots[1:]), intervals()):
        stalled = raw_sum(after, metric) - raw_sum(before, metric)
        assert body["psi"][field] == pytest.approx(min(stalled / dt * 100, 100.0))


def test_cpu_pressure_under_load(snapshots):
    assert all(s.body["psi"]["cpu_some_percent"] > 10 for s in snapshots[1:])


def test_other_fields(snapshots):
    body = snapshots[-1].body
    assert body["cpu"]["model"] == "AMD EPYC"
    assert body["cpu"]["cores"] == 2
    assert body["os"] == "Debian GNU/Linux 12 (bookworm)"
    assert [n["interface"] for n in body["networks"]] == ["eth0"]
    assert body["networks"][0]["speed"] == 0  # node_exporter reports -125000
    assert body["networks"][0]["mac_address"] == "02:fc:00:00:00:01"
    assert body["unavailable"] == ["temperature"]
    assert body["temperature"] == {"cpu_temp": 0.0, "cpu_temp_max": 0.0, "sensors": []}
