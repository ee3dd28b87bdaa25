"""Throughput of the OTLP receiver against in-process decoding.

Sends the six-node node_exporter sample (1,499 points, 106 kB, 13 kB
gzipped) as fast as the receiver replies, over gRPC and over HTTP, both
gzipped as a collector sends them, from ``--clients`` connections in a
separate client process (so client work does not share the server's GIL).
The consumer accepts everything and does nothing, so the numbers are the
receiver's own cost: transport, gunzip, decode. The decode floor is
``pipeline.decode.decode_bytes`` on the same body in a loop.

    python bench/receiver.py [--seconds 5] [--clients 4]
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import multiprocessing
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import convert, decode, promtext  # noqa: E402
from pipeline.component import ComponentContext  # noqa: E402
from pipeline.receiver import (  # noqa: E402
    METRICS_SERVICE,
    GrpcProtocolConfig,
    HttpProtocolConfig,
    OtlpReceiver,
    OtlpReceiverConfig,
    ProtocolsConfig,
)
from pipeline.runtime import ACCEPTED  # noqa: E402
from pipeline.telemetry import Telemetry  # noqa: E402

SAMPLE = ROOT / "testdata" / "atlhyper-six-nodes" / "otel_all_nodes.txt"


def six_node_body() -> bytes:
    exposition = promtext.parse(SAMPLE.read_text())
    request = convert.exposition_to_request(
        exposition, 1_766_397_600_000_000_000, convert.ConvertOptions(strip_prefix="otel_")
    )
    return request.SerializeToString()


class AcceptAll:
    def submit(self, result, received_ns, transport):
        return ACCEPTED


def _grpc_client(port: int, body: bytes, seconds: float, latencies: list) -> None:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)]) as channel:
        export = channel.unary_unary(f"/{METRICS_SERVICE}/Export")
        end = time.monotonic() + seconds
        while (start := time.monotonic()) < end:
            export(body, compression=grpc.Compression.Gzip, timeout=10)
            latencies.append(time.monotonic() - start)


def _http_client(port: int, body: bytes, seconds: float, latencies: list) -> None:
    gzipped = gzip.compress(body)
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    end = time.monotonic() + seconds
    while (start := time.monotonic()) < end:
        conn.request("POST", "/v1/metrics", body=gzipped, headers=headers)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        latencies.append(time.monotonic() - start)
    conn.close()


def run_clients(transport: str, port: int, body: bytes, seconds: float, clients: int, out) -> None:
    """Client process: ``clients`` threads, each on its own connection."""
    target = _grpc_client if transport == "grpc" else _http_client
    per_thread: list[list[float]] = [[] for _ in range(clients)]
    threads = [
        threading.Thread(target=target, args=(port, body, seconds, latencies)) for latencies in per_thread
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put([x for latencies in per_thread for x in latencies])


def measure(transport: str, port: int, body: bytes, seconds: float, clients: int) -> tuple[float, float, float]:
    """Return (requests per second, p50 latency ms, p99 latency ms)."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=run_clients, args=(transport, port, body, seconds, clients, out))
    process.start()
    latencies = out.get(timeout=seconds + 60)
    process.join(30)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return len(latencies) / seconds, statistics.median(latencies) * 1e3, p99 * 1e3


def decode_floor(body: bytes, seconds: float) -> float:
    count = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        decode.decode_bytes(body)
        count += 1
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    parser.add_argument("--clients", type=int, default=4, help="concurrent connections")
    args = parser.parse_args()

    body = six_node_body()
    points = decode.decode_bytes(body).points
    config = OtlpReceiverConfig(
        protocols=ProtocolsConfig(
            grpc=GrpcProtocolConfig(endpoint="127.0.0.1:0"), http=HttpProtocolConfig(endpoint="127.0.0.1:0")
        )
    )
    receiver = OtlpReceiver(config, AcceptAll(), ComponentContext("otlp", telemetry=Telemetry()))
    receiver.start()
    try:
        floor = decode_floor(body, args.seconds)
        print(f"decode floor: {floor:8.1f} requests/s {floor * points / 1e6:6.2f} M points/s")
        for transport, port in (("grpc", receiver.grpc_port), ("http", receiver.http_port)):
            rate, p50, p99 = measure(transport, port, body, args.seconds, args.clients)
            print(
                f"{transport:>4} gzip:   {rate:8.1f} requests/s {rate * points / 1e6:6.2f} M points/s "
                f"p50 {p50:6.1f} ms p99 {p99:6.1f} ms ({rate / floor:.0%} of the floor)"
            )
    finally:
        receiver.shutdown(grace_s=1)


if __name__ == "__main__":
    main()
