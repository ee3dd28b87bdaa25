"""The synchronous core of a pipeline: processors in order, then exporters.

``Pipeline`` has no threads and no clock of its own. The service calls it
from one worker thread with wall-clock time, and replay calls it directly
with the recording's clock. Both share this code, so a replayed recording exercises
exactly what serves live traffic.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from typing import Protocol

from pipeline.component import Exporter, Item, Processor
from pipeline.decode import DecodeResult

log = logging.getLogger("otelsnap.runtime")

# Generation thresholds of the cyclic garbage collector while serving.
# Decoding allocates many short-lived objects without cycles, so CPython's
# default first threshold (700) runs a collection every few metrics; 10,000
# made the node path about 8 % faster in bench/node_path.py (2-vCPU VM).
GC_THRESHOLDS = (10_000, 20, 20)


def tune_gc() -> None:
    """Collect cycles less often, and leave objects alive now out of later scans.

    Called once the components are built: config, compiled patterns and
    caches made at start-up are frozen (``gc.freeze``), so a full collection
    does not walk them again.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


@dataclass(slots=True)
class Admission:
    """The service's decision on a request a receiver hands it.

    ``accepted`` False means the data was not taken and the sender should
    retry after ``retry_after_s`` seconds. ``reason`` is the sentence for the
    status message (for example "processing queue is full"), and ``code``
    the short form for telemetry attributes (``queue_full``,
    ``exporter_queue_full``, ``shutting_down``).
    """

    accepted: bool
    retry_after_s: float = 0.0
    reason: str = ""
    code: str = "refused"


ACCEPTED = Admission(True)


class Consumer(Protocol):
    """The consumer of a receiver's decoded requests (the service, in production)."""

    def submit(self, result: DecodeResult, received_ns: int, transport: str) -> Admission:
        """Queue a decoded request for the pipelines; must not block."""
        ...


class Pipeline:
    """One configured pipeline: processors in order, then every exporter."""

    def __init__(
        self, name: str, processors: list[Processor], exporters: list[Exporter]
    ) -> None:
        self.name = name
        self.processors = processors
        self.exporters = exporters

    def consume(self, items: list[Item], now_ns: int) -> None:
        """Run one batch through the processors and hand the result to the exporters."""
        self._run_from(0, items, now_ns)

    def tick(self, now_ns: int) -> None:
        """Pass on what each processor's timer has made due."""
        for index, processor in enumerate(self.processors):
            released = processor.flush(now_ns)
            if released:
                self._run_from(index + 1, released, now_ns)

    def drain(self, now_ns: int) -> None:
        """Shut the processors down in order, passing on what each still held."""
        for index, processor in enumerate(self.processors):
            released = processor.shutdown()
            if released:
                self._run_from(index + 1, released, now_ns)

    def _run_from(self, first: int, items: list[Item], now_ns: int) -> None:
        for processor in self.processors[first:]:
            items = processor.process(items, now_ns)
            if not items:
                return
        # Every exporter gets the batch even when an earlier one fails; the
        # first error is raised afterwards so the caller counts and logs it.
        first_error: Exception | None = None
        for exporter in self.exporters:
            try:
                exporter.export(items, now_ns)
            except Exception as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
