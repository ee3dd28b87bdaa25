"""``otelsnap record``: receive OTLP and write every request to a recording.

    otelsnap record --listen 127.0.0.1:4317 --http-listen 127.0.0.1:4318 --out today.otlprec
    otelsnap record --forward --config otelsnap.yaml --out today.otlprec

Point a collector's otlp exporter at the listen address. Every well-formed
Export request is written as it arrives (body decompressed, with its
arrival time, transport, content type and compression), before it is
handed on. Without ``--forward`` the requests are only recorded. With it
they also run through the config's pipelines as ``otelsnap run`` would run
them, on the config's receiver. Given ``--listen``, ``--http-listen`` or
``--no-grpc``, that receiver listens only on the endpoints those options
give: gRPC on ``--listen`` or its default, and HTTP only with
``--http-listen``. No other endpoint of the config is bound.

An existing ``--out`` file is never overwritten without ``--force``,
because the recording is written into that file as requests arrive.

Stops on SIGINT or SIGTERM, after ``--duration-s`` or after
``--max-requests``: the receivers finish the requests in flight and the
file is flushed and closed, so every record written is readable. A request
that the service refuses for overload and the collector sends again is
recorded each time it arrives; replay drops such duplicates by timestamp
as the live service does.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from pipeline.component import ComponentContext, ConfigError
from pipeline.decode import DecodeResult
from pipeline.logs import event, setup_logging
from pipeline.recording import RecordingWriter
from pipeline.runtime import ACCEPTED, Admission
from pipeline.telemetry import Telemetry

log = logging.getLogger("otelsnap.record")

DEFAULT_GRPC_ENDPOINT = "127.0.0.1:4317"
RECEIVER_GRACE_S = 5.0


class RecordingSink:
    """The receiver's raw_sink: append each request to the recording.

    After ``max_requests`` (0 = no limit) it records nothing more and sets
    ``done``; later requests are counted in ``not_recorded``.
    """

    def __init__(self, writer: RecordingWriter, max_requests: int = 0) -> None:
        self.writer = writer
        self.max_requests = max_requests
        self.done = threading.Event()
        self.not_recorded = 0
        self.errors = 0
        self._lock = threading.Lock()

    def __call__(self, raw: Any) -> None:
        with self._lock:
            if self.max_requests and self.writer.records >= self.max_requests:
                self.not_recorded += 1
                return
            try:
                self.writer.write_request(raw)
            except (OSError, ValueError):
                self.errors += 1
                raise
            if self.max_requests and self.writer.records >= self.max_requests:
                self.done.set()


class RecordOnlyConsumer:
    """Accept every request without processing it (recording only)."""

    def submit(self, result: DecodeResult, received_ns: int, transport: str) -> Admission:
        return ACCEPTED


def _receiver_config(grpc_endpoint: str | None, http_endpoint: str | None, max_msg_mib: int):
    from pipeline.receiver import GrpcProtocolConfig, HttpProtocolConfig, OtlpReceiverConfig, ProtocolsConfig

    protocols = ProtocolsConfig(
        grpc=GrpcProtocolConfig(endpoint=grpc_endpoint, max_recv_msg_size_mib=max_msg_mib) if grpc_endpoint else None,
        http=HttpProtocolConfig(endpoint=http_endpoint, max_request_body_size_mib=max_msg_mib)
        if http_endpoint
        else None,
    )
    config = OtlpReceiverConfig(protocols=protocols)
    config.validate()
    return config


def _override_listeners(config, grpc_endpoint: str | None, http_endpoint: str | None, no_grpc: bool) -> None:
    """Make the config's one receiver listen only on the endpoints given on the command line.

    With none of --listen, --http-listen and --no-grpc the config's
    endpoints stay. With any of them, the receiver listens on gRPC at
    ``grpc_endpoint`` (default DEFAULT_GRPC_ENDPOINT) unless ``no_grpc``,
    and on HTTP only at ``http_endpoint``, as without --forward.
    """
    from pipeline.receiver import GrpcProtocolConfig, HttpProtocolConfig

    if grpc_endpoint is None and http_endpoint is None and not no_grpc:
        return
    if len(config.receivers) != 1:
        raise ConfigError(
            "receivers",
            f"{len(config.receivers)} receivers configured: --listen, --http-listen and --no-grpc need "
            "exactly one; set the endpoints in the config instead",
        )
    # Only the endpoints change: TLS and size limits of the config stay.
    receiver = next(iter(config.receivers.values()))
    protocols = receiver.protocols
    if no_grpc:
        protocols.grpc = None
    else:
        protocols.grpc = protocols.grpc or GrpcProtocolConfig()
        protocols.grpc.endpoint = grpc_endpoint or DEFAULT_GRPC_ENDPOINT
    if http_endpoint is None:
        protocols.http = None
    else:
        protocols.http = protocols.http or HttpProtocolConfig()
        protocols.http.endpoint = http_endpoint
    receiver.validate()


def _endpoints(receivers: dict[str, Any]) -> str:
    parts = []
    for receiver_id, receiver in receivers.items():
        if receiver.grpc_port is not None:
            host = receiver.config.protocols.grpc.endpoint.rpartition(":")[0]
            parts.append(f"{receiver_id} grpc={host}:{receiver.grpc_port}")
        if receiver.http_port is not None:
            host = receiver.config.protocols.http.endpoint.rpartition(":")[0]
            parts.append(f"{receiver_id} http={host}:{receiver.http_port}")
    return " ".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, metavar="FILE",
        help="recording to write (.otlprec; .gz compresses it); an existing file is an error unless --force",
    )
    parser.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    parser.add_argument(
        "--listen", metavar="ADDR",
        help=f"OTLP/gRPC host:port to receive on (default: {DEFAULT_GRPC_ENDPOINT}; port 0 picks a free port)",
    )
    parser.add_argument("--http-listen", metavar="ADDR", help="also receive OTLP/HTTP on host:port")
    parser.add_argument("--no-grpc", action="store_true", help="receive OTLP/HTTP only (needs --http-listen)")
    parser.add_argument(
        "--forward", action="store_true",
        help="also run the requests through the pipelines of --config (default: the embedded default config); "
        "--listen, --http-listen and --no-grpc then replace the listeners of its receiver",
    )
    parser.add_argument("--config", metavar="CFG", help="config for --forward")
    parser.add_argument("--duration-s", type=float, default=0.0, help="stop after this many seconds (default: no limit)")
    parser.add_argument("--max-requests", type=int, default=0, help="stop after recording this many requests (default: no limit)")
    parser.add_argument(
        "--max-recv-msg-size-mib", type=int, default=64,
        help="largest request accepted, in MiB, without --forward (default: 64)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"],
        help="level of the key=value logs on stderr (default: info)",
    )


def main(args: argparse.Namespace) -> int:
    """Record until stopped; exit 2 on invalid arguments, 1 when nothing can start."""
    if args.config and not args.forward:
        print("otelsnap record: --config is used with --forward only; add --forward", file=sys.stderr)
        return 2
    if args.no_grpc and not args.http_listen:
        print("otelsnap record: --no-grpc needs --http-listen", file=sys.stderr)
        return 2
    if args.duration_s < 0 or args.max_requests < 0:
        print("otelsnap record: --duration-s and --max-requests must be 0 (no limit) or more", file=sys.stderr)
        return 2
    if os.path.exists(args.out) and not args.force:
        print(
            f"otelsnap record: {args.out} already exists; choose another --out, or add --force to overwrite it",
            file=sys.stderr,
        )
        return 2
    setup_logging(args.log_level)

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        event(log, "shutdown_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        writer = RecordingWriter(args.out)
    except OSError as exc:
        print(f"otelsnap record: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    sink = RecordingSink(writer, args.max_requests)
    try:
        runner = _start(args, sink)
    except ConfigError as exc:
        writer.close()
        print(f"otelsnap record: config invalid: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        writer.close()
        print(f"otelsnap record: cannot start: {exc}", file=sys.stderr)
        return 1
    receivers, telemetry, stop_runner = runner
    started = time.monotonic()
    print(f"otelsnap record: listening {_endpoints(receivers)}, writing {args.out}", file=sys.stderr, flush=True)
    event(log, "recording_started", out=args.out, endpoints=_endpoints(receivers), forward=args.forward)

    deadline = started + args.duration_s if args.duration_s else None
    while not stop.is_set() and not sink.done.is_set():
        timeout = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
        if timeout <= 0:
            break
        stop.wait(timeout)

    stop_runner()
    writer.close()
    elapsed_s = time.monotonic() - started
    points = telemetry.get("otelsnap_receiver_accepted_points")
    print(
        f"otelsnap record: recorded {writer.records} requests ({int(points)} points, "
        f"{writer.bytes_written} bytes) to {args.out} in {elapsed_s:.1f} s"
        + (f"; {sink.not_recorded} requests after --max-requests not recorded" if sink.not_recorded else ""),
        file=sys.stderr,
    )
    event(log, "recording_stopped", out=args.out, requests=writer.records, points=int(points),
          write_errors=sink.errors)  # fmt: skip
    return 1 if sink.errors else 0


def _start(args: argparse.Namespace, sink: RecordingSink):
    """Start the receivers (and the service with --forward).

    Returns (receivers by id, telemetry, a function stopping them).
    """
    grpc_endpoint = None if args.no_grpc else args.listen
    if args.forward:
        from pipeline.config import default_config_text, load_config, load_config_text
        from pipeline.service import Service

        if args.config:
            config = load_config(args.config)
        else:
            config = load_config_text(default_config_text(), source="<embedded default>")
        _override_listeners(config, grpc_endpoint, args.http_listen, args.no_grpc)
        service = Service(config, raw_sink=sink)
        service.start()
        return service.receivers, service.telemetry, service.stop

    from pipeline.receiver import OtlpReceiver

    if not args.no_grpc and grpc_endpoint is None:
        grpc_endpoint = DEFAULT_GRPC_ENDPOINT
    config = _receiver_config(grpc_endpoint, args.http_listen, args.max_recv_msg_size_mib)
    telemetry = Telemetry()
    context = ComponentContext(component_id="otlp", telemetry=telemetry, logger=logging.getLogger("otelsnap.otlp"))
    receiver = OtlpReceiver(config, RecordOnlyConsumer(), context, raw_sink=sink)
    receiver.start()
    return {"otlp": receiver}, telemetry, lambda: receiver.shutdown(grace_s=RECEIVER_GRACE_S)
