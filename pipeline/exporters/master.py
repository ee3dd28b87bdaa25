"""The ``master`` exporter: delivers snapshots to the AtlHyper Master.

``export()`` serializes each snapshot once and appends it to the exporter's
queue (SQLite on disk by default), then returns. One sender thread takes
the oldest rows, posts them, and deletes them only after a 2xx response.
So a Master outage or an otelsnap restart delays snapshots but does not
lose them. docs/exporters.md lists what can still be lost.

Modes:
- ``snapshot``: ``POST {endpoint}/agent/snapshot``, gzip JSON
  ``{"cluster_id", "fetched_at", "node_metrics": {node: body}, "slo_data"}``
  with the snapshots that are queued together, one body per node and
  request, so a backlog goes out in few requests and in order per node.
- ``agent_receiver``: ``POST {endpoint}/metrics/node``, one node snapshot
  per request as plain JSON, as the old metrics DaemonSet sent it to the
  AtlHyper Agent, which rejects bodies over 1 MiB.

Retries: connection errors, timeouts, 429 and 5xx are retried with
exponential backoff and jitter; 429 and 503 honour Retry-After. Other
responses (4xx) are permanent: logged with the response body, counted, and
the queue moves on. A status about the endpoint or the credentials (401,
403, 404, 405, 407, 410, 3xx) drops the whole request's snapshots. After
any other permanent status the request's snapshots are resent one by one,
so only the bodies the Master rejects are dropped.
"""

from __future__ import annotations

import gzip
import logging
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import urlsplit

import orjson

from pipeline.component import ComponentContext, ConfigError, Exporter, Item, Snapshot
from pipeline.config import nested_errors, raise_errors
from pipeline.exporters import http_client as http
from pipeline.exporters.queue import MIB, DiskQueue, PutResult, QueueConfig, QueuedItem, QueueError
from pipeline.logs import event

MODES = ("snapshot", "agent_receiver")
COMPRESSIONS = ("gzip", "none")
SNAPSHOT_PATH = "/agent/snapshot"
AGENT_RECEIVER_PATH = "/metrics/node"
# The AtlHyper Agent's /metrics/node rejects request bodies above this size.
AGENT_MAX_BODY_BYTES = 1 * MIB
SNAPSHOT_KINDS = ("node", "slo")
# The sender reads rows for one request in pages of FIRST_PAGE_ROWS, growing
# up to MAX_BATCH_ROWS, which also caps the snapshots in one request.
FIRST_PAGE_ROWS = 32
MAX_BATCH_ROWS = 1024
# Headers the exporter sets itself; a configured header may not replace them.
RESERVED_HEADERS = frozenset(("content-type", "content-encoding", "content-length", "host"))
_FETCHED_AT_LEN = len("2006-01-02T15:04:05.000Z")
# Permanent statuses about the endpoint, the method or the credentials, not
# about one body (redirects too, since none is followed). The Master would
# reject every snapshot the same way, so a rejected batch is dropped whole
# instead of being resent one snapshot per request.
ENDPOINT_REJECT_STATUSES = frozenset((401, 403, 404, 405, 407, 410))
REJECTED_LOG_EVERY_S = 30.0
# Nodes named in a log line about many snapshots.
MAX_LOGGED_NODES = 5


@dataclass
class RetryConfig:
    """Backoff between attempts of one request, as in the Collector's retry_on_failure.

    The wait starts at ``initial_interval_s`` and grows by ``multiplier`` up
    to ``max_interval_s``, each wait randomized by ±``randomization_factor``.
    ``max_elapsed_s`` bounds how long an item is retried while the Master
    responds to it with a server error (500, 501, 505-599); 0 retries
    without limit. While the Master is unreachable, times out, or responds
    with 429, 502, 503 or 504, items wait without a time limit, bounded by
    the queue size.
    """

    initial_interval_s: float = 5.0
    max_interval_s: float = 30.0
    multiplier: float = 1.5
    randomization_factor: float = 0.5
    max_elapsed_s: float = 300.0

    def validate(self) -> None:
        errors: list[ConfigError] = []
        if self.initial_interval_s <= 0:
            errors.append(
                ConfigError("initial_interval_s", f"invalid value {self.initial_interval_s}: use a time above 0")
            )
        elif self.max_interval_s < self.initial_interval_s:
            errors.append(
                ConfigError(
                    "max_interval_s",
                    f"invalid value {self.max_interval_s}: use at least initial_interval_s "
                    f"({self.initial_interval_s})",
                )
            )
        if self.multiplier < 1:
            errors.append(ConfigError("multiplier", f"invalid value {self.multiplier}: use 1 or more"))
        if not 0 <= self.randomization_factor < 1:
            errors.append(
                ConfigError(
                    "randomization_factor",
                    f"invalid value {self.randomization_factor}: use a number from 0 up to (not including) 1",
                )
            )
        if self.max_elapsed_s < 0:
            errors.append(
                ConfigError(
                    "max_elapsed_s", f"invalid value {self.max_elapsed_s}: use 0 (no limit) or a time above 0"
                )
            )
        raise_errors(errors)


@dataclass
class MasterExporterConfig:
    """Options of the ``master`` exporter; docs/exporters.md has the table."""

    endpoint: str = ""
    mode: str = "snapshot"
    cluster_id: str = ""
    bearer_token: str = field(default="", repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    compression: str = "gzip"
    timeout_s: float = 10.0
    max_body_mib: float = 8.0
    tls: http.TLSClientConfig = field(default_factory=http.TLSClientConfig)
    retry_on_failure: RetryConfig = field(default_factory=RetryConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)

    def validate(self) -> None:
        """Check every option and raise all errors found (ConfigErrors when there are several)."""
        errors = self._endpoint_errors()
        if self.mode not in MODES:
            errors.append(ConfigError("mode", f"invalid mode {self.mode!r}: use one of {', '.join(MODES)}"))
        if self.mode == "snapshot" and not self.cluster_id:
            errors.append(
                ConfigError(
                    "cluster_id",
                    "missing cluster_id: the Master files snapshots under it (X-Cluster-ID); "
                    "set the cluster's id",
                )
            )
        if self.compression not in COMPRESSIONS:
            errors.append(
                ConfigError(
                    "compression",
                    f"invalid compression {self.compression!r}: use one of {', '.join(COMPRESSIONS)}",
                )
            )
        if self.timeout_s <= 0:
            errors.append(ConfigError("timeout_s", f"invalid value {self.timeout_s}: use a time above 0"))
        if self.max_body_mib <= 0:
            errors.append(ConfigError("max_body_mib", f"invalid value {self.max_body_mib}: use a size above 0"))
        errors += self._header_errors()
        for name in ("tls", "retry_on_failure", "queue"):
            errors += nested_errors(name, getattr(self, name))
        raise_errors(errors)

    def _endpoint_errors(self) -> list[ConfigError]:
        if not self.endpoint:
            return [
                ConfigError(
                    "endpoint", "missing endpoint: set the Master's base URL, e.g. http://atlhyper-master:8080"
                )
            ]
        parts = urlsplit(self.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return [
                ConfigError("endpoint", f"invalid URL {self.endpoint!r}: use http://host:port or https://host:port")
            ]
        try:
            parts.port  # raises ValueError for a port that is not a number or out of range
        except ValueError:
            return [
                ConfigError(
                    "endpoint",
                    f"invalid port in {self.endpoint!r}: use a number from 1 to 65535, e.g. http://atlhyper-master:8080",
                )
            ]
        if parts.username or parts.password:
            return [ConfigError("endpoint", "credentials in the URL are not supported: use bearer_token or headers")]
        if parts.query or parts.fragment:
            return [ConfigError("endpoint", f"invalid URL {self.endpoint!r}: remove the query or fragment")]
        has_tls_options = self.tls.ca_file or self.tls.cert_file or self.tls.insecure_skip_verify
        if parts.scheme == "http" and has_tls_options:
            return [ConfigError("tls", "tls options need an https:// endpoint")]
        return []

    def _header_errors(self) -> list[ConfigError]:
        errors = []
        for name, value in self.headers.items():
            if name.lower() in RESERVED_HEADERS:
                errors.append(ConfigError(f"headers.{name}", "the exporter sets this header itself: remove it"))
            elif name.lower() == "authorization" and self.bearer_token:
                errors.append(
                    ConfigError(f"headers.{name}", "set either bearer_token or an Authorization header, not both")
                )
            elif not name or any(c in name for c in " :\r\n") or any(c in str(value) for c in "\r\n"):
                errors.append(
                    ConfigError(
                        f"headers.{name}", "invalid header: names need no spaces or colons, values no line breaks"
                    )
                )
        return errors

    @property
    def max_body_bytes(self) -> int:
        if self.mode == "agent_receiver":
            return min(int(self.max_body_mib * MIB), AGENT_MAX_BODY_BYTES)
        return int(self.max_body_mib * MIB)


class MasterExporter(Exporter):
    """Queue snapshots durably and deliver them to the Master in order per node."""

    type_name = "master"
    Config = MasterExporterConfig

    def __init__(self, config: MasterExporterConfig, context: ComponentContext) -> None:
        super().__init__(config, context)
        self.id = context.component_id
        base = config.endpoint.rstrip("/")
        path = SNAPSHOT_PATH if config.mode == "snapshot" else AGENT_RECEIVER_PATH
        self.url = base + path
        self._gzip = config.compression == "gzip" and config.mode == "snapshot"
        self._cluster_json = orjson.dumps(config.cluster_id)
        self._max_body_bytes = config.max_body_bytes
        self._headers = self._build_headers()
        self._queue: DiskQueue | None = None
        self._pool = None
        self._thread: threading.Thread | None = None
        # _cond guards _deadline and _closed and wakes the sender.
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._deadline: float | None = None
        self._closed = False
        # Sender-thread state. _attempt counts failures since the last
        # response that ended a request (delivered or rejected), so backoff
        # follows the Master's state, not one row.
        self._attempt = 0
        self._first_server_error: dict[int, float] = {}
        self._isolate_through_seq = 0
        self._outage_started: float | None = None

    def _build_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "otelsnap"}
        if self.config.cluster_id:
            headers["X-Cluster-ID"] = self.config.cluster_id
        if self._gzip:
            headers["Content-Encoding"] = "gzip"
        headers.update(self.config.headers)
        if self.config.bearer_token:
            headers["Authorization"] = "Bearer " + self.config.bearer_token
        return headers

    # --- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Open the queue, create the HTTP pool and start the sender thread."""
        self.config.tls.check_files(f"exporters.{self.id}.")
        queue = DiskQueue.from_config(self.config.queue, self.id, logger=self.log)
        try:
            queue.open()
        except (OSError, sqlite3.Error) as err:
            raise ConfigError(
                f"exporters.{self.id}.queue.directory",
                f"cannot open the queue in {self.config.queue.directory!r}: {err}; set a writable "
                f"directory on a volume that survives restarts, or \"\" for an in-memory queue",
            ) from err
        except QueueError as err:
            raise ConfigError(f"exporters.{self.id}.queue.directory", str(err)) from err
        self._queue = queue

        https = self.url.startswith("https://")
        self._pool = http.build_pool(self.config.tls, https, self.log)
        if https and self.config.tls.insecure_skip_verify:
            http.warn_insecure(self.log, self.config.endpoint)

        self._update_queue_gauges()
        event(
            self.log,
            "exporter_started",
            exporter=self.id,
            endpoint=self.config.endpoint,
            mode=self.config.mode,
            queue=queue.path or "memory",
            queued=len(queue),
            header_names=",".join(sorted(self._headers)) or None,
        )

        self._thread = threading.Thread(target=self._run, name=f"otelsnap-{self.id}-sender", daemon=True)
        self._thread.start()

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop taking items, deliver what the deadline allows, persist the rest."""
        if self._queue is None:
            return
        deadline = time.monotonic() + timeout_s
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._deadline = deadline
            self._cond.notify_all()
        self._closing.set()
        if self._thread is not None:
            # A request in flight ends by its own timeout, capped to the deadline.
            self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
            if self._thread.is_alive():
                event(self.log, "sender_still_running", logging.WARNING, exporter=self.id)
        remaining = len(self._queue)
        if remaining and not self._queue.persistent:
            self._report_lost_at_shutdown(remaining)
        self._queue.close()
        if self._pool is not None:
            self._pool.clear()
        event(
            self.log,
            "exporter_stopped",
            exporter=self.id,
            queued=remaining,
            persisted=self._queue.persistent if remaining else None,
        )

    def _report_lost_at_shutdown(self, remaining: int) -> None:
        """Count and log the snapshots an in-memory queue loses when the exporter stops."""
        keys, total = self._queue.keys(MAX_LOGGED_NODES)
        nodes = ",".join(keys) + (f" (+{total - len(keys)} more)" if total > len(keys) else "")
        self._count_dropped(remaining, "shutdown")
        event(
            self.log, "snapshots_lost", logging.WARNING, exporter=self.id, snapshots=remaining, nodes=nodes,
            reason="shutdown with an in-memory queue",
            hint="set queue.directory to a volume that survives restarts to keep them",
        )  # fmt: skip

    @property
    def accepting(self) -> bool:
        """False after shutdown, and under ``block`` while the queue is at or over its bound."""
        if self._closed:
            return False
        if self._queue is None or self.config.queue.when_full != "block":
            return True
        return not self._queue.is_full()

    @property
    def queue(self) -> DiskQueue | None:
        """The delivery queue, once started."""
        return self._queue

    # --- export (caller's thread) --------------------------------------------

    def export(self, items: list[Item], now_ns: int) -> None:
        """Serialize the snapshots and append them to the queue.

        Under ``queue.when_full: block`` the snapshots are stored even when
        the queue is full, because they come from a request the service has
        already accepted. ``accepting`` keeps new requests out meanwhile.
        """
        if self._queue is None:
            raise RuntimeError(f"exporter {self.id} is not started")
        if self._closed:
            self._count_dropped(len(items), "shutdown")
            event(self.log, "export_after_shutdown", logging.WARNING, every_s=60, exporter=self.id, items=len(items))
            return
        entries = self._encode(items)
        if not entries:
            return
        try:
            result = self._queue.put(entries, time.time_ns())
        except sqlite3.Error as err:
            # A full or failing disk: these snapshots cannot be kept.
            self._count_dropped(len(entries), "queue_write_error")
            event(
                self.log, "queue_write_failed", logging.ERROR, every_s=60, exporter=self.id,
                path=self._queue.path, snapshots=len(entries), error=err,
            )  # fmt: skip
            return
        evicted = result.evicted
        self.telemetry.add("otelsnap_exporter_enqueued_snapshots", len(entries) - _unstored(evicted), exporter=self.id)
        if evicted:
            self._drop(evicted, "queue_full")
        if result.over_bound:
            self._count_overflow(result)
        self._update_queue_gauges()
        with self._cond:
            self._cond.notify()

    def _encode(self, items: list[Item]) -> list[QueuedItem]:
        entries: list[QueuedItem] = []
        not_snapshots = unsupported = 0
        for item in items:
            if not isinstance(item, Snapshot):
                not_snapshots += 1
                continue
            if item.kind not in SNAPSHOT_KINDS or (self.config.mode == "agent_receiver" and item.kind != "node"):
                unsupported += 1
                event(
                    self.log, "snapshot_unsupported", logging.WARNING, every_s=300, key=item.kind,
                    exporter=self.id, kind=item.kind, mode=self.config.mode,
                )  # fmt: skip
                continue
            try:
                body = orjson.dumps(item.body)
            except orjson.JSONEncodeError as err:
                self.telemetry.add("otelsnap_exporter_failed_snapshots", 1, exporter=self.id, reason="encode_error")
                event(self.log, "snapshot_encode_failed", logging.ERROR, exporter=self.id, node=item.key, error=err)
                continue
            if self._envelope_bytes() + self._entry_overhead(item.kind, item.key) + len(body) > self._max_body_bytes:
                self.telemetry.add("otelsnap_exporter_failed_snapshots", 1, exporter=self.id, reason="too_large")
                event(
                    self.log, "snapshot_too_large", logging.ERROR, exporter=self.id, node=item.key,
                    kind=item.kind, size_bytes=len(body), max_bytes=self._max_body_bytes,
                )  # fmt: skip
                continue
            entries.append(QueuedItem(item.kind, item.key, item.time_ns, body))
        if unsupported:
            self._count_dropped(unsupported, "unsupported_kind")
        if not_snapshots:
            self._count_dropped(not_snapshots, "not_a_snapshot")
            event(
                self.log, "items_not_snapshots", logging.WARNING, every_s=300, exporter=self.id,
                items=not_snapshots, hint="put a snapshot builder (node_snapshot) before the master exporter",
            )  # fmt: skip
        return entries

    # --- sender thread -------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                if not self._send_next():
                    return
            except Exception as err:  # keep delivering after an unexpected error
                if self._queue is None or (self._closing.is_set() and self._deadline_passed()):
                    return
                event(self.log, "sender_error", logging.ERROR, exporter=self.id, error=repr(err), exc_info=True)
                if not self._sleep(1.0):
                    return

    def _send_next(self) -> bool:
        """Send the head of the queue once; return False when the sender should stop."""
        with self._cond:
            while True:
                if self._deadline is not None and (len(self._queue) == 0 or self._deadline_passed()):
                    return False
                if len(self._queue):
                    break
                self._cond.wait()
        batch = self._compose()
        if not batch:
            return True
        if self._first_server_error:
            # Forget the retry clocks of rows that left the queue by eviction.
            for seq in [s for s in self._first_server_error if s < batch[0].seq]:
                del self._first_server_error[seq]
        result = http.post(self._pool, self.url, self._payload(batch), self._headers, self._request_timeout())
        self.telemetry.add("otelsnap_exporter_send_duration_seconds", result.latency_s, exporter=self.id)
        self.telemetry.add("otelsnap_exporter_sends", 1, exporter=self.id)
        if result.outcome == http.DELIVERED:
            self._delivered(batch)
            return True
        if result.outcome == http.PERMANENT:
            self._rejected(batch, result)
            return True
        delay = self._retry(batch, result)
        return delay is None or self._sleep(delay)

    def _compose(self) -> list[QueuedItem]:
        """Take the oldest rows that can share one request.

        One request contains each node at most once and at most one SLO
        snapshot; the batch ends before the first row that repeats a key or
        would pass the body limit, so rows leave in queue order. Rows are
        read in growing pages, so a long backlog is not read whole for
        every request.
        """
        if self.config.mode == "agent_receiver":
            return self._queue.peek(1, self._max_body_bytes)
        page = FIRST_PAGE_ROWS
        while True:
            rows = self._queue.peek(page, self._max_body_bytes)
            if rows and rows[0].seq <= self._isolate_through_seq:
                return rows[:1]
            batch = self._fill(rows)
            if len(batch) < len(rows) or len(rows) < page or page >= MAX_BATCH_ROWS:
                return batch
            page = min(page * 4, MAX_BATCH_ROWS)

    def _fill(self, rows: list[QueuedItem]) -> list[QueuedItem]:
        """Return the leading rows that fit one request."""
        batch: list[QueuedItem] = []
        seen: set[tuple[str, str]] = set()
        size = self._envelope_bytes()
        for row in rows:
            identity = (row.kind, row.key if row.kind == "node" else "")
            cost = row.size + self._entry_overhead(row.kind, row.key)
            if identity in seen or (batch and size + cost > self._max_body_bytes):
                break
            batch.append(row)
            seen.add(identity)
            size += cost
        return batch

    def _envelope_bytes(self) -> int:
        """Bytes of a request body without snapshots."""
        if self.config.mode == "agent_receiver":
            return 0
        return (
            len(b'{"cluster_id":') + len(self._cluster_json) + len(b',"fetched_at":"') + _FETCHED_AT_LEN
            + len(b'","node_metrics":{') + len(b"}}")
        )  # fmt: skip

    def _entry_overhead(self, kind: str, key: str) -> int:
        """Bytes a snapshot adds to a request body besides its own body."""
        if self.config.mode == "agent_receiver":
            return 0
        if kind == "slo":
            return len(b',"slo_data":')
        return len(orjson.dumps(key)) + len(b":,")

    def _payload(self, batch: list[QueuedItem]) -> bytes:
        if self.config.mode == "agent_receiver":
            return batch[0].body
        body = build_snapshot_body(self._cluster_json, rfc3339_ms(time.time_ns()), batch)
        if self._gzip:
            return gzip.compress(body, compresslevel=6)
        return body

    def _request_timeout(self) -> float:
        timeout = self.config.timeout_s
        if self._deadline is not None:
            timeout = min(timeout, max(0.1, self._deadline - time.monotonic()))
        return timeout

    # --- outcomes ------------------------------------------------------------

    def _delivered(self, batch: list[QueuedItem]) -> None:
        self._queue.remove([row.seq for row in batch])
        for row in batch:
            self._first_server_error.pop(row.seq, None)
        self.telemetry.add("otelsnap_exporter_sent_snapshots", len(batch), exporter=self.id)
        self._update_queue_gauges()
        if self._outage_started is not None:
            event(
                self.log, "export_resumed", exporter=self.id, endpoint=self.config.endpoint,
                outage_s=round(time.monotonic() - self._outage_started, 1), queued=len(self._queue),
            )  # fmt: skip
            self._outage_started = None
        self._attempt = 0

    def _rejected(self, batch: list[QueuedItem], result: http.SendResult) -> None:
        """Handle a permanent failure: isolate a multi-item batch, else drop the item.

        A status about the endpoint or the credentials drops the whole batch
        at once, because resending its snapshots one by one would only
        multiply the same rejection.
        """
        if rejects_endpoint(result.status):
            self._rejected_batch(batch, result)
            return
        if len(batch) > 1:
            # One bad snapshot must not take its neighbours down: send each
            # of these rows alone to find which ones the Master rejects.
            self._isolate_through_seq = batch[-1].seq
            event(
                self.log, "export_rejected_batch", logging.WARNING, exporter=self.id,
                status=result.status, items=len(batch), action="resending one by one",
            )  # fmt: skip
            return
        row = batch[0]
        self._queue.remove([row.seq])
        self._first_server_error.pop(row.seq, None)
        self.telemetry.add(
            "otelsnap_exporter_failed_snapshots", 1, exporter=self.id, reason="rejected", status=str(result.status)
        )
        event(
            self.log, "export_rejected", logging.ERROR, exporter=self.id, endpoint=self.url,
            status=result.status, node=row.key, kind=row.kind, response=result.response_excerpt,
        )  # fmt: skip
        self._update_queue_gauges()
        self._attempt = 0

    def _rejected_batch(self, batch: list[QueuedItem], result: http.SendResult) -> None:
        """Drop a batch the Master rejected for its endpoint or credentials; log once per status and 30 s."""
        self._queue.remove([row.seq for row in batch])
        for row in batch:
            self._first_server_error.pop(row.seq, None)
        # An endpoint status is not about single bodies, so the isolation of rows ends.
        self._isolate_through_seq = 0
        self.telemetry.add(
            "otelsnap_exporter_failed_snapshots", len(batch), exporter=self.id, reason="rejected",
            status=str(result.status),
        )  # fmt: skip
        hint = (
            "check bearer_token and headers"
            if result.status in (401, 403, 407)
            else "check endpoint and mode: the Master does not serve this URL"
        )
        event(
            self.log, "export_rejected", logging.ERROR, every_s=REJECTED_LOG_EVERY_S, key=result.status,
            exporter=self.id, endpoint=self.url, status=result.status, snapshots=len(batch),
            nodes=_node_list(batch), response=result.response_excerpt, action="dropped", hint=hint,
        )  # fmt: skip
        self._update_queue_gauges()
        self._attempt = 0

    def _retry(self, batch: list[QueuedItem], result: http.SendResult) -> float | None:
        """Count a retryable failure and return the wait, or None when the batch expired."""
        now = time.monotonic()
        self._attempt += 1
        self.telemetry.add("otelsnap_exporter_send_retries", 1, exporter=self.id, reason=result.reason)
        if self._outage_started is None:
            self._outage_started = now
        if result.retry_class == http.SERVER_ERROR and self.config.retry_on_failure.max_elapsed_s > 0:
            expired = self._expire(batch, result, now)
            if expired:
                return None
        delay = self._backoff(self._attempt)
        if result.retry_after_s is not None:
            delay = max(delay, result.retry_after_s)
        event(
            self.log, "export_retry", logging.WARNING, every_s=30, key=result.reason, exporter=self.id,
            endpoint=self.url, reason=result.reason, status=result.status or None,
            error=result.error or None, response=result.response_excerpt or None,
            attempt=self._attempt, delay_s=round(delay, 2), items=len(batch), queued=len(self._queue),
        )  # fmt: skip
        return delay

    def _expire(self, batch: list[QueuedItem], result: http.SendResult, now: float) -> bool:
        limit = self.config.retry_on_failure.max_elapsed_s
        expired = []
        for row in batch:
            first = self._first_server_error.setdefault(row.seq, now)
            if now - first >= limit:
                expired.append(row)
        if not expired:
            return False
        removed = self._queue.remove([row.seq for row in expired])
        for row in expired:
            self._first_server_error.pop(row.seq, None)
        if removed:
            self._drop(expired, "retry_expired", status=result.status)
        self._update_queue_gauges()
        self._attempt = 0
        return True

    def _backoff(self, attempt: int) -> float:
        retry = self.config.retry_on_failure
        interval = min(retry.initial_interval_s * retry.multiplier ** (attempt - 1), retry.max_interval_s)
        spread = retry.randomization_factor * interval
        return random.uniform(interval - spread, interval + spread)

    def _sleep(self, delay_s: float) -> bool:
        """Wait ``delay_s``; return False when shutdown's deadline comes first."""
        end = time.monotonic() + delay_s
        while (now := time.monotonic()) < end:
            if self._deadline is not None:
                if end > self._deadline:
                    return False
                time.sleep(end - now)
            else:
                self._closing.wait(end - now)
        return True

    def _deadline_passed(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    # --- accounting ------------------------------------------------------------

    def _drop(self, rows: list[QueuedItem], reason: str, status: int | None = None) -> None:
        """Count and log snapshots that will never be delivered, one event per snapshot."""
        self._count_dropped(len(rows), reason)
        now_ns = time.time_ns()
        for row in rows:
            event(
                self.log, "snapshot_dropped", logging.WARNING, exporter=self.id, reason=reason,
                node=row.key, kind=row.kind, time=rfc3339_ms(row.time_ns),
                age_s=round((now_ns - row.time_ns) / 1e9, 1),
                queued_s=round((now_ns - row.enqueued_ns) / 1e9, 1) if row.enqueued_ns else None,
                status=status,
            )  # fmt: skip

    def _count_overflow(self, result: PutResult) -> None:
        """Count snapshots stored past the queue's bound; log when the queue goes past it."""
        self.telemetry.add("otelsnap_exporter_queue_overflow_snapshots", result.over_bound, exporter=self.id)
        if result.went_over:
            event(
                self.log, "queue_overflow", logging.WARNING, every_s=30, exporter=self.id,
                over_bound=result.over_bound, queued=len(self._queue), queued_bytes=self._queue.size_bytes,
                max_items=self._queue.max_items, max_bytes=self._queue.max_bytes,
                action="rejecting new requests until the queue is below its bound",
            )  # fmt: skip

    def _count_dropped(self, n: int, reason: str) -> None:
        self.telemetry.add("otelsnap_exporter_dropped_snapshots", n, exporter=self.id, reason=reason)

    def _update_queue_gauges(self) -> None:
        self.telemetry.set("otelsnap_exporter_queue_size", len(self._queue), exporter=self.id)
        self.telemetry.set("otelsnap_exporter_queue_bytes", self._queue.size_bytes, exporter=self.id)


def rejects_endpoint(status: int) -> bool:
    """Tell whether a permanent status is about the endpoint or credentials rather than one body."""
    return 300 <= status < 400 or status in ENDPOINT_REJECT_STATUSES


def _node_list(rows: list[QueuedItem]) -> str:
    """Name up to MAX_LOGGED_NODES distinct keys of ``rows``, with a count of the rest."""
    keys = list(dict.fromkeys(row.key for row in rows))
    shown = ",".join(keys[:MAX_LOGGED_NODES])
    more = len(keys) - MAX_LOGGED_NODES
    return f"{shown} (+{more} more)" if more > 0 else shown


def _unstored(evicted: list[QueuedItem]) -> int:
    """Count evicted entries that were new and never stored (seq 0)."""
    return sum(1 for row in evicted if row.seq == 0)


def build_snapshot_body(cluster_json: bytes, fetched_at: str, batch: list[QueuedItem]) -> bytes:
    """Assemble the /agent/snapshot JSON from already serialized snapshot bodies.

    ``slo_data`` is present only when the batch contains an SLO snapshot.
    """
    nodes = [orjson.dumps(row.key) + b":" + row.body for row in batch if row.kind == "node"]
    parts = [
        b'{"cluster_id":', cluster_json,
        b',"fetched_at":"', fetched_at.encode(),
        b'","node_metrics":{', b",".join(nodes), b"}",
    ]  # fmt: skip
    for row in batch:
        if row.kind == "slo":
            parts += (b',"slo_data":', row.body)
    parts.append(b"}")
    return b"".join(parts)


def rfc3339_ms(time_ns: int) -> str:
    """Format Unix ns as RFC 3339 UTC with milliseconds (truncated) and Z."""
    seconds, rest = divmod(time_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest // 1_000_000:03d}Z"
