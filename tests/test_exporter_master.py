"""The master exporter against a real HTTP server standing in for the Master.

Snapshot bodies carry values read from the six-node node_exporter sample
(see master_stub.node_body). The stand-in decodes gzip and JSON with the
standard library, which is independent of the exporter's orjson.
"""

from __future__ import annotations

import email.utils
import gzip
import itertools
import json
import logging
import re
import sqlite3
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from master_stub import INT64_MAX, MasterStub, Reply, free_port, node_body, node_values
from pipeline.component import ComponentContext, ConfigError, Snapshot
from pipeline.convert import ConvertOptions, exposition_to_request
from pipeline.decode import decode_request
from pipeline.exporters.http_client import MAX_RETRY_AFTER_S, TLSClientConfig, parse_retry_after
from pipeline.exporters.master import MasterExporter, MasterExporterConfig, RetryConfig
from pipeline.exporters.queue import MIB, DiskQueue, QueueConfig, queue_path
from pipeline.promtext import parse
from pipeline.telemetry import Telemetry

VALUES = node_values()
NODES = sorted(VALUES)
T0 = 1_766_400_000_000_000_000  # 2025-12-22T10:40:00Z
SCRAPE_NS = 15_000_000_000
CLUSTER = "atlhyper-home"
LOGGER = "otelsnap.test.master"
_LOGGER_IDS = itertools.count()


def snap(name: str, scrape: int = 0) -> Snapshot:
    time_ns = T0 + scrape * SCRAPE_NS
    return Snapshot("node", name, time_ns, node_body(name, VALUES[name], time_ns))


def compact(obj) -> bytes:
    """JSON as the exporter writes it, made with the standard library."""
    return json.dumps(obj, separators=(",", ":")).encode()


def make_exporter(tmp_path: Path, endpoint: str, retry: dict | None = None, queue: dict | None = None, **options) -> MasterExporter:
    retry_options = {"initial_interval_s": 0.05, "max_interval_s": 0.2, "randomization_factor": 0.0, **(retry or {})}
    queue_options = {"directory": str(tmp_path), **(queue or {})}
    config = MasterExporterConfig(
        endpoint=endpoint,
        cluster_id=CLUSTER,
        timeout_s=2.0,
        retry_on_failure=RetryConfig(**retry_options),
        queue=QueueConfig(**queue_options),
        **options,
    )
    config.validate()
    # A logger per exporter, so the rate limit of one test's log events
    # does not hide another test's.
    logger = logging.getLogger(f"{LOGGER}.{next(_LOGGER_IDS)}")
    context = ComponentContext("master", telemetry=Telemetry(), logger=logger)
    return MasterExporter(config, context)


def events(caplog, name: str) -> list[dict]:
    return [
        r.event_fields for r in caplog.records if getattr(r, "event_fields", {}).get("event") == name
    ]


def wait_until(condition, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.fixture
def stub():
    servers: list[MasterStub] = []

    def start(port: int = 0, replies: list[Reply] | None = None, ssl_context=None) -> MasterStub:
        server = MasterStub(port, replies, ssl_context).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def exporters():
    started: list[MasterExporter] = []

    def track(exporter: MasterExporter) -> MasterExporter:
        exporter.start()
        started.append(exporter)
        return exporter

    yield track
    for exporter in started:
        exporter.shutdown(timeout_s=0.2)


@pytest.fixture(autouse=True)
def capture_logs(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)


# --- request shape -----------------------------------------------------------


def test_snapshot_request_shape(tmp_path, stub, exporters):
    master = stub()
    exporter = exporters(make_exporter(tmp_path, master.url))
    items = [snap(name) for name in NODES]
    before = time.time()
    exporter.export(items, T0)

    assert master.wait_for(1)
    assert wait_until(lambda: len(exporter.queue) == 0)
    after = time.time()
    request = master.received[0]
    assert request.path == "/agent/snapshot"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["X-Cluster-ID"] == CLUSTER
    body = request.body
    assert set(body) == {"cluster_id", "fetched_at", "node_metrics"}
    assert body["cluster_id"] == CLUSTER
    assert list(body["node_metrics"]) == NODES
    for item in items:
        assert body["node_metrics"][item.key] == item.body
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["fetched_at"])
    fetched = time.mktime(time.strptime(body["fetched_at"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert before - 1 <= fetched <= after
    system = body["node_metrics"]["desk-zero"]["system"]
    assert system["filefd_maximum"] == INT64_MAX
    assert isinstance(system["filefd_maximum"], int)
    assert body["node_metrics"]["desk-zero"]["memory"]["total"] == 33528840192
    assert exporter.telemetry.get("otelsnap_exporter_sent_snapshots") == 6
    assert exporter.telemetry.get("otelsnap_exporter_sends") == 1


def test_slo_data_only_with_slo_snapshot(tmp_path, stub, exporters):
    master = stub()
    exporter = exporters(make_exporter(tmp_path, master.url, compression="none"))
    # Invented SLO body: the sample has no Linkerd or ingress metrics.
    slo = {"timestamp": 1766400000, "services": [{"namespace": "shop", "name": "web", "total_request_delta": 42}]}
    exporter.export([snap("desk-one"), Snapshot("slo", CLUSTER, T0, slo)], T0)
    exporter.export([snap("desk-one", 1)], T0)

    assert master.wait_for(2)
    first, second = master.received[0], master.received[1]
    assert "Content-Encoding" not in first.headers
    assert first.body["slo_data"] == slo
    assert list(first.body["node_metrics"]) == ["desk-one"]
    assert "slo_data" not in second.body
    assert json.loads(first.raw) == first.body


# --- retries -----------------------------------------------------------------


def test_master_down_then_up(tmp_path, stub, exporters, caplog):
    port = free_port()
    exporter = exporters(make_exporter(tmp_path, f"http://127.0.0.1:{port}"))
    expected = []
    for scrape in range(3):
        items = [snap(name, scrape) for name in NODES]
        exporter.export(items, T0)
        expected += [(item.key, item.body["timestamp"]) for item in items]
    assert wait_until(lambda: exporter.telemetry.get("otelsnap_exporter_send_retries", exporter="master", reason="connection_refused") >= 2)

    master = stub(port)
    assert wait_until(lambda: len(master.nodes_in_order()) >= len(expected))
    assert wait_until(lambda: len(exporter.queue) == 0)
    time.sleep(0.2)
    assert master.nodes_in_order() == expected
    assert len(master.received) == 3
    assert exporter.telemetry.get("otelsnap_exporter_sent_snapshots") == 18
    assert exporter.telemetry.get("otelsnap_exporter_dropped_snapshots") == 0
    resumed = events(caplog, "export_resumed")
    assert len(resumed) == 1
    assert resumed[0]["outage_s"] > 0


def test_503_twice_then_200(tmp_path, stub, exporters):
    master = stub(replies=[Reply(503), Reply(503)])
    exporter = exporters(make_exporter(tmp_path, master.url))
    exporter.export([snap("raspi-one")], T0)

    assert master.wait_for(3)
    assert wait_until(lambda: len(exporter.queue) == 0)
    time.sleep(0.2)
    assert [r.status for r in master.received] == [503, 503, 200]
    first_nodes = master.received[0].body["node_metrics"]
    assert all(r.body["node_metrics"] == first_nodes for r in master.received)
    assert master.nodes_in_order() == [("raspi-one", "2025-12-22T10:40:00.000Z")]
    assert exporter.telemetry.get("otelsnap_exporter_send_retries", exporter="master", reason="status_503") == 2
    assert exporter.telemetry.get("otelsnap_exporter_sent_snapshots") == 1


def test_429_honours_retry_after(tmp_path, stub, exporters):
    master = stub(replies=[Reply(429, {"Retry-After": "1"})])
    exporter = exporters(make_exporter(tmp_path, master.url))
    exporter.export([snap("raspi-zero")], T0)

    assert master.wait_for(2, timeout_s=5)
    gap = master.received[1].arrived - master.received[0].arrived
    assert gap >= 1.0
    assert master.received[1].status == 200


def test_parse_retry_after():
    now = time.time()
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after("0", now) == 0.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("86400", now) == MAX_RETRY_AFTER_S
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28.0 <= parse_retry_after(date, now) <= 30.0
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now) == 0.0


def test_400_logged_not_retried(tmp_path, stub, exporters, caplog):
    reason = b'{"error":"invalid node_metrics: missing timestamp"}'
    master = stub(replies=[Reply(400, body=reason)])
    exporter = exporters(make_exporter(tmp_path, master.url))
    exporter.export([snap("desk-two")], T0)
    assert master.wait_for(1)
    exporter.export([snap("desk-one")], T0)

    assert master.wait_for(2)
    assert wait_until(lambda: len(exporter.queue) == 0)
    time.sleep(0.3)
    assert [r.status for r in master.received] == [400, 200]
    assert master.nodes_in_order() == [("desk-one", "2025-12-22T10:40:00.000Z")]
    rejected = events(caplog, "export_rejected")
    assert len(rejected) == 1
    assert rejected[0]["node"] == "desk-two"
    assert rejected[0]["status"] == 400
    assert rejected[0]["response"] == reason.decode()
    assert exporter.telemetry.get("otelsnap_exporter_failed_snapshots", exporter="master", reason="rejected", status="400") == 1
    assert exporter.telemetry.get("otelsnap_exporter_send_retries") == 0


def test_400_batch_resent_one_by_one(tmp_path, stub, exporters, caplog):
    master = stub(replies=[Reply(400), Reply(200), Reply(400, body=b"bad node"), Reply(200)])
    port = free_port()
    exporter = exporters(make_exporter(tmp_path, f"http://127.0.0.1:{port}"))
    exporter.export([snap("desk-zero"), snap("desk-one"), snap("desk-two")], T0)
    master.stop()
    master = stub(port, replies=[Reply(400), Reply(200), Reply(400, body=b"bad node"), Reply(200)])

    assert master.wait_for(4)
    assert wait_until(lambda: len(exporter.queue) == 0)
    time.sleep(0.2)
    assert [list(r.body["node_metrics"]) for r in master.received] == [
        ["desk-zero", "desk-one", "desk-two"],
        ["desk-zero"],
        ["desk-one"],
        ["desk-two"],
    ]
    assert [name for name, _ in master.nodes_in_order()] == ["desk-zero", "desk-two"]
    assert [e["node"] for e in events(caplog, "export_rejected")] == ["desk-one"]
    assert exporter.telemetry.get("otelsnap_exporter_failed_snapshots") == 1
    assert exporter.telemetry.get("otelsnap_exporter_sent_snapshots") == 2


@pytest.mark.parametrize("status", [401, 403, 404, 405])
def test_endpoint_status_drops_batch_whole(status, tmp_path, stub, exporters, caplog):
    port = free_port()
    exporter = exporters(make_exporter(tmp_path, f"http://127.0.0.1:{port}"))
    exporter.export([snap("desk-zero"), snap("desk-one"), snap("desk-two")], T0)
    master = stub(port, replies=[Reply(status, body=b"missing or wrong bearer token") for _ in range(10)])

    assert master.wait_for(1)
    assert wait_until(lambda: len(exporter.queue) == 0)
    exporter.export([snap("desk-zero", 1), snap("raspi-one", 1)], T0 + SCRAPE_NS)
    assert master.wait_for(2)
    assert wait_until(lambda: len(exporter.queue) == 0)
    time.sleep(0.2)

    assert [list(r.body["node_metrics"]) for r in master.received] == [
        ["desk-zero", "desk-one", "desk-two"],
        ["desk-zero", "raspi-one"],
    ]
    assert exporter.telemetry.get(
        "otelsnap_exporter_failed_snapshots", exporter="master", reason="rejected", status=str(status)
    ) == 5
    assert exporter.telemetry.get("otelsnap_exporter_sent_snapshots") == 0
    rejected = events(caplog, "export_rejected")
    assert len(rejected) == 1  # the second batch falls in the 30 s window
    assert rejected[0]["status"] == status
    assert rejected[0]["snapshots"] == 3
    assert rejected[0]["nodes"] == "desk-zero,desk-one,desk-two"
    assert rejected[0]["response"] == "missing or wrong bearer token"
    assert events(caplog, "export_rejected_batch") == []


def test_endpoint_status_ends_isolation(tmp_path, stub, exporters, caplog):
    port = free_port()
    exporter = exporters(make_exporter(tmp_path, f"http://127.0.0.1:{port}"))
    exporter.export([snap("desk-zero"), snap("desk-one"), snap("desk-two")], T0)
    master = stub(port, replies=[Reply(400), Reply(401)])

    assert master.wait_for(2)
    assert wait_until(lambda: len(exporter.queue) == 0)
    time.sleep(0.2)
    # After the 401 the rest leaves as one request again, and the Master takes it.
    assert [list(r.body["node_metrics"]) for r in master.received] == [
        ["desk-zero", "desk-one", "desk-two"],
        ["desk-zero"],
        ["desk-one", "desk-two"],
    ]
    assert exporter.telemetry.get("otelsnap_exporter_failed_snapshots", exporter="master", reason="rejected", status="401") == 1
    assert exporter.telemetry.get("otelsnap_exporter_sent_snapshots") == 2


def test_node_list_names_five():
    from pipeline.exporters.master import _node_list
    from pipeline.exporters.queue import QueuedItem

    rows = [QueuedItem("node", f"node-{i}", T0, b"{}") for i in (1, 2, 2, 3, 4, 5, 6, 7)]
    assert _node_list(rows) == "node-1,node-2,node-3,node-4,node-5 (+2 more)"


def test_server_errors_expire(tmp_path, stub, exporters, caplog):
    master = stub(replies=[Reply(500, body=b"panic") for _ in range(100)])
    exporter = exporters(make_exporter(tmp_path, master.url, retry={"max_elapsed_s": 0.3}))
    exporter.export([snap("raspi-nfs")], T0)

    assert wait_until(lambda: events(caplog, "snapshot_dropped"))
    dropped = events(caplog, "snapshot_dropped")
    assert [(e["node"], e["reason"], e["status"]) for e in dropped] == [("raspi-nfs", "retry_expired", 500)]
    assert dropped[0]["time"] == "2025-12-22T10:40:00.000Z"
    assert exporter.telemetry.get("otelsnap_exporter_dropped_snapshots", exporter="master", reason="retry_expired") == 1
    attempts = len(master.received)
    assert 2 <= attempts <= 10

    master.replies.clear()
    exporter.export([snap("raspi-one")], T0)
    assert wait_until(lambda: master.nodes_in_order() == [("raspi-one", "2025-12-22T10:40:00.000Z")])


def test_unreachable_master_never_expires(tmp_path, stub, exporters):
    port = free_port()
    exporter = exporters(make_exporter(tmp_path, f"http://127.0.0.1:{port}", retry={"max_elapsed_s": 0.2}))
    exporter.export([snap("desk-two")], T0)
    time.sleep(0.8)
    master = stub(port)

    assert wait_until(lambda: master.nodes_in_order() == [("desk-two", "2025-12-22T10:40:00.000Z")])
    assert exporter.telemetry.get("otelsnap_exporter_dropped_snapshots") == 0


# --- bounds ------------------------------------------------------------------


def test_drop_oldest_counts_and_logs(tmp_path, stub, exporters, caplog):
    port = free_port()
    exporter = exporters(make_exporter(tmp_path, f"http://127.0.0.1:{port}", queue={"max_items": 3}))
    items = [snap(name) for name in NODES[:5]]
    for item in items:
        exporter.export([item], T0)

    dropped = events(caplog, "snapshot_dropped")
    assert [(e["node"], e["reason"]) for e in dropped] == [(NODES[0], "queue_full"), (NODES[1], "queue_full")]
    assert all(e["age_s"] > 0 for e in dropped)
    assert exporter.telemetry.get("otelsnap_exporter_dropped_snapshots", exporter="master", reason="queue_full") == 2
    assert exporter.telemetry.get("otelsnap_exporter_queue_size", exporter="master") == 3

    master = stub(port)
    assert wait_until(lambda: len(master.nodes_in_order()) == 3)
    assert [name for name, _ in master.nodes_in_order()] == NODES[2:5]


def queued_keys(tmp_path: Path) -> list[str]:
    """Node keys of the queue file's rows in order, read with an independent connection."""
    with sqlite3.connect(queue_path(str(tmp_path), "master")) as db:
        return [key for (key,) in db.execute("SELECT key FROM snapshots ORDER BY seq")]


def test_block_stores_call_past_bound(tmp_path, stub, exporters, caplog):
    port = free_port()
    exporter = exporters(
        make_exporter(tmp_path, f"http://127.0.0.1:{port}", queue={"max_items": 2, "when_full": "block"})
    )
    exporter.export([snap("desk-zero")], T0)
    assert exporter.accepting

    # max_items 2 with one queued: the call of three is stored whole, two past the bound.
    assert exporter.export([snap("desk-one"), snap("desk-two"), snap("raspi-one")], T0) is None
    assert not exporter.accepting
    assert queued_keys(tmp_path) == ["desk-zero", "desk-one", "desk-two", "raspi-one"]
    assert exporter.telemetry.get("otelsnap_exporter_enqueued_snapshots", exporter="master") == 4
    assert exporter.telemetry.get("otelsnap_exporter_queue_overflow_snapshots", exporter="master") == 2
    assert exporter.telemetry.get("otelsnap_exporter_queue_size", exporter="master") == 4

    # A call already in processing when the queue filled is stored too.
    exporter.export([snap("raspi-zero")], T0)
    assert queued_keys(tmp_path) == ["desk-zero", "desk-one", "desk-two", "raspi-one", "raspi-zero"]
    assert exporter.telemetry.get("otelsnap_exporter_queue_overflow_snapshots", exporter="master") == 3
    overflow = events(caplog, "queue_overflow")
    assert len(overflow) == 1
    assert overflow[0]["exporter"] == "master"
    assert overflow[0]["over_bound"] == 2
    assert overflow[0]["queued"] == 4
    assert overflow[0]["max_items"] == 2
    time.sleep(0.3)
    assert not exporter.accepting

    master = stub(port)
    assert wait_until(lambda: exporter.accepting)
    assert wait_until(lambda: len(master.nodes_in_order()) == 5)
    assert [name for name, _ in master.nodes_in_order()] == ["desk-zero", "desk-one", "desk-two", "raspi-one", "raspi-zero"]
    assert exporter.telemetry.get("otelsnap_exporter_dropped_snapshots") == 0
    assert exporter.telemetry.get("otelsnap_exporter_failed_snapshots") == 0


def test_block_accepting_false_until_below_bound(tmp_path, stub, exporters):
    # One node's four scrapes: a request carries a node once, so the queue
    # drains one row per request, 0.2 s apart.
    port = free_port()
    exporter = exporters(
        make_exporter(tmp_path, f"http://127.0.0.1:{port}", queue={"max_items": 2, "when_full": "block"})
    )
    exporter.export([snap("desk-zero", scrape) for scrape in range(4)], T0)
    assert not exporter.accepting

    master = stub(port, replies=[Reply(200, delay_s=0.2) for _ in range(4)])
    # The queue only shrinks now, so a length read before ``accepting`` that
    # is below the bound, or one read after it that is at or over the bound,
    # decides what ``accepting`` must have been.
    below = at_or_over = 0
    end = time.monotonic() + 10.0
    while time.monotonic() < end:
        before = len(exporter.queue)
        accepting = exporter.accepting
        after = len(exporter.queue)
        if before < 2:
            assert accepting, f"queue of {before} rows is below max_items 2 but accepting is False"
            below += 1
        if after >= 2:
            assert not accepting, f"queue of {after} rows is at or over max_items 2 but accepting is True"
            at_or_over += 1
        if before == 0:
            break
        time.sleep(0.005)
    assert below > 0
    assert at_or_over > 0
    assert wait_until(lambda: len(master.nodes_in_order()) == 4)
    assert master.nodes_in_order() == [
        ("desk-zero", "2025-12-22T10:40:00.000Z"),
        ("desk-zero", "2025-12-22T10:40:15.000Z"),
        ("desk-zero", "2025-12-22T10:40:30.000Z"),
        ("desk-zero", "2025-12-22T10:40:45.000Z"),
    ]
    assert exporter.telemetry.get("otelsnap_exporter_dropped_snapshots") == 0


def test_queue_gauges_count_bytes(tmp_path, exporters):
    exporter = exporters(make_exporter(tmp_path, f"http://127.0.0.1:{free_port()}"))
    items = [snap(name) for name in NODES]
    exporter.export(items, T0)
    assert exporter.telemetry.get("otelsnap_exporter_queue_size", exporter="master") == 6
    expected_bytes = sum(len(compact(item.body)) for item in items)
    assert exporter.telemetry.get("otelsnap_exporter_queue_bytes", exporter="master") == expected_bytes


# --- batching ----------------------------------------------------------------


def expected_groups(items: list[Snapshot], limit: int) -> list[list[str]]:
    """Group node names greedily into bodies of at most ``limit`` bytes, by building them."""
    groups: list[list[Snapshot]] = []
    for item in items:
        if groups:
            trial = groups[-1] + [item]
            body = {
                "cluster_id": CLUSTER,
                "fetched_at": "2025-12-22T10:40:00.000Z",
                "node_metrics": {i.key: i.body for i in trial},
            }
            if len(compact(body)) <= limit:
                groups[-1] = trial
                continue
        groups.append([item])
    return [[i.key for i in group] for group in groups]


def test_batches_respect_max_body(tmp_path, stub, exporters):
    port = free_port()
    limit = 1200
    exporter = exporters(make_exporter(tmp_path, f"http://127.0.0.1:{port}", max_body_mib=limit / MIB))
    items = [snap(name) for name in NODES]
    exporter.export(items, T0)
    master = stub(port)

    assert wait_until(lambda: len(master.nodes_in_order()) == 6)
    groups = [list(r.body["node_metrics"]) for r in master.received]
    assert groups == expected_groups(items, limit)
    assert 1 < len(groups) < 6
    for request in master.received:
        assert len(gzip.decompress(request.raw)) <= limit


def test_many_nodes_share_requests(tmp_path, stub, exporters):
    # Invented node names: a cluster larger than the six-node sample.
    port = free_port()
    exporter = exporters(make_exporter(tmp_path, f"http://127.0.0.1:{port}"))
    values = VALUES["desk-zero"]
    items = [Snapshot("node", f"node-{i:04d}", T0, node_body(f"node-{i:04d}", values, T0)) for i in range(1100)]
    exporter.export(items, T0)
    master = stub(port)

    assert wait_until(lambda: len(master.nodes_in_order()) == 1100)
    assert [len(r.body["node_metrics"]) for r in master.received] == [1024, 76]
    assert [name for name, _ in master.nodes_in_order()] == [item.key for item in items]


def test_same_node_twice_split_in_order(tmp_path, stub, exporters):
    port = free_port()
    exporter = exporters(make_exporter(tmp_path, f"http://127.0.0.1:{port}"))
    exporter.export([snap("desk-zero", 0), snap("desk-one", 0)], T0)
    exporter.export([snap("desk-zero", 1), snap("raspi-one", 1)], T0)
    master = stub(port)

    assert wait_until(lambda: len(master.nodes_in_order()) == 4)
    bodies = [r.body["node_metrics"] for r in master.received]
    assert [list(b) for b in bodies] == [["desk-zero", "desk-one"], ["desk-zero", "raspi-one"]]
    assert bodies[0]["desk-zero"]["timestamp"] == "2025-12-22T10:40:00.000Z"
    assert bodies[1]["desk-zero"]["timestamp"] == "2025-12-22T10:40:15.000Z"


def padded(name: str, size: int) -> Snapshot:
    """A node snapshot whose JSON is exactly ``size`` bytes (invented padding: real ones are a few KiB)."""
    item = snap(name)
    body = dict(item.body, padding="")
    body["padding"] = "x" * (size - len(compact(body)))
    assert len(compact(body)) == size
    return Snapshot("node", name, item.time_ns, body)


def test_agent_receiver_one_node_per_request(tmp_path, stub, exporters, caplog):
    port = free_port()
    exporter = exporters(make_exporter(tmp_path, f"http://127.0.0.1:{port}", mode="agent_receiver"))
    at_limit = padded("desk-one", 1 << 20)
    over_limit = padded("desk-two", (1 << 20) + 1)
    exporter.export([snap("desk-zero"), at_limit, over_limit, snap("raspi-zero")], T0)
    master = stub(port)

    assert wait_until(lambda: len(master.received) == 3)
    time.sleep(0.2)
    assert [r.path for r in master.received] == ["/metrics/node"] * 3
    assert [r.body["node_name"] for r in master.received] == ["desk-zero", "desk-one", "raspi-zero"]
    assert all("Content-Encoding" not in r.headers for r in master.received)
    assert master.received[0].raw == compact(snap("desk-zero").body)
    assert len(master.received[1].raw) == 1 << 20
    too_large = events(caplog, "snapshot_too_large")
    assert [(e["node"], e["size_bytes"]) for e in too_large] == [("desk-two", (1 << 20) + 1)]
    assert exporter.telemetry.get("otelsnap_exporter_failed_snapshots", exporter="master", reason="too_large") == 1


def test_agent_receiver_skips_slo(tmp_path, exporters):
    exporter = exporters(make_exporter(tmp_path, f"http://127.0.0.1:{free_port()}", mode="agent_receiver"))
    exporter.export([Snapshot("slo", CLUSTER, T0, {"timestamp": 1})], T0)
    assert len(exporter.queue) == 0
    assert exporter.telemetry.get("otelsnap_exporter_dropped_snapshots", exporter="master", reason="unsupported_kind") == 1


def test_resource_metrics_not_queued(tmp_path, exporters, caplog):
    text = (Path(__file__).resolve().parent.parent / "testdata" / "atlhyper-six-nodes" / "otel_raspi_zero.txt").read_text()
    request = exposition_to_request(parse(text), T0, ConvertOptions(strip_prefix="otel_"))
    batch = decode_request(request).batch
    exporter = exporters(make_exporter(tmp_path, f"http://127.0.0.1:{free_port()}"))
    exporter.export(batch, T0)
    assert len(exporter.queue) == 0
    assert exporter.telemetry.get("otelsnap_exporter_dropped_snapshots", exporter="master", reason="not_a_snapshot") == len(batch)
    assert len(events(caplog, "items_not_snapshots")) == 1


# --- lifecycle ---------------------------------------------------------------


def test_shutdown_persists_undelivered(tmp_path, caplog):
    exporter = make_exporter(tmp_path, f"http://127.0.0.1:{free_port()}")
    exporter.start()
    exporter.export([snap(name) for name in NODES[:3]], T0)
    started = time.monotonic()
    exporter.shutdown(timeout_s=0.5)
    assert time.monotonic() - started < 2.0
    assert events(caplog, "exporter_stopped")[0]["queued"] == 3

    queue = DiskQueue(queue_path(str(tmp_path), "master"), max_items=10, max_bytes=1 << 20)
    queue.open()
    assert [row.key for row in queue.peek(10, 1 << 20)] == NODES[:3]
    queue.close()


def test_shutdown_delivers_before_returning(tmp_path, stub):
    master = stub()
    exporter = make_exporter(tmp_path, master.url)
    exporter.start()
    exporter.export([snap(name) for name in NODES], T0)
    exporter.shutdown(timeout_s=5.0)
    assert len(master.nodes_in_order()) == 6
    assert not exporter.accepting


def test_restart_sends_queued_first(tmp_path, stub):
    port = free_port()
    first = make_exporter(tmp_path, f"http://127.0.0.1:{port}")
    first.start()
    first.export([snap(name, 0) for name in NODES], T0)
    first.shutdown(timeout_s=0.2)

    master = stub(port)
    second = make_exporter(tmp_path, master.url)
    second.start()
    second.export([snap(name, 1) for name in NODES], T0)
    try:
        assert wait_until(lambda: len(master.nodes_in_order()) == 12)
    finally:
        second.shutdown(timeout_s=1.0)
    timestamps = [stamp for _, stamp in master.nodes_in_order()]
    assert timestamps == ["2025-12-22T10:40:00.000Z"] * 6 + ["2025-12-22T10:40:15.000Z"] * 6


def test_second_process_on_same_queue_rejected(tmp_path, exporters):
    endpoint = f"http://127.0.0.1:{free_port()}"
    exporters(make_exporter(tmp_path, endpoint))
    with pytest.raises(ConfigError) as info:
        make_exporter(tmp_path, endpoint).start()
    assert info.value.path == "exporters.master.queue.directory"
    assert "in use by another process" in info.value.message


def test_full_disk_counted_as_drop(tmp_path, exporters, caplog):
    exporter = exporters(make_exporter(tmp_path, f"http://127.0.0.1:{free_port()}"))
    exporter.export([snap("desk-zero")], T0)
    # SQLite's page limit makes the next insert fail as on a full disk.
    pages = exporter.queue._db.execute("PRAGMA page_count").fetchone()[0]
    exporter.queue._db.execute(f"PRAGMA max_page_count = {pages}")
    exporter.export([padded("desk-one", 200_000)], T0)
    assert exporter.telemetry.get("otelsnap_exporter_dropped_snapshots", exporter="master", reason="queue_write_error") == 1
    assert [e["snapshots"] for e in events(caplog, "queue_write_failed")] == [1]
    assert len(exporter.queue) == 1


def test_in_memory_queue_delivers(tmp_path, stub, exporters):
    master = stub()
    exporter = exporters(make_exporter(tmp_path, master.url, queue={"directory": ""}))
    exporter.export([snap("raspi-one")], T0)
    assert wait_until(lambda: len(master.nodes_in_order()) == 1)
    assert list(tmp_path.iterdir()) == []


def test_in_memory_queue_loss_counted_at_shutdown(tmp_path, caplog):
    exporter = make_exporter(tmp_path, f"http://127.0.0.1:{free_port()}", queue={"directory": ""})
    exporter.start()
    lost = [snap(name) for name in NODES] + [snap(NODES[0], 1)]
    exporter.export(lost, T0)
    exporter.shutdown(timeout_s=0.2)

    assert exporter.telemetry.get("otelsnap_exporter_dropped_snapshots", exporter="master", reason="shutdown") == 7
    (event,) = events(caplog, "snapshots_lost")
    assert event["snapshots"] == 7
    assert len(NODES) == 6
    assert event["nodes"] == ",".join(NODES[:5]) + " (+1 more)"
    (stopped,) = events(caplog, "exporter_stopped")
    assert stopped["queued"] == 7
    assert stopped["persisted"] is False


def test_persistent_queue_loses_nothing_at_shutdown(tmp_path, caplog):
    exporter = make_exporter(tmp_path, f"http://127.0.0.1:{free_port()}")
    exporter.start()
    exporter.export([snap(NODES[0])], T0)
    exporter.shutdown(timeout_s=0.2)
    assert exporter.telemetry.get("otelsnap_exporter_dropped_snapshots") == 0
    assert events(caplog, "snapshots_lost") == []


# --- auth and TLS ------------------------------------------------------------


def test_bearer_token_sent_never_logged(tmp_path, stub, exporters, caplog):
    token = "s3cret-token-value"
    master = stub(replies=[Reply(503), Reply(400, body=b"nope")])
    exporter = exporters(
        make_exporter(tmp_path, master.url, bearer_token=token, headers={"X-Team": "sre"})
    )
    exporter.export([snap("desk-zero")], T0)
    assert master.wait_for(2)
    exporter.export([snap("desk-one")], T0)

    assert master.wait_for(3)
    assert [r.status for r in master.received] == [503, 400, 200]
    assert master.received[0].headers["Authorization"] == f"Bearer {token}"
    assert master.received[0].headers["X-Team"] == "sre"
    assert events(caplog, "export_retry")
    assert events(caplog, "export_rejected")
    assert token not in caplog.text
    assert token not in repr(exporter.config)


def make_certificates(directory: Path) -> dict[str, Path]:
    """Create a CA, a server certificate for 127.0.0.1 and a client certificate with the openssl tool."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=30)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=otelsnap test CA")  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name, subject in (("server", "/CN=127.0.0.1"), ("client", "/CN=otelsnap")):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    return {name: directory / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


needs_openssl = pytest.mark.skipif(
    subprocess.run(["which", "openssl"], capture_output=True).returncode != 0, reason="needs openssl"
)


@pytest.fixture
def certs(tmp_path) -> dict[str, Path]:
    directory = tmp_path / "certs"
    directory.mkdir()
    return make_certificates(directory)


@needs_openssl
def test_tls_with_ca_file(tmp_path, stub, exporters, certs):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs["server.pem"], certs["server.key"])
    master = stub(ssl_context=context)

    trusting = exporters(make_exporter(tmp_path / "a", master.url, tls=TLSClientConfig(ca_file=str(certs["ca.pem"]))))
    trusting.export([snap("desk-zero")], T0)
    assert wait_until(lambda: len(master.nodes_in_order()) == 1)

    distrusting = exporters(make_exporter(tmp_path / "b", master.url))
    distrusting.export([snap("desk-one")], T0)
    assert wait_until(
        lambda: distrusting.telemetry.get("otelsnap_exporter_send_retries", exporter="master", reason="tls_error") >= 1
    )
    assert [name for name, _ in master.nodes_in_order()] == ["desk-zero"]


@needs_openssl
def test_tls_insecure_skip_verify(tmp_path, stub, exporters, certs, caplog):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs["server.pem"], certs["server.key"])
    master = stub(ssl_context=context)

    exporter = exporters(make_exporter(tmp_path, master.url, tls=TLSClientConfig(insecure_skip_verify=True)))
    exporter.export([snap("raspi-zero")], T0)
    assert wait_until(lambda: len(master.nodes_in_order()) == 1)
    assert len(events(caplog, "tls_verification_disabled")) == 1


@needs_openssl
def test_tls_client_certificate(tmp_path, stub, exporters, certs):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs["server.pem"], certs["server.key"])
    context.load_verify_locations(certs["ca.pem"])
    context.verify_mode = ssl.CERT_REQUIRED
    master = stub(ssl_context=context)

    tls = TLSClientConfig(
        ca_file=str(certs["ca.pem"]), cert_file=str(certs["client.pem"]), key_file=str(certs["client.key"])
    )
    with_cert = exporters(make_exporter(tmp_path / "a", master.url, tls=tls))
    with_cert.export([snap("desk-two")], T0)
    assert wait_until(lambda: len(master.nodes_in_order()) == 1)

    without_cert = exporters(make_exporter(tmp_path / "b", master.url, tls=TLSClientConfig(ca_file=str(certs["ca.pem"]))))
    without_cert.export([snap("desk-one")], T0)
    assert wait_until(lambda: without_cert.telemetry.get("otelsnap_exporter_send_retries") >= 1)
    assert [name for name, _ in master.nodes_in_order()] == ["desk-two"]


def test_missing_ca_file_fails_start(tmp_path):
    exporter = make_exporter(tmp_path, "https://127.0.0.1:1", tls=TLSClientConfig(ca_file=str(tmp_path / "none.pem")))
    with pytest.raises(ConfigError) as info:
        exporter.start()
    assert info.value.path == "exporters.master.tls.ca_file"


# --- config ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"endpoint": ""}, "endpoint"),
        ({"endpoint": "ftp://master:21"}, "endpoint"),
        ({"endpoint": "http://user:pw@master:8080"}, "endpoint"),
        ({"cluster_id": ""}, "cluster_id"),
        ({"mode": "push"}, "mode"),
        ({"compression": "zstd"}, "compression"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"headers": {"Content-Encoding": "br"}}, "headers.Content-Encoding"),
        ({"headers": {"Authorization": "x"}, "bearer_token": "y"}, "headers.Authorization"),
        ({"tls": TLSClientConfig(ca_file="ca.pem")}, "tls"),
        ({"retry_on_failure": RetryConfig(multiplier=0.5)}, "retry_on_failure.multiplier"),
        ({"queue": QueueConfig(when_full="drop_newest")}, "queue.when_full"),
    ],
)
def test_config_errors(options, path):
    config = MasterExporterConfig(**{"endpoint": "http://master:8080", "cluster_id": CLUSTER, **options})
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert info.value.path == path


def test_agent_receiver_needs_no_cluster_id():
    MasterExporterConfig(endpoint="http://agent:8082", mode="agent_receiver").validate()


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:99999", "http://127.0.0.1:port"])
def test_endpoint_port_invalid(endpoint):
    config = MasterExporterConfig(endpoint=endpoint, cluster_id="test")
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert info.value.path == "endpoint"
    assert f"invalid port in {endpoint!r}" in info.value.message
