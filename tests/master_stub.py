"""Test helpers for the exporters: a stand-in Master and real node data.

``MasterStub`` is a real HTTP server on 127.0.0.1 that replies from a script
of responses (200 once the script is used up), decodes gzip bodies with the
standard library and records every request. ``node_bodies`` builds node
snapshot bodies from the six-node node_exporter sample, with values read
from that text, so tests send real numbers (including the 2^63 - 1 clamp of
node_filefd_maximum).
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipeline.promtext import parse

SAMPLE = Path(__file__).resolve().parent.parent / "testdata" / "atlhyper-six-nodes" / "otel_all_nodes.txt"
INT64_MAX = 2**63 - 1


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"status":"ok"}'
    delay_s: float = 0.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes
    body: object
    arrived: float
    status: int = 0


class MasterStub:
    """A scripted stand-in for the AtlHyper Master on 127.0.0.1."""

    def __init__(self, port: int = 0, replies: list[Reply] | None = None, ssl_context=None) -> None:
        self.port = port
        self.ssl_context = ssl_context
        self.replies = list(replies or [])
        self.received: list[Received] = []
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> MasterStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; without TCP_NODELAY
            # the client's delayed ACK adds about 40 ms to every response.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                data = gzip.decompress(raw) if self.headers.get("Content-Encoding") == "gzip" else raw
                record = Received(self.path, dict(self.headers), raw, json.loads(data), time.monotonic())
                with stub._cond:
                    reply = stub.replies.pop(0) if stub.replies else Reply()
                    record.status = reply.status
                    stub.received.append(record)
                    stub._cond.notify_all()
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        if self.ssl_context is not None:
            self._server.socket = self.ssl_context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, count: int, timeout_s: float = 10.0) -> bool:
        """Wait until ``count`` requests arrived; False on timeout."""
        end = time.monotonic() + timeout_s
        with self._cond:
            while len(self.received) < count:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def accepted(self) -> list[Received]:
        """Requests that got a 2xx reply, in arrival order."""
        with self._cond:
            return [r for r in self.received if 200 <= r.status < 300]

    def nodes_in_order(self) -> list[tuple[str, str]]:
        """(node_name, timestamp) of every node body that got a 2xx reply, in arrival order."""
        out = []
        for request in self.accepted():
            body = request.body
            if request.path == "/metrics/node":
                out.append((body["node_name"], body["timestamp"]))
            else:
                for name, node in body["node_metrics"].items():
                    out.append((name, node["timestamp"]))
        return out


def free_port() -> int:
    """Return a loopback port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_values() -> dict[str, dict[str, float]]:
    """Read per-node values from the six-node sample, keyed by nodename."""
    exposition = parse(SAMPLE.read_text())
    by_instance: dict[str, dict[str, float]] = {}
    names: dict[str, str] = {}
    releases: dict[str, str] = {}
    wanted = {
        "otel_node_memory_MemTotal_bytes": "mem_total",
        "otel_node_filefd_maximum": "filefd_maximum",
        "otel_node_nf_conntrack_entries_limit": "conntrack_limit",
        "otel_node_boot_time_seconds": "boot_time",
    }
    for sample in exposition.samples:
        instance = sample.labels.get("instance", "")
        if sample.name == "otel_node_uname_info":
            names[instance] = sample.labels["nodename"]
            releases[instance] = sample.labels["release"]
        elif sample.name in wanted:
            by_instance.setdefault(instance, {})[wanted[sample.name]] = sample.value
    return {
        names[instance]: {**values, "release": releases[instance]}
        for instance, values in by_instance.items()
    }


def node_body(name: str, values: dict, time_ns: int) -> dict:
    """A node snapshot body with real values; fields as in the wire contract."""
    seconds, rest = divmod(time_ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1_000_000:03d}Z"
    return {
        "node_name": name,
        "timestamp": stamp,
        "hostname": name,
        "kernel": values["release"],
        "uptime": int(seconds - values["boot_time"]),
        "memory": {"total": int(values["mem_total"])},
        "system": {
            "conntrack_limit": int(values["conntrack_limit"]),
            "filefd_maximum": min(int(values["filefd_maximum"]), INT64_MAX),
        },
    }
