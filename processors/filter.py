"""The ``filter`` processor: keep the metrics and devices a node snapshot reads.

Two stages, cheapest first:

1. Per metric, by name: a metric whose canonical name is not on the
   allow-list is dropped whole, before any per-point work.
2. Per point, by the ``device`` attribute of filesystem, network and block
   device metrics (node_exporter's ``node_filesystem_*``, ``node_network_*``
   and ``node_disk_*``, and hostmetrics' ``system.filesystem.*``,
   ``system.network.*`` and ``system.disk.*``). Each decision is cached per
   device value, so a point costs one dict lookup.

Block devices have one rule that depends on the resource: a partition
(``sda1``, ``nvme0n1p2``, ``mmcblk0p1``) is dropped when its parent disk is
reported by the same resource, because the parent's I/O already includes it.
The processor remembers, per resource, the whole disks it has seen, so the
rule also holds when a scrape is split over several Export calls.

Every dropped point is counted in ``otelsnap_processor_dropped_points`` with
``processor`` (the component id) and ``reason`` attributes.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import compress
from operator import itemgetter

from pipeline.component import ConfigError, Item, Processor
from pipeline.config import nested_errors, raise_errors
from pipeline.logs import event
from pipeline.model import Metric, ResourceMetrics
from processors.names import HOSTMETRICS_FAMILIES, NODE_FAMILIES, NameResolver

# node_exporter's names for interfaces that are loopback, virtual or owned by
# a container runtime or CNI plugin. Bonds, VLANs and WireGuard stay.
DEFAULT_NETWORK_DEVICE_EXCLUDE = (
    "lo",
    "veth*",
    "flannel*",
    "cni*",
    "cali*",
    "docker*",
    "br-*",
    "virbr*",
    "vxlan*",
    "tunl*",
    "kube-ipvs*",
    "cilium*",
    "lxc*",
    "tap*",
    "tun*",
    "ifb*",
    "dummy*",
    "vnet*",
)

# Block devices whose I/O duplicates a physical disk (device-mapper) or is
# not disk I/O at all (loop, RAM disks, zram swap, optical, floppy).
DEFAULT_BLOCK_DEVICE_EXCLUDE = ("dm-*", "loop*", "ram*", "zram*", "sr*", "fd*")

DROPPED_POINTS = "otelsnap_processor_dropped_points"
REASON_METRIC = "metric_not_included"
REASON_FILESYSTEM = "filesystem_device"
REASON_NETWORK = "network_interface"
REASON_BLOCK = "block_device"

# Per-metric rules: what a metric of this name needs after it is included.
DROP, KEEP, FILESYSTEM, NETWORK, BLOCK = range(5)

# Caches of names and device values are cleared when they reach this size,
# so a flood of distinct names cannot grow memory without limit.
CACHE_MAX_ENTRIES = 100_000
# Whole disks remembered per resource for the partition rule.
MAX_DISKS_PER_RESOURCE = 1024


def _pattern_errors(path: str, patterns: list[str]) -> list[ConfigError]:
    """Return one error per entry of ``patterns`` that is not a non-empty string."""
    if not isinstance(patterns, list):
        return [ConfigError(path, f"expected a list of names or glob patterns, got {patterns!r}")]
    return [
        ConfigError(f"{path}[{index}]", f"expected a non-empty name or glob pattern, got {pattern!r}")
        for index, pattern in enumerate(patterns)
        if not isinstance(pattern, str) or not pattern
    ]


def _device_errors(
    section: FilesystemsConfig | NetworkInterfacesConfig | BlockDevicesConfig,
) -> list[ConfigError]:
    """Return the errors of a device rule's include and exclude lists."""
    return _pattern_errors("device_include", section.device_include) + _pattern_errors(
        "device_exclude", section.device_exclude
    )


@dataclass
class MetricsConfig:
    """The metric allow-list, by name.

    A metric passes when it is one of the node snapshot's families (with
    ``include_snapshot_families``) or matches ``include``, and matches no
    ``exclude`` pattern. Names are compared after removing a
    ``name_prefixes`` entry and after mapping trimmed suffixes back to the
    node_exporter name.
    """

    include_snapshot_families: bool = True
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)

    def validate(self) -> None:
        include_errors = _pattern_errors("include", self.include)
        errors = include_errors + _pattern_errors("exclude", self.exclude)
        if not include_errors:
            try:
                NameResolver(_exact_names(self.include), ())
            except ValueError as err:
                errors.append(ConfigError("include", f"{err}; list only one of the two"))
        if not self.include_snapshot_families and not self.include:
            errors.append(
                ConfigError(
                    "include",
                    "no metric can pass: list names or patterns in include, "
                    "or set include_snapshot_families to true",
                )
            )
        raise_errors(errors)


@dataclass
class FilesystemsConfig:
    """The filesystem rule, applied to the ``device`` attribute."""

    device_include: list[str] = field(default_factory=lambda: ["/dev/*"])
    device_exclude: list[str] = field(default_factory=list)

    def validate(self) -> None:
        raise_errors(_device_errors(self))


@dataclass
class NetworkInterfacesConfig:
    """The network interface rule, applied to the ``device`` attribute."""

    device_include: list[str] = field(default_factory=list)
    device_exclude: list[str] = field(
        default_factory=lambda: list(DEFAULT_NETWORK_DEVICE_EXCLUDE)
    )

    def validate(self) -> None:
        raise_errors(_device_errors(self))


@dataclass
class BlockDevicesConfig:
    """The block device rule, applied to the ``device`` attribute."""

    device_include: list[str] = field(default_factory=list)
    device_exclude: list[str] = field(default_factory=lambda: list(DEFAULT_BLOCK_DEVICE_EXCLUDE))
    # Drop a partition when the same resource reports its parent disk.
    drop_partitions_of_reported_disks: bool = True
    # Resources whose whole disks are remembered for the partition rule;
    # the least recently reporting resource is forgotten first.
    max_tracked_resources: int = 10_000

    def validate(self) -> None:
        errors = _device_errors(self)
        if not isinstance(self.max_tracked_resources, int) or self.max_tracked_resources < 1:
            errors.append(
                ConfigError(
                    "max_tracked_resources",
                    f"must be a positive integer, got {self.max_tracked_resources!r}",
                )
            )
        raise_errors(errors)


@dataclass
class FilterConfig:
    """Config of the ``filter`` processor; every default follows node_exporter's names."""

    # Prefixes removed before a name is compared, e.g. "otel_" added by a
    # collector's prometheus exporter with ``namespace: otel``.
    name_prefixes: list[str] = field(default_factory=lambda: ["otel_"])
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    filesystems: FilesystemsConfig = field(default_factory=FilesystemsConfig)
    network_interfaces: NetworkInterfacesConfig = field(default_factory=NetworkInterfacesConfig)
    block_devices: BlockDevicesConfig = field(default_factory=BlockDevicesConfig)

    def validate(self) -> None:
        """Check every option and raise all errors found (ConfigErrors when there are several)."""
        errors = _pattern_errors("name_prefixes", self.name_prefixes)
        for name in ("metrics", "filesystems", "network_interfaces", "block_devices"):
            errors += nested_errors(name, getattr(self, name))
        raise_errors(errors)


def compile_patterns(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """Compile exact names and glob patterns into one regex, or None when empty."""
    parts = [fnmatch.translate(p) for p in patterns]
    if not parts:
        return None
    return re.compile("|".join(f"(?:{p})" for p in parts))


# Partitions: a name ending in a digit plus "p<N>" (nvme0n1p2, mmcblk0p1,
# md0p1, nbd0p1), or an sd/hd/vd/xvd disk plus a number (sda1, sdab1, xvda1).
_PARTITION_AFTER_DIGIT = re.compile(r"^(.*\d)p\d+$")
_PARTITION_OF_LETTER_DISK = re.compile(r"^((?:s|h|v|xv)d[a-z]+)\d+$")


def partition_parent(device: str) -> str | None:
    """Return the parent disk of a partition name (sda1 → sda), or None for a whole disk."""
    match = _PARTITION_AFTER_DIGIT.match(device) or _PARTITION_OF_LETTER_DISK.match(device)
    return match.group(1) if match else None


class DeviceRule:
    """One include/exclude pair for a ``device`` attribute, with its decisions cached."""

    def __init__(self, include: list[str], exclude: list[str]) -> None:
        self._include = compile_patterns(include)
        self._exclude = compile_patterns(exclude)
        self.decisions: dict[str, bool] = {}
        # The last attribute column and its mask. The metrics of one family
        # (the node_network_* metrics of a node) usually carry the same
        # attribute dicts in the same order, so the mask is computed once.
        self.last_attrs: list[dict[str, str]] | None = None
        self.last_mask: list[bool] = []

    def keeps(self, device: str) -> bool:
        if self._include is not None and not self._include.match(device):
            return False
        return self._exclude is None or not self._exclude.match(device)

    def fill(self, devices: set[str]) -> None:
        """Decide every device in ``devices`` that is not decided yet."""
        decisions = self.decisions
        if len(decisions) + len(devices) > CACHE_MAX_ENTRIES:
            decisions.clear()
        for device in devices:
            if device not in decisions:
                decisions[device] = self.keeps(device)


class FilterProcessor(Processor):
    """Drop metrics and points the node snapshot does not read."""

    type_name = "filter"
    Config = FilterConfig

    def __init__(self, config: FilterConfig, context) -> None:
        super().__init__(config, context)
        prefixes = tuple(config.name_prefixes)
        self._families = NameResolver(NODE_FAMILIES | HOSTMETRICS_FAMILIES, prefixes)
        self._user_names = NameResolver(_exact_names(config.metrics.include), prefixes)
        self._prefixes = prefixes
        self._snapshot_families = config.metrics.include_snapshot_families
        self._include = compile_patterns(config.metrics.include)
        self._exclude = compile_patterns(config.metrics.exclude)
        self._filesystems = DeviceRule(
            config.filesystems.device_include, config.filesystems.device_exclude
        )
        self._network = DeviceRule(
            config.network_interfaces.device_include, config.network_interfaces.device_exclude
        )
        self._block = DeviceRule(
            config.block_devices.device_include, config.block_devices.device_exclude
        )
        self._drop_partitions = config.block_devices.drop_partitions_of_reported_disks
        self._max_resources = config.block_devices.max_tracked_resources
        # metric name → DROP, KEEP, FILESYSTEM, NETWORK or BLOCK
        self._rules: dict[str, int] = {}
        # block device → True (keep), False (drop) or the parent disk's name
        # (keep unless the resource reports that disk)
        self._block_decisions: dict[str, bool | str] = {}
        # the devices of _block_decisions that are partitions
        self._partitions: set[str] = set()
        # resource key → whole disks it reported; insertion order is recency
        self._disks: dict[tuple, set[str]] = {}
        self._component_id = context.component_id

    def process(self, items: list[Item], now_ns: int) -> list[Item]:
        dropped = {REASON_METRIC: 0, REASON_FILESYSTEM: 0, REASON_NETWORK: 0, REASON_BLOCK: 0}
        # Metrics that kept a partition because its parent disk was not
        # known yet; checked again once the whole batch has been seen.
        pending: list[tuple[ResourceMetrics, Metric]] = []
        # Resources whose whole disks were recorded in this batch.
        touched: set[tuple] = set()
        out: list[Item] = []
        for item in items:
            if not isinstance(item, ResourceMetrics):
                out.append(item)
                continue
            metrics = self._filter_resource(item, dropped, pending, touched)
            if metrics is None:
                out.append(item)
            elif metrics:
                item.metrics = metrics
                out.append(item)
        if pending:
            out = self._recheck_partitions(out, pending, dropped, touched)
        for reason, count in dropped.items():
            if count:
                self.telemetry.add(
                    DROPPED_POINTS, count, processor=self._component_id, reason=reason
                )
        return out

    def _filter_resource(
        self,
        rm: ResourceMetrics,
        dropped: dict[str, int],
        pending: list[tuple[ResourceMetrics, Metric]],
        touched: set[tuple],
    ) -> list[Metric] | None:
        """Return the metrics to keep, or None when every point of every metric stays."""
        rules = self._rules
        kept: list[Metric] = []
        changed = False
        for metric in rm.metrics:
            rule = rules.get(metric.name)
            if rule is None:
                rule = self._rule_for(metric.name)
            if rule == KEEP:
                kept.append(metric)
                continue
            if rule == DROP:
                dropped[REASON_METRIC] += len(metric.values)
                changed = True
                continue
            if rule == FILESYSTEM:
                mask = _device_mask(metric.attrs, self._filesystems)
                reason = REASON_FILESYSTEM
            elif rule == NETWORK:
                mask = _device_mask(metric.attrs, self._network)
                reason = REASON_NETWORK
            else:
                mask, partition_kept = self._block_mask(rm.key, metric.attrs, touched)
                if partition_kept:
                    pending.append((rm, metric))
                reason = REASON_BLOCK
            drops = mask.count(False)
            if not drops:
                kept.append(metric)
                continue
            changed = True
            dropped[reason] += drops
            if drops < len(mask):
                keep_points(metric, mask)
                kept.append(metric)
        return kept if changed else None

    def _rule_for(self, name: str) -> int:
        """Decide, once per metric name, whether it passes and which device rule applies."""
        canonical = self._families.canonical(name)
        stripped = _strip_prefix(name, self._prefixes)
        candidates = {stripped}
        if canonical is not None:
            candidates.add(canonical)
        user_name = self._user_names.canonical(name)
        if user_name is not None:
            candidates.add(user_name)

        included = self._snapshot_families and canonical is not None
        if not included and self._include is not None:
            included = any(self._include.match(c) for c in candidates)
        if included and self._exclude is not None:
            included = not any(self._exclude.match(c) for c in candidates)

        if not included:
            rule = DROP
        else:
            rule = _device_rule_of(canonical or user_name or stripped)
        if len(self._rules) >= CACHE_MAX_ENTRIES:
            self._rules.clear()
        self._rules[name] = rule
        return rule

    # -- block devices -----------------------------------------------------------

    def _block_mask(
        self, key: tuple, attrs: list[dict[str, str]], touched: set[tuple]
    ) -> tuple[list[bool], bool]:
        """Return the keep-mask of block device points and whether a partition was kept.

        The resource's kept whole disks are recorded first, so a partition
        whose parent is in the same metric is dropped. ``touched`` contains the
        resources already recorded in this batch.
        """
        decisions = self._block_decisions
        try:
            devices = list(map(_device_of, attrs))
            rules = list(map(decisions.__getitem__, devices))
        except KeyError:
            devices = [device_name(a) for a in attrs]
            self._decide_block_devices(set(devices))
            rules = [decisions[d] for d in devices]
        if not self._drop_partitions:
            return rules, False

        disks = self._disks.get(key, _NO_DISKS)
        whole = {d for d, r in zip(devices, rules) if r is True}
        if whole and (key not in touched or not whole <= disks):
            touched.add(key)
            disks = self._add_disks(key, whole)
        if self._partitions.isdisjoint(devices):
            return rules, False

        mask: list[bool] = []
        partition_kept = False
        for rule in rules:
            if rule is True or rule is False:
                mask.append(rule)
            else:
                # A partition: kept only while its parent disk is not reported.
                keep = rule not in disks
                mask.append(keep)
                partition_kept = partition_kept or keep
        return mask, partition_kept

    def _decide_block_devices(self, devices: set[str]) -> None:
        decisions = self._block_decisions
        if len(decisions) + len(devices) > CACHE_MAX_ENTRIES:
            decisions.clear()
            self._partitions.clear()
        for device in devices:
            if device in decisions:
                continue
            if not self._block.keeps(device):
                decisions[device] = False
                continue
            parent = partition_parent(device) if self._drop_partitions else None
            if parent is None:
                decisions[device] = True
            else:
                decisions[device] = parent
                self._partitions.add(device)

    def _recheck_partitions(
        self,
        out: list[Item],
        pending: list[tuple[ResourceMetrics, Metric]],
        dropped: dict[str, int],
        touched: set[tuple],
    ) -> list[Item]:
        """Drop kept partitions whose parent disk was reported later in the same batch."""
        emptied = False
        for rm, metric in pending:
            mask, _ = self._block_mask(rm.key, metric.attrs, touched)
            drops = mask.count(False)
            if not drops:
                continue
            dropped[REASON_BLOCK] += drops
            if drops < len(mask):
                keep_points(metric, mask)
                continue
            rm.metrics = [m for m in rm.metrics if m is not metric]
            emptied = emptied or not rm.metrics
        if not emptied:
            return out
        return [i for i in out if not isinstance(i, ResourceMetrics) or i.metrics]

    def _add_disks(self, key: tuple, disks: set[str]) -> set[str]:
        """Add whole disks to a resource's record, mark it most recent, and return it."""
        known = self._disks.pop(key, None)
        if known is None:
            known = set()
            while len(self._disks) >= self._max_resources:
                forgotten = next(iter(self._disks))
                del self._disks[forgotten]
                event(
                    self.log,
                    "filter_resource_forgotten",
                    logging.WARNING,
                    every_s=60.0,
                    processor=self._component_id,
                    resource=format_resource_key(forgotten),
                    max_tracked_resources=self._max_resources,
                )
        new = disks - known
        if new and len(known) + len(new) > MAX_DISKS_PER_RESOURCE:
            event(
                self.log,
                "filter_disk_limit_reached",
                logging.WARNING,
                every_s=60.0,
                processor=self._component_id,
                resource=format_resource_key(key),
                max_disks=MAX_DISKS_PER_RESOURCE,
            )
            new = set(sorted(new)[: max(0, MAX_DISKS_PER_RESOURCE - len(known))])
        known |= new
        self._disks[key] = known
        return known


_NO_DISKS: frozenset[str] = frozenset()

# Families that carry a device attribute, by the start of their canonical name.
_DEVICE_FAMILY_PREFIXES = (
    ("node_filesystem_", FILESYSTEM),
    ("system.filesystem.", FILESYSTEM),
    ("node_network_", NETWORK),
    ("system.network.", NETWORK),
    ("node_disk_", BLOCK),
    ("system.disk.", BLOCK),
)


def _device_rule_of(name: str) -> int:
    for prefix, rule in _DEVICE_FAMILY_PREFIXES:
        if name.startswith(prefix):
            return rule
    return KEEP


_device_of = itemgetter("device")

# Newer semantic conventions name the hostmetrics device attribute
# system.device (filesystems, disks) or network.interface.name (networks).
_DEVICE_KEYS = ("device", "system.device", "network.interface.name")


def device_name(attrs: dict[str, str]) -> str:
    """Return the device a point is about, under any of its attribute names, or ""."""
    for key in _DEVICE_KEYS:
        value = attrs.get(key)
        if value is not None:
            return value
    return ""


def _device_mask(attrs: list[dict[str, str]], rule: DeviceRule) -> list[bool]:
    """Return the keep-mask of an attribute column; callers must not modify it."""
    # List equality compares the dicts by identity first, so a repeated
    # column costs one pass in C. Decisions depend only on the device value.
    if attrs == rule.last_attrs:
        return rule.last_mask
    decisions = rule.decisions
    try:
        # The usual case, without a Python-level loop: every point has a
        # device attribute and every device was decided before.
        mask = list(map(decisions.__getitem__, map(_device_of, attrs)))
    except KeyError:
        rule.fill({device_name(a) for a in attrs})
        mask = [decisions[device_name(a)] for a in attrs]
    rule.last_attrs = list(attrs)  # a copy, so the memo cannot change under us
    rule.last_mask = mask
    return mask


def keep_points(metric: Metric, mask: list[bool]) -> None:
    """Replace each column of ``metric`` by the entries whose ``mask`` flag is True.

    Does what ``Metric.keep`` does, with ``itertools.compress`` instead of a
    Python-level loop per column.
    """
    metric.attrs = list(compress(metric.attrs, mask))
    metric.times = list(compress(metric.times, mask))
    metric.values = list(compress(metric.values, mask))
    if metric.extras is not None:
        metric.extras = list(compress(metric.extras, mask))
    if metric.deltas is not None:
        metric.deltas = list(compress(metric.deltas, mask))
    if metric.intervals is not None:
        metric.intervals = list(compress(metric.intervals, mask))


def format_resource_key(key: tuple) -> str:
    """Render a resource identity for logs: ``service.name=node,service.instance.id=…``."""
    return ",".join(f"{k}={v}" for k, v in key)


def _strip_prefix(name: str, prefixes: tuple[str, ...]) -> str:
    for prefix in prefixes:
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix):]
    return name


def _exact_names(patterns: list[str]) -> list[str]:
    return [p for p in patterns if not any(c in p for c in "*?[")]
