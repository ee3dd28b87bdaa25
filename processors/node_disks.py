"""The ``disks`` section of a node snapshot: filesystems, then block devices
that carry no filesystem.

Filesystem usage matches ``df``. Block-device I/O goes on the filesystem
that lives on the device, found by partition name, never by substring:
``/dev/sda1`` → ``sda``, ``/dev/nvme0n1p2`` → ``nvme0n1``, ``/dev/sda`` →
``sda``. A filesystem on device-mapper (``/dev/mapper/…``, ``/dev/dm-N``) or
on ``/dev/root`` lives on the node's only physical disk when there is
exactly one, and on none otherwise. When several filesystems live on one
disk, only ``/`` (else the one with the shortest mount point) carries the
disk's I/O, so sums over the list never count a disk twice.

The filter processor chooses which filesystems and devices reach the
snapshot. The block-device rules that decide where I/O belongs are applied
here again, because they are part of the join. Device-mapper, loop, RAM,
zram, optical and floppy devices never count as disks. A partition whose
parent disk is reported is covered by the parent.
"""

from __future__ import annotations

import functools
import re

from processors.node_sources import (
    ATTRS,
    BLOCK_DEVICE,
    FILESYSTEM,
    Sample,
    Tables,
    int_of,
    percent,
    rate,
)

# Partition name → parent disk: sda1 → sda, xvdb2 → xvdb, nvme0n1p2 →
# nvme0n1, mmcblk0p1 → mmcblk0, md0p1 → md0.
_PARTITION = re.compile(r"^((?:[shv]|xv)d[a-z]+)\d+$|^(.*\d)p\d+$")
_NOT_A_DISK = re.compile(r"^(dm-|loop|ram|zram|sr|fd)\d")
# I/O fields of a filesystem that does not carry its disk's I/O.
_NO_IO = {
    "read_bytes": 0,
    "write_bytes": 0,
    "read_rate": 0.0,
    "write_rate": 0.0,
    "read_iops": 0.0,
    "write_iops": 0.0,
    "io_util": 0.0,
}


@functools.lru_cache(maxsize=4096)
def partition_parent(name: str) -> str | None:
    """Return the disk a partition name belongs to, or None for a whole-disk name."""
    match = _PARTITION.match(name)
    if match is None:
        return None
    return match.group(1) or match.group(2)


def physical_disks(devices: dict[str, dict[str, Sample]]) -> dict[str, dict[str, Sample]]:
    """Keep the block devices that are disks: no device-mapper or virtual devices,
    and no partition whose parent disk is also reported."""
    disks = {name: fields for name, fields in devices.items() if not _NOT_A_DISK.match(name)}
    return {
        name: fields for name, fields in disks.items() if partition_parent(name) not in disks
    }


def disk_of(device: str, disks: dict) -> str | None:
    """Return the disk a filesystem's device lives on, or None when it is not known."""
    if not device.startswith("/dev/"):
        return None
    name = device[len("/dev/"):]
    if name.startswith("mapper/") or name.startswith("dm-") or name == "root":
        return next(iter(disks)) if len(disks) == 1 else None
    parent = partition_parent(name)
    if parent is not None and parent in disks:
        return parent
    if name in disks:
        return name
    return None


def build_disks(tables: Tables, missing: list[str]) -> list[dict]:
    disks = physical_disks(tables.get(BLOCK_DEVICE, {}))
    filesystems = _collapse_by_device(
        [_filesystem_entry(key, fields, missing) for key, fields in tables.get(FILESYSTEM, {}).items()]
    )
    filesystems.sort(key=lambda entry: (entry["mount_point"] != "/", entry["mount_point"]))

    # Disk → the filesystem that carries its I/O: "/" first, else the
    # shortest mount point.
    carriers: dict[str, dict] = {}
    for entry in filesystems:
        disk = disk_of(entry["device"], disks)
        if disk is None:
            continue
        current = carriers.get(disk)
        if current is None or _carrier_rank(entry) < _carrier_rank(current):
            carriers[disk] = entry
    for disk, entry in carriers.items():
        entry.update(_io_fields(disks[disk]))

    out = filesystems
    for name in sorted(disks):
        if name in carriers:
            continue
        entry = {
            "device": name,
            "mount_point": "",
            "fs_type": "",
            "total": 0,
            "used": 0,
            "available": 0,
            "usage_percent": 0.0,
        }
        entry.update(_io_fields(disks[name]))
        out.append(entry)
    return out


def _filesystem_entry(key: tuple[str, str], fields: dict[str, Sample], missing: list[str]) -> dict:
    device, mount_point = key
    if "size" in fields or "avail" in fields:
        total = int_of(fields, "size")
        available = int_of(fields, "avail")
        if "free" in fields:
            # df: reserved blocks are neither used nor available.
            used = max(total - int_of(fields, "free"), 0)
            usage = percent(used, used + available)
        else:
            used = max(total - available, 0)
            usage = percent(used, total)
        if "size" not in fields:
            missing.append("disks.total")
        if "avail" not in fields:
            missing.append("disks.available")
    else:
        # hostmetrics: used + free + reserved = size, and free is what df
        # calls available (gopsutil's Bavail).
        used = int_of(fields, "hm_used")
        available = int_of(fields, "hm_free")
        total = used + available + int_of(fields, "hm_reserved")
        usage = percent(used, used + available)
    entry = {
        "device": device,
        "mount_point": mount_point,
        "fs_type": _fs_type(fields),
        "total": total,
        "used": used,
        "available": available,
        "usage_percent": usage,
    }
    entry.update(_NO_IO)
    return entry


def _fs_type(fields: dict[str, Sample]) -> str:
    for sample in fields.values():
        attrs = sample[ATTRS]
        fs_type = attrs.get("fstype") or attrs.get("type")
        if fs_type:
            return fs_type
    return ""


def _collapse_by_device(entries: list[dict]) -> list[dict]:
    """Keep one entry per device (bind mounts, btrfs subvolumes): the shortest mount point."""
    by_device: dict[str, dict] = {}
    for entry in entries:
        current = by_device.get(entry["device"])
        if current is None or _carrier_rank(entry) < _carrier_rank(current):
            by_device[entry["device"]] = entry
    return list(by_device.values())


def _carrier_rank(entry: dict) -> tuple:
    mount_point = entry["mount_point"]
    return (mount_point != "/", len(mount_point), mount_point)


def _io_fields(fields: dict[str, Sample]) -> dict:
    return {
        "read_bytes": int_of(fields, "read_bytes"),
        "write_bytes": int_of(fields, "write_bytes"),
        "read_rate": rate(fields.get("read_bytes")),
        "write_rate": rate(fields.get("write_bytes")),
        "read_iops": rate(fields.get("reads")),
        "write_iops": rate(fields.get("writes")),
        "io_util": min(rate(fields.get("io_time")) * 100.0, 100.0),
    }
