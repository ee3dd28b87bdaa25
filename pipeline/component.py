"""The small interface every processor and exporter implements, and the
registry that finds them by config type name.

Lifecycle, as in the Collector: the runtime builds a component from its
validated config (the constructor starts nothing), calls ``start()``, feeds
it, and calls ``shutdown()`` once. All processor calls come from one worker
thread, so processors need no locks.

Third-party packages add components through the entry-point groups
``otelsnap.processors`` and ``otelsnap.exporters``; each entry point names a
class, and its name is the config type name::

    [project.entry-points."otelsnap.processors"]
    my_filter = "my_package.module:MyFilter"
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar

from pipeline.model import ResourceMetrics
from pipeline.telemetry import Telemetry


class ConfigError(ValueError):
    """An invalid configuration value.

    ``path`` is the dotted key path in the config file (for example
    ``processors.filter/node.metrics.include``), and the message names the
    change to make.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


@dataclass(slots=True)
class Snapshot:
    """A finished snapshot for the exporters.

    ``kind`` is "node" or "slo". ``key`` is the node name, or the cluster id
    for SLO data. ``time_ns`` is the scrape time it describes, and ``body``
    the JSON-ready object of the wire contract.
    """

    kind: str
    key: str
    time_ns: int
    body: dict[str, Any]


# The items that flow between components: metrics before a snapshot builder,
# snapshots after it. A processor passes on what it does not handle.
Item = ResourceMetrics | Snapshot


@dataclass(slots=True)
class ComponentContext:
    """The runtime's handles for a component besides its config."""

    component_id: str
    pipeline: str = ""
    telemetry: Telemetry = field(default_factory=Telemetry)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("otelsnap"))


@dataclass
class EmptyConfig:
    """Config of a component without options."""

    def validate(self) -> None:
        pass


class Processor:
    """Base class of processors.

    Subclasses set ``type_name`` and ``Config`` (a dataclass with defaults
    whose ``validate()`` raises ConfigError naming the field) and override
    ``process``. ``flush`` and ``shutdown`` return what a buffering
    processor still holds.
    """

    type_name: ClassVar[str] = ""
    Config: ClassVar[type] = EmptyConfig

    def __init__(self, config: Any, context: ComponentContext) -> None:
        self.config = config
        self.context = context
        self.telemetry = context.telemetry
        self.log = context.logger

    def start(self) -> None:
        """Prepare to receive items; called once before the first process()."""

    def process(self, items: list[Item], now_ns: int) -> list[Item]:
        """Process one batch; return the items for the next component.

        ``now_ns`` is the runtime's clock: wall time when serving, the
        recording's arrival time when replaying. Data timestamps come from
        the points, never from this clock.
        """
        return items

    def flush(self, now_ns: int) -> list[Item]:
        """Return items whose wait is over; called on the runtime's timer."""
        return []

    def shutdown(self) -> list[Item]:
        """Return everything still buffered; called once at the end."""
        return []


class Exporter:
    """Base class of exporters.

    ``export`` must return quickly: it hands items to the exporter's own
    queue. To push back, an exporter turns ``accepting`` False while it is
    full and still stores what ``export`` brings; the service then rejects
    new requests with a retryable status. Raising ``Backpressure`` instead
    loses that batch for this exporter (the processors' state has already
    moved past it), so built-in exporters never raise it.
    """

    type_name: ClassVar[str] = ""
    Config: ClassVar[type] = EmptyConfig

    def __init__(self, config: Any, context: ComponentContext) -> None:
        self.config = config
        self.context = context
        self.telemetry = context.telemetry
        self.log = context.logger

    def start(self) -> None:
        """Open files or connections and start sender threads."""

    def export(self, items: list[Item], now_ns: int) -> None:
        raise NotImplementedError

    @property
    def accepting(self) -> bool:
        """False while the exporter wants the receiver to refuse new data."""
        return True

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Deliver or persist what is queued within ``timeout_s``, then stop."""


class Backpressure(Exception):
    """An exporter could not take a batch; the batch is lost for that exporter."""


# Built-in components: config type name → "module:Class", imported on first
# use so that a config naming one component does not import all of them.
BUILTIN_PROCESSORS = {
    "filter": "processors.filter:FilterProcessor",
    "delta_rate": "processors.delta_rate:DeltaRateProcessor",
    "node_snapshot": "processors.node_snapshot:NodeSnapshotProcessor",
    "slo_snapshot": "processors.slo_snapshot:SloSnapshotProcessor",
}
BUILTIN_EXPORTERS = {
    "master": "pipeline.exporters.master:MasterExporter",
    "file": "pipeline.exporters.file:FileExporter",
    "stdout": "pipeline.exporters.file:StdoutExporter",
}
BUILTIN_RECEIVERS = ("otlp",)

PROCESSOR_GROUP = "otelsnap.processors"
EXPORTER_GROUP = "otelsnap.exporters"


def _load(target: str) -> type:
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def _plugin_targets(group: str) -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=group)}


def available_types(kind: str) -> list[str]:
    """List the type names known for ``kind`` ("processor" or "exporter")."""
    builtins, group = _tables(kind)
    return sorted(set(builtins) | set(_plugin_targets(group)))


def component_class(kind: str, type_name: str) -> type | None:
    """Find the class for a config type name, or None when it is unknown."""
    builtins, group = _tables(kind)
    if type_name in builtins:
        return _load(builtins[type_name])
    plugin = _plugin_targets(group).get(type_name)
    if plugin is not None:
        return plugin.load()
    return None


def _tables(kind: str) -> tuple[dict[str, str], str]:
    if kind == "processor":
        return BUILTIN_PROCESSORS, PROCESSOR_GROUP
    if kind == "exporter":
        return BUILTIN_EXPORTERS, EXPORTER_GROUP
    raise ValueError(f"unknown component kind {kind!r}")


def config_fields(config_cls: type) -> dict[str, dataclasses.Field]:
    """Map a config dataclass's field names to their fields."""
    return {f.name: f for f in dataclasses.fields(config_cls)}
