"""The filter processor on real node_exporter data and on invented edge cases.

The normal path runs the six-node sample (real node_exporter v1.9.0 text)
through the converter and decoder. Expected values are read from the text
with regular expressions in this file, not through the processor's code.
Partitions next to their parent disk, hostmetrics names, trimmed names and
unknown metrics do not occur in that sample. Those tests build invented
data, and their comments say so.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from pipeline import convert, decode, promtext
from pipeline.component import ComponentContext, ConfigError, Snapshot
from pipeline.model import Metric, MetricKind, ResourceMetrics
from pipeline.telemetry import Telemetry
from processors.filter import (
    BlockDevicesConfig,
    FilterConfig,
    FilterProcessor,
    MetricsConfig,
    NetworkInterfacesConfig,
    device_name,
    partition_parent,
)

SAMPLE_DIR = Path(__file__).parent.parent / "testdata" / "atlhyper-six-nodes"
SIX_NODES = SAMPLE_DIR / "otel_all_nodes.txt"
T0 = 1_766_400_000_000_000_000
DROPPED = "otelsnap_processor_dropped_points"

LINE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


def read_lines(path: Path = SIX_NODES) -> list[tuple[str, dict[str, str]]]:
    """Parse exposition lines with a regex: (name, labels) per sample."""
    out = []
    for line in path.read_text().splitlines():
        match = LINE.match(line)
        if match:
            out.append((match["name"], dict(LABEL.findall(match["labels"]))))
    return out


def instance_of(node: str) -> str:
    """Find a node's instance through its node_uname_info line."""
    for name, labels in read_lines():
        if name == "otel_node_uname_info" and labels["nodename"] == node:
            return labels["instance"]
    raise AssertionError(f"no uname line for {node}")


def batch_from_text(text: str, time_ns: int = T0, strip_prefix: str = "otel_"):
    exposition = promtext.parse(text)
    options = convert.ConvertOptions(strip_prefix=strip_prefix)
    request = convert.exposition_to_request(exposition, time_ns, options)
    return decode.decode_request(request).batch


def six_node_batch(strip_prefix: str = "otel_"):
    return batch_from_text(SIX_NODES.read_text(), strip_prefix=strip_prefix)


def make_filter(config: FilterConfig | None = None, component_id: str = "filter/node"):
    config = config or FilterConfig()
    config.validate()
    telemetry = Telemetry()
    processor = FilterProcessor(config, ComponentContext(component_id=component_id, telemetry=telemetry))
    processor.start()
    return processor, telemetry


def resource(batch, instance: str) -> ResourceMetrics:
    return next(rm for rm in batch if rm.attrs["service.instance.id"] == instance)


def label_values(rm: ResourceMetrics, prefix: str, label: str) -> set[str]:
    return {
        a[label]
        for m in rm.metrics
        if m.name.removeprefix("otel_").startswith(prefix)
        for a in m.attrs
    }


def drops(telemetry: Telemetry, reason: str) -> float:
    return telemetry.get(DROPPED, processor="filter/node", reason=reason)


def point_count(batch) -> int:
    return sum(len(m.values) for rm in batch for m in rm.metrics)


# Independent restatement of the default network rule, for counting in the text.
VIRTUAL_INTERFACE = re.compile(
    r"^(lo|veth.*|flannel.*|cni.*|cali.*|docker.*|br-.*|virbr.*|vxlan.*|tunl.*|kube-ipvs.*"
    r"|cilium.*|lxc.*|tap.*|tun.*|ifb.*|dummy.*|vnet.*)$"
)
NOISE_BLOCK_DEVICE = re.compile(r"^(dm-\d+|loop\d+|ram\d+|zram\d+|sr\d+|fd\d+)$")


def expected_drops(lines) -> dict[str, int]:
    drops = {"filesystem_device": 0, "network_interface": 0, "block_device": 0}
    for name, labels in lines:
        device = labels.get("device", "")
        if name.startswith("otel_node_filesystem_") and not device.startswith("/dev/"):
            drops["filesystem_device"] += 1
        elif name.startswith("otel_node_network_") and VIRTUAL_INTERFACE.match(device):
            drops["network_interface"] += 1
        elif name.startswith("otel_node_disk_") and NOISE_BLOCK_DEVICE.match(device):
            drops["block_device"] += 1
    return drops


# -- six-node data ----------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "mountpoints"),
    [
        ("desk-zero", {"/", "/boot", "/boot/efi"}),
        ("raspi-zero", {"/", "/boot/firmware"}),
    ],
)
def test_kept_filesystems_per_node(node, mountpoints):
    processor, _ = make_filter()
    out = processor.process(six_node_batch(), T0)
    rm = resource(out, instance_of(node))
    assert label_values(rm, "node_filesystem_", "mountpoint") == mountpoints
    assert all(d.startswith("/dev/") for d in label_values(rm, "node_filesystem_", "device"))


@pytest.mark.parametrize(
    ("node", "interfaces"),
    [
        ("desk-zero", {"eno1"}),
        ("desk-one", {"eno1"}),  # docker0 is dropped
        ("raspi-zero", {"eth0", "wlan0"}),
    ],
)
def test_kept_interfaces_per_node(node, interfaces):
    processor, _ = make_filter()
    out = processor.process(six_node_batch(), T0)
    rm = resource(out, instance_of(node))
    assert label_values(rm, "node_network_", "device") == interfaces


def test_docker0_is_in_the_input():
    # Guards the test above: the sample really reports docker0 on desk-one.
    desk_one = instance_of("desk-one")
    assert any(
        labels.get("device") == "docker0" and labels["instance"] == desk_one
        for _, labels in read_lines()
    )


def test_device_mapper_disk_dropped():
    processor, _ = make_filter()
    out = processor.process(six_node_batch(), T0)
    for node, disks in [("desk-zero", {"sda"}), ("raspi-nfs", {"nvme0n1", "sda", "sdb"})]:
        rm = resource(out, instance_of(node))
        assert label_values(rm, "node_disk_", "device") == disks
    all_disks = {d for rm in out for d in label_values(rm, "node_disk_", "device")}
    assert "dm-0" not in all_disks


def test_dropped_counts_match_text():
    lines = read_lines()
    expected = expected_drops(lines)
    processor, telemetry = make_filter()
    out = processor.process(six_node_batch(), T0)

    for reason, count in expected.items():
        assert drops(telemetry, reason) == count
    assert drops(telemetry, "metric_not_included") == 0
    assert point_count(out) == len(lines) - sum(expected.values())
    # The sample has noise of every kind, so each count above is > 0.
    assert all(count > 0 for count in expected.values())


def test_prefixed_names_filter_like_plain_names():
    plain, _ = make_filter()
    prefixed, telemetry = make_filter()
    out_plain = plain.process(six_node_batch(), T0)
    out_prefixed = prefixed.process(six_node_batch(strip_prefix=""), T0)
    assert point_count(out_prefixed) == point_count(out_plain)
    names = {m.name for rm in out_prefixed for m in rm.metrics}
    assert all(n.startswith("otel_") for n in names)  # not renamed
    assert drops(telemetry, "metric_not_included") == 0


def test_trimmed_names_filter_like_full_names():
    # Invented variant of the real text: the suffixes a collector's
    # trim_metric_suffixes option removes (_total, then a unit suffix).
    text = SIX_NODES.read_text()
    trimmed = re.sub(r"^(otel_node_\w+?)(_seconds|_bytes)?_total\{", r"\1{", text, flags=re.M)
    assert "otel_node_network_receive{" in trimmed
    assert "otel_node_cpu{" in trimmed

    full, _ = make_filter()
    short, telemetry = make_filter()
    out_full = full.process(six_node_batch(), T0)
    out_short = short.process(batch_from_text(trimmed), T0)
    assert point_count(out_short) == point_count(out_full)
    expected = expected_drops(read_lines())
    assert drops(telemetry, "network_interface") == expected["network_interface"]


def test_input_lists_and_attrs_unchanged():
    batch = six_node_batch()
    columns = [
        (column, list(column))
        for rm in batch
        for m in rm.metrics
        for column in (m.attrs, m.times, m.values)
    ]
    metric_lists = [(rm.metrics, list(rm.metrics)) for rm in batch]
    attrs_copies = [(a, dict(a)) for rm in batch for m in rm.metrics for a in m.attrs]
    processor, _ = make_filter()
    processor.process(batch, T0)
    assert all(column == copy for column, copy in columns)
    assert all(metrics == copy for metrics, copy in metric_lists)
    assert all(a == copy for a, copy in attrs_copies)


def test_received_column_lists_not_mutated():
    batch = six_node_batch()
    rm = resource(batch, instance_of("desk-zero"))
    fs = next(m for m in rm.metrics if m.name == "node_filesystem_size_bytes")
    original_attrs, original_values = fs.attrs, fs.values
    original_len = len(original_values)
    metrics_list = rm.metrics
    metrics_len = len(metrics_list)
    processor, _ = make_filter()
    processor.process(batch, T0)
    assert len(original_attrs) == original_len
    assert len(original_values) == original_len
    assert len(metrics_list) == metrics_len
    assert len(fs.values) == 3  # the replaced column contains the kept points


# -- metric allow-list (invented names) ---------------------------------------


def gauge(name: str, attrs: list[dict[str, str]], value: float = 1.0) -> Metric:
    return Metric(
        name=name,
        kind=MetricKind.GAUGE,
        attrs=attrs,
        times=[T0] * len(attrs),
        values=[value] * len(attrs),
    )


def node_resource(metrics: list[Metric], instance: str = "10.0.0.1:9100") -> ResourceMetrics:
    return ResourceMetrics(
        attrs={"service.name": "node-exporter", "service.instance.id": instance},
        metrics=metrics,
    )


class ExplodingAttrs(dict):
    """An attribute dict that fails the test when a filter reads it."""

    def get(self, *args):
        raise AssertionError("a point of a dropped metric was read")

    def __getitem__(self, key):
        raise AssertionError("a point of a dropped metric was read")


def test_unknown_metric_dropped_before_point_work():
    # Invented: the collector's own scrape metrics arrive on every target.
    up = gauge("up", [ExplodingAttrs(), ExplodingAttrs()])
    duration = gauge("scrape_duration_seconds", [ExplodingAttrs()])
    load = gauge("node_load1", [{}])
    processor, telemetry = make_filter()
    out = processor.process([node_resource([up, duration, load])], T0)
    assert [m.name for m in out[0].metrics] == ["node_load1"]
    assert drops(telemetry, "metric_not_included") == 3


def test_unknown_metrics_in_real_text_dropped():
    # Invented lines appended to the real text: three series of families
    # the snapshot does not read.
    extra = (
        'otel_up{instance="192.168.0.130:9100",job="node-exporter"} 1\n'
        'otel_node_textfile_scrape_error{instance="192.168.0.130:9100",job="node-exporter"} 0\n'
        'otel_node_filesystem_files{device="/dev/sda2",fstype="ext4",instance="192.168.0.130:9100",'
        'job="node-exporter",mountpoint="/boot"} 131072\n'
    )
    processor, telemetry = make_filter()
    out = processor.process(batch_from_text(SIX_NODES.read_text() + extra), T0)
    names = {m.name for rm in out for m in rm.metrics}
    assert not names & {"up", "node_textfile_scrape_error", "node_filesystem_files"}
    assert drops(telemetry, "metric_not_included") == 3


def test_include_glob_adds_metric_and_device_rule_applies():
    # Invented: node_filesystem_files is not a snapshot family; included by
    # a glob, it still goes through the filesystem device rule.
    config = FilterConfig(metrics=MetricsConfig(include=["node_filesystem_files*"]))
    files = gauge(
        "otel_node_filesystem_files",
        [{"device": "/dev/sda2", "mountpoint": "/boot"}, {"device": "tmpfs", "mountpoint": "/run"}],
    )
    processor, telemetry = make_filter(config)
    out = processor.process([node_resource([files])], T0)
    assert out[0].metrics[0].attrs == [{"device": "/dev/sda2", "mountpoint": "/boot"}]
    assert drops(telemetry, "filesystem_device") == 1


def test_include_exact_name_matches_trimmed_variant():
    # Invented: a non-snapshot counter that a collector sent with _total trimmed.
    config = FilterConfig(
        metrics=MetricsConfig(include_snapshot_families=False, include=["node_forks_total"])
    )
    processor, telemetry = make_filter(config)
    batch = [node_resource([gauge("otel_node_forks", [{}]), gauge("node_load1", [{}])])]
    out = processor.process(batch, T0)
    assert [m.name for m in out[0].metrics] == ["otel_node_forks"]
    assert drops(telemetry, "metric_not_included") == 1


def test_exclude_wins_over_families():
    config = FilterConfig(metrics=MetricsConfig(exclude=["node_hwmon_*"]))
    processor, telemetry = make_filter(config)
    out = processor.process(six_node_batch(), T0)
    hwmon_lines = sum(1 for name, _ in read_lines() if name.startswith("otel_node_hwmon_"))
    assert not any(m.name.startswith("node_hwmon_") for rm in out for m in rm.metrics)
    assert drops(telemetry, "metric_not_included") == hwmon_lines


# -- network and filesystem options ------------------------------------------


def test_network_exclude_override_keeps_listed_interface():
    # Keep flannel.1 by restating the exclude list without flannel*; also
    # drop the bond slave eno1 (invented need: it would double count).
    exclude = [p for p in NetworkInterfacesConfig().device_exclude if p != "flannel*"] + ["eno1"]
    config = FilterConfig(network_interfaces=NetworkInterfacesConfig(device_exclude=exclude))
    processor, _ = make_filter(config)
    out = processor.process(six_node_batch(), T0)
    rm = resource(out, instance_of("desk-zero"))
    assert label_values(rm, "node_network_", "device") == {"flannel.1"}


def test_network_include_is_an_allow_list():
    config = FilterConfig(network_interfaces=NetworkInterfacesConfig(device_include=["eth*"]))
    processor, _ = make_filter(config)
    out = processor.process(six_node_batch(), T0)
    assert label_values(resource(out, instance_of("desk-zero")), "node_network_", "device") == set()
    assert label_values(resource(out, instance_of("raspi-zero")), "node_network_", "device") == {
        "eth0"
    }


# -- block devices and partitions (invented device sets) ---------------------


@pytest.mark.parametrize(
    ("device", "parent"),
    [
        ("sda1", "sda"),
        ("sdab1", "sdab"),
        ("sda12", "sda"),
        ("nvme0n1p2", "nvme0n1"),
        ("mmcblk0p1", "mmcblk0"),
        ("vda2", "vda"),
        ("xvda1", "xvda"),
        ("hda3", "hda"),
        ("md0p1", "md0"),
        ("sda", None),
        ("sdab", None),
        ("nvme0n1", None),
        ("mmcblk0", None),
        ("vda", None),
        ("dm-0", None),
        ("md0", None),
        ("eno1", None),
    ],
)
def test_partition_parent(device, parent):
    assert partition_parent(device) == parent


def disk_metric(devices: list[str], name: str = "node_disk_read_bytes_total") -> Metric:
    metric = gauge(name, [{"device": d} for d in devices], 100.0)
    metric.kind = MetricKind.SUM
    metric.monotonic = True
    return metric


def kept_devices(out) -> list[str]:
    return [a["device"] for rm in out for m in rm.metrics for a in m.attrs]


@pytest.mark.parametrize(
    ("reported", "kept"),
    [
        (["sdab", "sda1"], ["sdab", "sda1"]),  # sda1 is not a partition of sdab
        (["sda", "sdab1"], ["sda", "sdab1"]),  # sdab1 is not a partition of sda
        (["sda", "sda1", "sdab", "sdab1"], ["sda", "sdab"]),
        (["nvme0n1", "nvme0n1p1", "nvme0n1p2"], ["nvme0n1"]),
        (["mmcblk0", "mmcblk0p1", "mmcblk0p2"], ["mmcblk0"]),
        (["mmcblk0p1", "mmcblk0p2"], ["mmcblk0p1", "mmcblk0p2"]),  # parent not reported
        (["mmcblk1", "mmcblk0p1"], ["mmcblk1", "mmcblk0p1"]),
        (["dm-0", "dm-0p1"], []),  # dm-0 is dropped, so it is no reported parent
        (["sda", "loop0", "ram1", "zram0", "sr0", "fd0"], ["sda"]),
    ],
)
def test_partitions_of_reported_disks_dropped(reported, kept):
    processor, telemetry = make_filter()
    out = processor.process([node_resource([disk_metric(reported)])], T0)
    assert kept_devices(out) == kept
    assert drops(telemetry, "block_device") == len(reported) - len(kept)


def test_partition_rule_survives_split_scrape():
    processor, telemetry = make_filter()
    first = processor.process(
        [node_resource([disk_metric(["mmcblk0"], "node_disk_read_bytes_total")])], T0
    )
    second = processor.process(
        [node_resource([disk_metric(["mmcblk0p1"], "node_disk_written_bytes_total")])], T0
    )
    assert kept_devices(first) == ["mmcblk0"]
    assert second == []  # the resource lost its only metric, so it is dropped
    assert drops(telemetry, "block_device") == 1


def test_partition_rule_is_per_resource():
    processor, _ = make_filter()
    batch = [
        node_resource([disk_metric(["mmcblk0"])], instance="10.0.0.1:9100"),
        node_resource([disk_metric(["mmcblk0p1"])], instance="10.0.0.2:9100"),
    ]
    out = processor.process(batch, T0)
    assert kept_devices(out) == ["mmcblk0", "mmcblk0p1"]


def test_parent_later_in_same_batch_counts():
    # The partition's metric comes first in the batch, its parent's later.
    processor, _ = make_filter()
    batch = [
        node_resource([disk_metric(["mmcblk0p1"], "node_disk_io_time_seconds_total")]),
        node_resource([disk_metric(["mmcblk0"], "node_disk_read_bytes_total")]),
    ]
    out = processor.process(batch, T0)
    assert kept_devices(out) == ["mmcblk0"]


def test_partition_rule_can_be_disabled():
    config = FilterConfig(block_devices=BlockDevicesConfig(drop_partitions_of_reported_disks=False))
    processor, _ = make_filter(config)
    out = processor.process([node_resource([disk_metric(["mmcblk0", "mmcblk0p1"])])], T0)
    assert kept_devices(out) == ["mmcblk0", "mmcblk0p1"]


def test_tracked_resources_bounded(caplog):
    config = FilterConfig(block_devices=BlockDevicesConfig(max_tracked_resources=2))
    processor, _ = make_filter(config, component_id="filter/bounded")
    with caplog.at_level(logging.WARNING, logger="otelsnap"):
        for host in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
            rm = node_resource([disk_metric(["mmcblk0"])], instance=f"{host}:9100")
            processor.process([rm], T0)
    assert len(processor._disks) == 2
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["filter_resource_forgotten"]
    fields = caplog.records[0].event_fields
    assert fields["resource"] == "service.name=node-exporter,service.instance.id=10.0.0.1:9100"
    # The least recently reporting resource was forgotten, so its partition
    # is kept until its parent is reported again; the others still drop it.
    forgotten = node_resource([disk_metric(["mmcblk0p1"])], instance="10.0.0.1:9100")
    remembered = node_resource([disk_metric(["mmcblk0p1"])], instance="10.0.0.3:9100")
    assert kept_devices(processor.process([forgotten], T0)) == ["mmcblk0p1"]
    assert kept_devices(processor.process([remembered], T0)) == []


def test_reporting_resource_stays_tracked():
    config = FilterConfig(block_devices=BlockDevicesConfig(max_tracked_resources=2))
    processor, _ = make_filter(config)
    # 10.0.0.1 reports again before 10.0.0.3 arrives, so 10.0.0.2 is the
    # least recently reporting resource and is forgotten.
    for host in ("10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.3"):
        processor.process([node_resource([disk_metric(["mmcblk0"])], instance=f"{host}:9100")], T0)
    partition = node_resource([disk_metric(["mmcblk0p1"])], instance="10.0.0.1:9100")
    assert kept_devices(processor.process([partition], T0)) == []
    partition = node_resource([disk_metric(["mmcblk0p1"])], instance="10.0.0.2:9100")
    assert kept_devices(processor.process([partition], T0)) == ["mmcblk0p1"]


# -- hostmetrics names (invented points in the receiver's shape) -------------


def test_hostmetrics_device_rules():
    filesystem = gauge(
        "system.filesystem.usage",
        [
            {"device": "/dev/sda2", "mountpoint": "/", "type": "ext4", "state": "used"},
            {"device": "tmpfs", "mountpoint": "/run", "type": "tmpfs", "state": "used"},
            {"device": "overlay", "mountpoint": "/var/lib/x", "type": "overlay", "state": "used"},
        ],
    )
    network = disk_metric(["eth0", "lo", "veth1a2b", "cali123", "wg0", "bond0"], "system.network.io")
    disk = disk_metric(["sda", "sda1", "sda2", "dm-0", "loop3"], "system.disk.io")
    rm = ResourceMetrics(attrs={"host.name": "desk-zero"}, metrics=[filesystem, network, disk])
    processor, telemetry = make_filter()
    out = processor.process([rm], T0)
    kept = {m.name: [a["device"] for a in m.attrs] for m in out[0].metrics}
    assert kept == {
        "system.filesystem.usage": ["/dev/sda2"],
        "system.network.io": ["eth0", "wg0", "bond0"],
        "system.disk.io": ["sda"],
    }
    assert drops(telemetry, "filesystem_device") == 2
    assert drops(telemetry, "network_interface") == 3
    assert drops(telemetry, "block_device") == 4


def test_hostmetrics_newer_device_attributes():
    # Newer semantic conventions: system.device and network.interface.name.
    filesystem = gauge(
        "system.filesystem.usage",
        [
            {"system.device": "/dev/sda2", "system.filesystem.mountpoint": "/", "system.filesystem.state": "used"},
            {"system.device": "tmpfs", "system.filesystem.mountpoint": "/run", "system.filesystem.state": "used"},
        ],
    )
    network = gauge(
        "system.network.io",
        [{"network.interface.name": name, "network.io.direction": "receive"} for name in ("eth0", "lo", "veth9")],
    )
    disk = gauge("system.disk.io", [{"system.device": name, "disk.io.direction": "read"} for name in ("sda", "dm-0")])
    rm = ResourceMetrics(attrs={"host.name": "desk-zero"}, metrics=[filesystem, network, disk])
    processor, telemetry = make_filter()
    out = processor.process([rm], T0)
    kept = {m.name: [device_name(a) for a in m.attrs] for m in out[0].metrics}
    assert kept == {
        "system.filesystem.usage": ["/dev/sda2"],
        "system.network.io": ["eth0"],
        "system.disk.io": ["sda"],
    }
    assert drops(telemetry, "filesystem_device") == 1
    assert drops(telemetry, "network_interface") == 2
    assert drops(telemetry, "block_device") == 1


# -- pass-through and empty output -------------------------------------------


def test_snapshots_pass_and_empty_resources_dropped():
    snapshot = Snapshot(kind="node", key="desk-zero", time_ns=T0, body={})
    noise = node_resource([gauge("up", [{}])])
    kept = node_resource([gauge("node_load1", [{}])], instance="10.0.0.2:9100")
    processor, _ = make_filter()
    out = processor.process([snapshot, noise, kept], T0)
    assert out == [snapshot, kept]


def test_unchanged_resource_is_passed_as_is():
    rm = node_resource([gauge("node_load1", [{}]), gauge("node_load5", [{}])])
    metrics = rm.metrics
    processor, _ = make_filter()
    out = processor.process([rm], T0)
    assert out[0] is rm
    assert out[0].metrics is metrics


# -- config validation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "path"),
    [
        (FilterConfig(metrics=MetricsConfig(include=[""])), "metrics.include[0]"),
        (FilterConfig(metrics=MetricsConfig(exclude=["node_*", 3])), "metrics.exclude[1]"),
        (FilterConfig(metrics=MetricsConfig(include_snapshot_families=False)), "metrics.include"),
        (
            FilterConfig(metrics=MetricsConfig(include=["node_forks_total", "node_forks"])),
            "metrics.include",
        ),
        (FilterConfig(name_prefixes=[""]), "name_prefixes[0]"),
        (
            FilterConfig(block_devices=BlockDevicesConfig(max_tracked_resources=0)),
            "block_devices.max_tracked_resources",
        ),
        (
            FilterConfig(network_interfaces=NetworkInterfacesConfig(device_exclude="lo")),
            "network_interfaces.device_exclude",
        ),
    ],
)
def test_invalid_config_names_key(config, path):
    with pytest.raises(ConfigError) as err:
        config.validate()
    assert err.value.path == path


def test_default_config_is_valid():
    FilterConfig().validate()
