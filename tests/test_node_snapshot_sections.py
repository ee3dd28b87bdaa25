"""Table tests of the node snapshot's sections on invented edge cases.

The six-node sample has no AMD or multi-socket machines, no Raspberry Pi 5
without thermal zones, no bind mounts, no sdab disks and no gaps in CPU
ids, so the inputs here are small invented node_exporter texts. They go
through the real converter and decoder into the node_snapshot processor.
The deltas and intervals that delta_rate would set are computed by
``pair_counters`` in this file from two scrapes. So these tests check the
snapshot's own rules only, and the end-to-end tests run the real delta_rate.
"""

from __future__ import annotations

import orjson
import pytest

from pipeline import convert, decode, promtext
from pipeline.component import ComponentContext, Snapshot
from pipeline.model import MetricKind
from processors.node_snapshot import NodeSnapshotConfig, NodeSnapshotProcessor

T0 = 1_766_400_000_000_000_000
STEP_S = 10
UNAME = 'node_uname_info{nodename="n1",release="6.1.0"} 1\n'


def decode_text(text: str, time_ns: int):
    exposition = promtext.parse(text)
    options = convert.ConvertOptions(job="node-exporter", instance="10.0.0.1:9100")
    return decode.decode_request(convert.exposition_to_request(exposition, time_ns, options)).batch


def pair_counters(previous, current, interval_s: float) -> None:
    """Set deltas and intervals on the current batch's counters, as delta_rate would.

    Counters here are monotonic Sums and node_vmstat_* Gauges; test inputs
    never decrease, so delta = v1 - v0.
    """
    before = {
        (m.name, tuple(sorted(a.items()))): v
        for rm in previous
        for m in rm.metrics
        for a, v in zip(m.attrs, m.values)
    }
    for rm in current:
        for metric in rm.metrics:
            counter = (metric.kind is MetricKind.SUM and metric.monotonic) or metric.name.startswith(
                "node_vmstat_"
            )
            if not counter:
                continue
            deltas, intervals = [], []
            for attrs, value in zip(metric.attrs, metric.values):
                old = before.get((metric.name, tuple(sorted(attrs.items()))))
                if old is None or value is None:
                    deltas.append(None)
                    intervals.append(None)
                else:
                    deltas.append(value - old)
                    intervals.append(interval_s)
            metric.deltas, metric.intervals = deltas, intervals


def snapshot_of(text: str, previous: str | None = None) -> dict:
    """Build the body of the scrape ``text``; ``previous`` is the scrape STEP_S earlier."""
    processor = NodeSnapshotProcessor(NodeSnapshotConfig(scrape_wait_s=0), ComponentContext("node_snapshot"))
    current = decode_text(text, T0 + STEP_S * 10**9)
    if previous is not None:
        pair_counters(decode_text(previous, T0), current, STEP_S)
    out = [item for item in processor.process(current, T0 + STEP_S * 10**9) if isinstance(item, Snapshot)]
    assert len(out) == 1
    return out[0].body


def cpu_text(per_cpu: dict[str, dict[str, float]]) -> str:
    return "".join(
        f'node_cpu_seconds_total{{cpu="{cpu}",mode="{mode}"}} {value}\n'
        for cpu, modes in per_cpu.items()
        for mode, value in modes.items()
    )


# CPU


def test_cpu_ids_in_numeric_order_with_gaps():
    base = {cpu: {"idle": 1000.0, "user": 100.0} for cpu in ("10", "0", "3", "1", "2")}
    busy_s = {"0": 1.0, "1": 2.0, "2": 3.0, "3": 4.0, "10": 5.0}
    later = {cpu: {"idle": 1000.0 + 10 - busy_s[cpu], "user": 100.0 + busy_s[cpu]} for cpu in base}
    body = snapshot_of(UNAME + cpu_text(later), UNAME + cpu_text(base))
    assert body["cpu"]["per_core"] == pytest.approx([10.0, 20.0, 30.0, 40.0, 50.0])
    assert body["cpu"]["cores"] == body["cpu"]["threads"] == 5
    assert body["cpu"]["usage_percent"] == pytest.approx(15 / 50 * 100)
    assert body["cpu"]["user_percent"] == pytest.approx(15 / 50 * 100)


def test_cpu_with_still_counters_is_zero():
    modes = {"0": {"idle": 10.0, "user": 5.0}, "1": {"idle": 10.0, "user": 5.0}}
    moved = {"0": {"idle": 18.0, "user": 7.0}, "1": {"idle": 10.0, "user": 5.0}}
    body = snapshot_of(UNAME + cpu_text(moved), UNAME + cpu_text(modes))
    assert body["cpu"]["per_core"] == pytest.approx([20.0, 0.0])
    assert body["cpu"]["usage_percent"] == pytest.approx(20.0)


def test_cpu_guest_mode_not_added():
    before = {"0": {"idle": 10.0, "user": 5.0, "guest": 1.0}}
    after = {"0": {"idle": 16.0, "user": 9.0, "guest": 100.0}}
    body = snapshot_of(UNAME + cpu_text(after), UNAME + cpu_text(before))
    assert body["cpu"]["usage_percent"] == pytest.approx(40.0)


def test_cpu_frequency_and_model():
    text = UNAME + cpu_text({"0": {"idle": 1.0}, "1": {"idle": 1.0}})
    text += 'node_cpu_scaling_frequency_hertz{cpu="0"} 1.2e+09\nnode_cpu_scaling_frequency_hertz{cpu="1"} 2.4e+09\n'
    text += 'node_cpu_info{cpu="0",model_name="AMD EPYC"} 1\nnode_cpu_info{cpu="1",model_name="AMD EPYC"} 1\n'
    body = snapshot_of(text)
    assert body["cpu"]["frequency"] == pytest.approx(1800.0)
    assert body["cpu"]["model"] == "AMD EPYC"


# Temperature


def hwmon(chip: str, sensor: str, celsius: float, max_c: float | None = None, crit: float | None = None) -> str:
    text = f'node_hwmon_temp_celsius{{chip="{chip}",sensor="{sensor}"}} {celsius}\n'
    if max_c is not None:
        text += f'node_hwmon_temp_max_celsius{{chip="{chip}",sensor="{sensor}"}} {max_c}\n'
    if crit is not None:
        text += f'node_hwmon_temp_crit_celsius{{chip="{chip}",sensor="{sensor}"}} {crit}\n'
    return text


def label(chip: str, sensor: str, text: str) -> str:
    return f'node_hwmon_sensor_label{{chip="{chip}",label="{text}",sensor="{sensor}"}} 1\n'


def chip_name(chip: str, driver: str) -> str:
    return f'node_hwmon_chip_names{{chip="{chip}",chip_name="{driver}"}} 1\n'


K10 = "pci0000:00_0000:00:18_3"
RP1_ADC = "1000120000_pcie_1f000c8000_adc"

TEMPERATURE_CASES = [
    pytest.param(
        hwmon(K10, "temp1", 61.0) + hwmon(K10, "temp3", 55.0) + chip_name(K10, "k10temp")
        + label(K10, "temp1", "Tctl") + label(K10, "temp3", "Tdie"),
        55.0,
        0.0,
        id="amd-k10temp-tdie-before-tctl",
    ),
    pytest.param(
        hwmon(K10, "temp1", 61.0, crit=95.0) + hwmon(K10, "temp3", 48.0) + chip_name(K10, "k10temp")
        + label(K10, "temp1", "Tctl") + label(K10, "temp3", "Tccd1"),
        61.0,
        95.0,
        id="amd-k10temp-tctl-then-critical",
    ),
    pytest.param(
        hwmon(K10, "temp1", 70.0) + hwmon(K10, "temp2", 50.0) + chip_name(K10, "zenpower")
        + label(K10, "temp1", "TDIE") + label(K10, "temp2", "Tctl"),
        70.0,
        0.0,
        id="amd-zenpower-label-case-insensitive",
    ),
    pytest.param(
        hwmon(K10, "temp1", 44.0) + hwmon(K10, "temp2", 80.0) + chip_name(K10, "k10temp"),
        44.0,
        0.0,
        id="amd-without-labels-uses-temp1",
    ),
    pytest.param(
        hwmon("platform_coretemp_0", "temp1", 50.0, 84.0) + hwmon("platform_coretemp_0", "temp2", 60.0, 84.0)
        + hwmon("platform_coretemp_1", "temp1", 57.0, 86.0) + hwmon("nvme_nvme0", "temp1", 70.0, 80.0),
        57.0,
        86.0,
        id="intel-two-sockets-hottest-package",
    ),
    pytest.param(
        hwmon("thermal_thermal_zone0", "temp0", 52.5) + hwmon("thermal_thermal_zone0", "temp1", 53.0)
        + hwmon(RP1_ADC, "temp1", 58.0) + chip_name(RP1_ADC, "rp1_adc"),
        53.0,
        0.0,
        id="pi5-thermal-zone-before-rp1-adc",
    ),
    pytest.param(
        hwmon(RP1_ADC, "temp1", 58.0) + hwmon("nvme_nvme0", "temp1", 40.0, 81.85),
        58.0,
        0.0,
        id="adc-only",
    ),
    pytest.param(
        hwmon("hwmon0", "temp1", 47.0, 90.0) + chip_name("hwmon0", "cpu_thermal"),
        47.0,
        90.0,
        id="cpu-thermal-by-driver-name",
    ),
    pytest.param(hwmon("nvme_nvme0", "temp1", 40.0, 81.85), 0.0, 0.0, id="no-cpu-sensor"),
]


@pytest.mark.parametrize(("text", "cpu_temp", "cpu_temp_max"), TEMPERATURE_CASES)
def test_cpu_temperature_choice(text, cpu_temp, cpu_temp_max):
    body = snapshot_of(UNAME + text)
    assert body["temperature"]["cpu_temp"] == cpu_temp
    assert body["temperature"]["cpu_temp_max"] == cpu_temp_max


def test_sensors_ordered_and_labelled():
    text = UNAME + hwmon("platform_coretemp_0", "temp10", 40.0) + hwmon("platform_coretemp_0", "temp2", 41.0, 80.0, 100.0)
    text += hwmon("acpitz", "temp1", 30.0) + label("platform_coretemp_0", "temp2", "Core 0")
    sensors = snapshot_of(text)["temperature"]["sensors"]
    assert [(s["name"], s["label"]) for s in sensors] == [
        ("acpitz", "temp1"),
        ("platform_coretemp_0", "Core 0"),
        ("platform_coretemp_0", "temp10"),
    ]
    assert sensors[1] == {"name": "platform_coretemp_0", "label": "Core 0", "current": 41.0, "max": 80.0, "critical": 100.0}


# Disks


def filesystem(device: str, mountpoint: str, size: float, avail: float, free: float | None = None, fstype: str = "ext4") -> str:
    labels = f'device="{device}",fstype="{fstype}",mountpoint="{mountpoint}"'
    text = f"node_filesystem_size_bytes{{{labels}}} {size}\nnode_filesystem_avail_bytes{{{labels}}} {avail}\n"
    if free is not None:
        text += f"node_filesystem_free_bytes{{{labels}}} {free}\n"
    return text


def disk_io(device: str, read_bytes: float, written: float = 0.0, io_time: float = 0.0) -> str:
    return (
        f'node_disk_read_bytes_total{{device="{device}"}} {read_bytes}\n'
        f'node_disk_written_bytes_total{{device="{device}"}} {written}\n'
        f'node_disk_reads_completed_total{{device="{device}"}} 0\n'
        f'node_disk_writes_completed_total{{device="{device}"}} 0\n'
        f'node_disk_io_time_seconds_total{{device="{device}"}} {io_time}\n'
    )


def disks_of(now: str, before: str) -> list[dict]:
    return snapshot_of(UNAME + now, UNAME + before)["disks"]


def test_sda1_and_sdab1_never_share_io():
    fs = filesystem("/dev/sda1", "/", 100, 50) + filesystem("/dev/sdab1", "/data", 100, 50)
    disks = disks_of(fs + disk_io("sda", 1000) + disk_io("sdab", 5000), fs + disk_io("sda", 0) + disk_io("sdab", 0))
    by_mount = {d["mount_point"]: d for d in disks}
    assert by_mount["/"]["read_rate"] == pytest.approx(100.0)
    assert by_mount["/data"]["read_rate"] == pytest.approx(500.0)
    assert len(disks) == 2


def test_nvme_partition_maps_to_disk():
    fs = filesystem("/dev/nvme0n1p2", "/", 100, 50) + filesystem("/dev/nvme0n1p1", "/boot/firmware", 10, 5)
    disks = disks_of(fs + disk_io("nvme0n1", 2000, io_time=5.0), fs + disk_io("nvme0n1", 0))
    assert [d["mount_point"] for d in disks] == ["/", "/boot/firmware"]
    assert disks[0]["read_rate"] == pytest.approx(200.0)
    assert disks[0]["io_util"] == pytest.approx(50.0)
    assert disks[1]["read_rate"] == 0.0


def test_io_util_capped_at_100():
    fs = filesystem("/dev/sda1", "/", 100, 50)
    disks = disks_of(fs + disk_io("sda", 0, io_time=25.0), fs + disk_io("sda", 0))
    assert disks[0]["io_util"] == 100.0


@pytest.mark.parametrize("root_device", ["/dev/mapper/vg-root", "/dev/dm-0", "/dev/root"])
def test_mapped_root_with_one_disk(root_device):
    fs = filesystem(root_device, "/", 100, 50)
    disks = disks_of(fs + disk_io("sda", 3000) + disk_io("dm-0", 9000), fs + disk_io("sda", 0) + disk_io("dm-0", 0))
    assert len(disks) == 1  # dm-0 is never a disk of its own
    assert disks[0]["read_rate"] == pytest.approx(300.0)


def test_mapped_root_with_two_disks():
    fs = filesystem("/dev/mapper/vg-root", "/", 100, 50) + filesystem("/dev/sda1", "/boot", 10, 5)
    now = fs + disk_io("sda", 1000) + disk_io("sdb", 2000)
    disks = disks_of(now, fs + disk_io("sda", 0) + disk_io("sdb", 0))
    assert [(d["device"], d["mount_point"]) for d in disks] == [
        ("/dev/mapper/vg-root", "/"),
        ("/dev/sda1", "/boot"),
        ("sdb", ""),
    ]
    assert disks[0]["read_rate"] == 0.0  # the root's disk is ambiguous
    assert disks[1]["read_rate"] == pytest.approx(100.0)
    assert disks[2]["read_rate"] == pytest.approx(200.0)
    assert (disks[2]["fs_type"], disks[2]["total"], disks[2]["usage_percent"]) == ("", 0, 0.0)


def test_bind_mounts_collapse_to_shortest():
    fs = (
        filesystem("/dev/sdb1", "/var/lib/kubelet/pods/x/volumes/data", 100, 40)
        + filesystem("/dev/sdb1", "/srv/data", 100, 40)
        + filesystem("/dev/sdb1", "/srv", 100, 40)
        + filesystem("/dev/sda1", "/", 100, 50)
    )
    disks = disks_of(fs + disk_io("sda", 0) + disk_io("sdb", 700), fs + disk_io("sda", 0) + disk_io("sdb", 0))
    assert [(d["device"], d["mount_point"]) for d in disks] == [("/dev/sda1", "/"), ("/dev/sdb1", "/srv")]
    assert disks[1]["read_rate"] == pytest.approx(70.0)


def test_shortest_mount_point_carries_io_without_root():
    fs = filesystem("/dev/sdb2", "/srv/logs", 100, 40) + filesystem("/dev/sdb1", "/srv", 100, 40)
    disks = disks_of(fs + disk_io("sdb", 700), fs + disk_io("sdb", 0))
    assert [(d["mount_point"], d["read_rate"]) for d in disks] == [("/srv", pytest.approx(70.0)), ("/srv/logs", 0.0)]


def test_whole_disk_filesystem_and_unmounted_disks_by_name():
    fs = filesystem("/dev/sda", "/", 100, 50)
    now = fs + disk_io("sda", 100) + disk_io("sdc", 300) + disk_io("sdb", 200)
    disks = disks_of(now, fs + disk_io("sda", 0) + disk_io("sdc", 0) + disk_io("sdb", 0))
    assert [d["device"] for d in disks] == ["/dev/sda", "sdb", "sdc"]
    assert [d["read_rate"] for d in disks] == pytest.approx([10.0, 20.0, 30.0])


def test_partition_beside_reported_parent_not_counted():
    fs = filesystem("/dev/mmcblk0p2", "/", 100, 50)
    now = fs + disk_io("mmcblk0", 1000) + disk_io("mmcblk0p2", 900) + disk_io("mmcblk0p1", 100)
    disks = disks_of(now, fs + disk_io("mmcblk0", 0) + disk_io("mmcblk0p2", 0) + disk_io("mmcblk0p1", 0))
    assert [d["device"] for d in disks] == ["/dev/mmcblk0p2"]
    assert disks[0]["read_rate"] == pytest.approx(100.0)


def test_usage_matches_df_with_free_bytes():
    # size 1000, free 300 (of which 50 reserved for root), avail 250: df
    # shows used 700 and Use% = 700 / (700 + 250).
    body = snapshot_of(UNAME + filesystem("/dev/sda1", "/", 1000, 250, free=300))
    disk = body["disks"][0]
    assert (disk["total"], disk["used"], disk["available"]) == (1000, 700, 250)
    assert disk["usage_percent"] == pytest.approx(700 / 950 * 100)


def test_usage_without_free_bytes():
    disk = snapshot_of(UNAME + filesystem("/dev/sda1", "/", 1000, 250))["disks"][0]
    assert (disk["total"], disk["used"], disk["available"]) == (1000, 750, 250)
    assert disk["usage_percent"] == pytest.approx(75.0)


def test_filesystems_root_first_then_by_mount_point():
    fs = filesystem("/dev/sdc1", "/a", 1, 1) + filesystem("/dev/sdb1", "/", 1, 1) + filesystem("/dev/sdd1", "/Z", 1, 1)
    assert [d["mount_point"] for d in snapshot_of(UNAME + fs)["disks"]] == ["/", "/Z", "/a"]


# Networks, system, memory, identity


def test_network_fields():
    text = UNAME + (
        'node_network_speed_bytes{device="eth0"} -1\n'
        'node_network_up{device="eth0"} 1\n'
        'node_network_speed_bytes{device="eth1"} 3.125e+08\n'
        'node_network_up{device="eth1"} 0\n'
        'node_network_mtu_bytes{device="eth1"} 9000\n'
        'node_network_info{address="aa:bb:cc:dd:ee:ff",device="eth1",operstate="down"} 1\n'
        'node_network_receive_bytes_total{device="bond0"} 5\n'
    )
    networks = snapshot_of(text)["networks"]
    assert [(n["interface"], n["status"], n["speed"]) for n in networks] == [
        ("bond0", "unknown", 0),
        ("eth0", "up", 0),
        ("eth1", "down", 2500),
    ]
    assert networks[2]["mtu"] == 9000
    assert networks[2]["mac_address"] == "aa:bb:cc:dd:ee:ff"
    assert networks[0]["rx_bytes"] == 5


def test_filefd_maximum_clamped_to_int64():
    body = snapshot_of(UNAME + "node_filefd_maximum 9.223372036854776e+18\nnode_filefd_allocated 3840\n")
    assert body["system"]["filefd_maximum"] == 9223372036854775807
    assert body["system"]["filefd_allocated"] == 3840
    assert b'"filefd_maximum":9223372036854775807,' in orjson.dumps(body)


def test_huge_values_stay_int64():
    # Invented: values past int64 must still serialize as JSON integers.
    text = UNAME + 'node_network_speed_bytes{device="eth0"} 1e+30\n'
    text += 'node_softnet_dropped_total{cpu="0"} 9e+18\nnode_softnet_dropped_total{cpu="1"} 9e+18\n'
    body = snapshot_of(text)
    assert body["networks"][0]["speed"] == 9223372036854775807
    assert body["softnet"]["dropped"] == 9223372036854775807
    assert orjson.loads(orjson.dumps(body)) == body


def test_memory_with_swap():
    text = UNAME + (
        "node_memory_MemTotal_bytes 1000\nnode_memory_MemAvailable_bytes 600\nnode_memory_MemFree_bytes 100\n"
        "node_memory_SwapTotal_bytes 400\nnode_memory_SwapFree_bytes 300\n"
    )
    memory = snapshot_of(text)["memory"]
    assert (memory["used"], memory["swap_used"]) == (400, 100)
    assert memory["usage_percent"] == pytest.approx(40.0)
    assert memory["swap_percent"] == pytest.approx(25.0)


def test_psi_and_vmstat_rates():
    before = UNAME + "node_pressure_memory_stalled_seconds_total 1.0\nnode_vmstat_pswpout 100\n"
    after = UNAME + "node_pressure_memory_stalled_seconds_total 1.5\nnode_vmstat_pswpout 150\n"
    body = snapshot_of(after, before)
    assert body["psi"]["memory_full_percent"] == pytest.approx(5.0)
    assert body["vmstat"]["pswpout_ps"] == pytest.approx(5.0)
    assert body["unavailable"] == ["cpu", "disks", "memory", "networks", "ntp", "softnet", "system", "tcp", "temperature"]


def test_psi_clamped_to_100():
    body = snapshot_of(
        UNAME + "node_pressure_cpu_waiting_seconds_total 30\n", UNAME + "node_pressure_cpu_waiting_seconds_total 10\n"
    )
    assert body["psi"]["cpu_some_percent"] == 100.0


def test_timestamp_truncated_to_milliseconds_and_uptime():
    text = UNAME + "node_boot_time_seconds 1.7664e+09\n" + 'node_os_info{pretty_name="Debian GNU/Linux 12 (bookworm)"} 1\n'
    processor = NodeSnapshotProcessor(NodeSnapshotConfig(scrape_wait_s=0), ComponentContext("node_snapshot"))
    time_ns = 1_766_400_123_999_999_999
    body = processor.process(decode_text(text, time_ns), time_ns)[0].body
    assert body["timestamp"] == "2025-12-22T10:42:03.999Z"
    assert body["uptime"] == 123
    assert body["os"] == "Debian GNU/Linux 12 (bookworm)"
    assert body["kernel"] == "6.1.0"


def test_ntp_unsynced():
    body = snapshot_of(UNAME + "node_timex_sync_status 0\nnode_timex_offset_seconds -0.002\n")
    assert body["ntp"] == {"offset_seconds": -0.002, "synced": False}
