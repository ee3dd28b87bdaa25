"""``otelsnap replay``: feed a recording through the pipelines or to a receiver.

In process, on the recording's clock (deterministic)::

    otelsnap replay testdata/six-nodes.otlprec                     # default config, snapshots on stdout
    otelsnap replay rec.otlprec --config my.yaml --out got.jsonl   # also write the snapshots
    otelsnap replay rec.otlprec --expect golden.jsonl              # compare with a golden file

Each recorded request is decoded, the service's timers run at its arrival
time, and the request goes through every pipeline fed by the receiver;
after the last one the processors are shut down at the last arrival time
plus DRAIN_MARGIN_NS. Nothing reads the wall clock, so the same recording
and config always give the same snapshots.

To a running receiver, over the network::

    otelsnap replay rec.otlprec --target 127.0.0.1:4317 --speed 1

``--speed 1`` keeps the recorded gaps between arrivals, 2 halves them, 0
sends as fast as the receiver accepts. Requests the receiver refuses for
overload (gRPC UNAVAILABLE, RESOURCE_EXHAUSTED with RetryInfo, HTTP
429/502/503/504) are retried after the delay it asks for, or with
exponential backoff, up to ``--max-attempts`` times.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import math
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from pipeline.component import ConfigError, Exporter, Item
from pipeline.golden import compare_lines, read_json_lines, render_differences
from pipeline.logs import event, setup_logging
from pipeline.recording import (
    CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROTOBUF,
    RecordedRequest,
    RecordingError,
    RecordingReader,
)
from pipeline.runtime import tune_gc

log = logging.getLogger("otelsnap.replay")

# After the last request the processors are shut down at this much later
# on the recording's clock, so timers due right after the last scrape fire.
DRAIN_MARGIN_NS = 1_000_000_000

EXPORT_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
INITIAL_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
# A receiver's Retry-After / RetryInfo above this is capped, so a replay
# does not sit idle for minutes on one request.
MAX_SERVER_DELAY_S = 30.0


# --- in process ----------------------------------------------------------------


class CaptureExporter(Exporter):
    """Turn every exported item into the JSON line the ``file`` exporter writes.

    Lines go to ``out`` (a binary file) as they come, and are kept in
    ``lines`` only with ``keep``, so a long replay to a file needs no memory
    for its output.
    """

    type_name = "replay_capture"

    def __init__(self, out=None, keep: bool = True) -> None:
        from pipeline.component import ComponentContext
        from pipeline.exporters.file import item_line

        super().__init__(None, ComponentContext(component_id="replay_capture"))
        self._item_line = item_line
        self._out = out
        self._keep = keep
        self.lines: list[bytes] = []
        self.count = 0

    def export(self, items: list[Item], now_ns: int) -> None:
        lines = [self._item_line(item) for item in items]
        self.count += len(lines)
        if self._out is not None:
            self._out.writelines(line + b"\n" for line in lines)
        if self._keep:
            self.lines.extend(lines)


@dataclass
class ReplayResult:
    """Counts and output of an in-process replay."""

    requests: int = 0
    points: int = 0
    rejected_points: int = 0
    invalid_requests: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    lines: list[bytes] = field(default_factory=list)
    output_lines: int = 0
    # Node snapshots the pipelines built, whether captured or not.
    snapshots_built: int = 0
    error: RecordingError | None = None


def load_replay_config(path: str | None):
    """Load ``path``, or the embedded default config when it is None."""
    from pipeline.config import default_config_text, load_config, load_config_text

    if path:
        return load_config(path)
    return load_config_text(default_config_text(), source="<embedded default>")


def replay_in_process(
    recording: str | Path,
    config,
    receiver_id: str = "otlp",
    capture: bool = True,
    config_exporters: bool = True,
    telemetry=None,
    out=None,
) -> ReplayResult:
    """Run a recording through the configured pipelines on its own clock.

    With ``capture`` every item leaving a pipeline is kept in ``lines`` as
    a JSON line; ``out``, a binary file, receives those lines as they come.
    ``config_exporters`` False detaches the config's exporters, so only the
    capture receives the items. A damaged recording stops the replay at the
    damage: what came before is processed and drained, and ``error`` is set.
    """
    from pipeline.service import Service

    reader = RecordingReader(recording)
    service = Service(config, telemetry=telemetry)
    service.start_components()
    tune_gc()
    capture_exporter = CaptureExporter(out, keep=capture) if capture or out is not None else None
    for pipeline in service.pipelines.values():
        exporters = list(pipeline.exporters) if config_exporters else []
        if capture_exporter is not None:
            exporters.append(capture_exporter)
        pipeline.exporters = exporters

    result = ReplayResult()
    try:
        for record in reader:
            _consume_record(service, record, receiver_id, result)
    except RecordingError as exc:
        result.error = exc
    finally:
        reader.close()
    drain_ns = (result.last_ns or 0) + DRAIN_MARGIN_NS
    service.drain(drain_ns)
    result.snapshots_built = int(service.telemetry.get("otelsnap_node_snapshot_snapshots"))
    if capture_exporter is not None:
        result.lines = capture_exporter.lines
        result.output_lines = capture_exporter.count
    return result


def _consume_record(service, record: RecordedRequest, receiver_id: str, result: ReplayResult) -> None:
    now_ns = record.received_ns
    if result.first_ns is None:
        result.first_ns = now_ns
    result.last_ns = now_ns if result.last_ns is None else max(result.last_ns, now_ns)
    result.requests += 1
    try:
        decoded = record.decode()
    except (DecodeError, json_format.ParseError) as exc:
        result.invalid_requests += 1
        event(log, "invalid_request", logging.WARNING, offset=record.offset, error=str(exc))
        return
    result.points += decoded.points
    result.rejected_points += decoded.rejected
    service.tick(now_ns)
    _wait_while_exporters_push_back(service)
    service.consume(decoded, now_ns, receiver_id)


def _wait_while_exporters_push_back(service, poll_s: float = 0.1) -> None:
    """Wait while an exporter reports ``accepting`` False, as a collector would.

    A live receiver rejects requests then, and the collector retries them.
    In process no sender retries, so replay waits for the exporter instead of
    letting its queue grow: for example a master exporter whose queue is
    full under ``when_full: block`` while the Master is down.
    """
    while True:
        waiting = sorted(eid for eid, exporter in service.exporters.items() if not exporter.accepting)
        if not waiting:
            return
        event(log, "replay_waiting_for_exporters", logging.WARNING, every_s=10, exporters=",".join(waiting))
        time.sleep(poll_s)


# --- to a receiver -----------------------------------------------------------------


@dataclass
class TargetSummary:
    """Counts of a replay to a receiver, over the whole recording."""

    requests: int = 0
    delivered: int = 0
    points: int = 0
    rejected_points: int = 0
    refused_attempts: int = 0
    retried_requests: int = 0
    failed_requests: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    error: RecordingError | None = None


class _Refused(Exception):
    """The receiver refused for now; retry after ``delay_s`` (None: backoff)."""

    def __init__(self, reason: str, delay_s: float | None) -> None:
        super().__init__(reason)
        self.delay_s = delay_s


class _Failed(Exception):
    """The receiver rejected the request for good (or the transport failed)."""


class _GrpcSender:
    def __init__(self, target: str, timeout_s: float, token: str | None, compression: str) -> None:
        import grpc

        self._grpc = grpc
        self._channel = grpc.insecure_channel(
            target,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        self._export = self._channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=None,
            response_deserializer=ExportMetricsServiceResponse.FromString,
        )
        self._timeout_s = timeout_s
        self._metadata = [("authorization", f"Bearer {token}")] if token else None
        self._compression = compression

    def send(self, record: RecordedRequest) -> ExportMetricsServiceResponse:
        grpc = self._grpc
        body = record.body
        if record.content_type == CONTENT_TYPE_JSON:
            body = record.to_request().SerializeToString()
        gzip_on = self._compression == "gzip" or (
            self._compression == "as-recorded" and record.compression == "gzip"
        )
        try:
            return self._export(
                body,
                timeout=self._timeout_s,
                metadata=self._metadata,
                compression=grpc.Compression.Gzip if gzip_on else grpc.Compression.NoCompression,
            )
        except grpc.RpcError as err:
            code = err.code()
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise _Refused(f"{code.name}: {err.details()}", None) from None
            if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
                delay = _grpc_retry_delay_s(err)
                if delay is not None:
                    raise _Refused(f"{code.name}: {err.details()}", delay) from None
            raise _Failed(f"{code.name}: {err.details()}") from None

    def close(self) -> None:
        self._channel.close()


def _grpc_retry_delay_s(err) -> float | None:
    """Read the google.rpc.RetryInfo delay from a gRPC error, if it has one."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    try:
        status = rpc_status.from_call(err)
    except ValueError:
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


class _HttpSender:
    def __init__(self, target: str, timeout_s: float, token: str | None, compression: str) -> None:
        import urllib3

        self._urllib3 = urllib3
        base = target if "://" in target else f"http://{target}"
        self._url = base.rstrip("/") + "/v1/metrics"
        self._pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=timeout_s))
        self._token = token
        self._compression = compression

    def send(self, record: RecordedRequest) -> ExportMetricsServiceResponse:
        urllib3 = self._urllib3
        content_type = CONTENT_TYPE_JSON if record.content_type == CONTENT_TYPE_JSON else CONTENT_TYPE_PROTOBUF
        headers = {"Content-Type": content_type}
        body = record.body
        if self._compression == "gzip" or (self._compression == "as-recorded" and record.compression == "gzip"):
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = self._pool.request("POST", self._url, body=body, headers=headers)
        except urllib3.exceptions.HTTPError as err:
            raise _Refused(f"connection failed: {err}", None) from None
        if response.status in (429, 502, 503, 504):
            raise _Refused(
                _http_error(response.status, response.headers.get("Content-Type", ""), response.data),
                _retry_after_s(response.headers.get("Retry-After")),
            )
        if response.status != 200:
            raise _Failed(_http_error(response.status, response.headers.get("Content-Type", ""), response.data))
        reply = ExportMetricsServiceResponse()
        if response.data:
            if response.headers.get("Content-Type", "").startswith(CONTENT_TYPE_JSON):
                json_format.Parse(response.data, reply, ignore_unknown_fields=True)
            else:
                reply.ParseFromString(response.data)
        return reply

    def close(self) -> None:
        self._pool.clear()


def _http_error(status: int, content_type: str, body: bytes) -> str:
    """Describe an HTTP error response by the message of its google.rpc.Status body.

    OTLP/HTTP receivers send the Status as protobuf or JSON, by the
    request's content type. A body that is neither is shown as text, cut to
    200 characters.
    """
    from google.rpc import status_pb2

    status_message = status_pb2.Status()
    try:
        if content_type.startswith(CONTENT_TYPE_JSON):
            json_format.Parse(body, status_message, ignore_unknown_fields=True)
        elif content_type.startswith(CONTENT_TYPE_PROTOBUF):
            status_message.ParseFromString(body)
    except (DecodeError, json_format.ParseError):
        status_message.Clear()
    text = status_message.message or body[:200].decode("utf-8", "replace").strip()
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None  # an HTTP date; fall back to backoff


class _Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total_bytes: int, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self.total_bytes = max(total_bytes, 1)
        self._last_draw = 0.0

    def update(self, offset: int, summary: TargetSummary, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        fraction = min(offset / self.total_bytes, 1.0)
        bar = "#" * int(fraction * 30)
        sys.stderr.write(
            f"\r[{bar:<30}] {fraction * 100:5.1f}%  {summary.delivered} requests  "
            f"{summary.points} points  {summary.refused_attempts} refused"
        )
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


def replay_to_target(
    recording: str | Path,
    target: str,
    protocol: str = "grpc",
    speed: float = 0.0,
    max_attempts: int = 10,
    timeout_s: float = 10.0,
    compression: str = "as-recorded",
    token: str | None = None,
    progress: bool = True,
    sleep=time.sleep,
) -> TargetSummary:
    """Send every recorded request to a receiver at ``target``.

    ``speed`` 1 keeps the recorded gaps between arrivals, 0 sends as fast as
    the receiver accepts. A request is tried at most ``max_attempts`` times.
    """
    target = check_target(target, protocol)
    if speed < 0:
        raise ValueError(f"invalid speed {speed}: use 0 (as fast as accepted) or a positive factor")
    if max_attempts < 1:
        raise ValueError(f"invalid max_attempts {max_attempts}: use 1 or more")
    reader = RecordingReader(recording)
    sender_cls = _GrpcSender if protocol == "grpc" else _HttpSender
    sender = sender_cls(target, timeout_s, token, compression)
    summary = TargetSummary()
    bar = _Progress(_file_size(recording), progress)
    started = time.monotonic()
    first_ns: int | None = None
    try:
        for record in reader:
            if first_ns is None:
                first_ns = record.received_ns
            if speed > 0:
                due = started + (record.received_ns - first_ns) / 1e9 / speed
                wait_s = due - time.monotonic()
                if wait_s > 0:
                    sleep(wait_s)
            _send_with_retry(sender, record, summary, max_attempts, sleep)
            bar.update(reader.offset, summary)
    except RecordingError as exc:
        summary.error = exc
    finally:
        reader.close()
        sender.close()
    summary.elapsed_s = time.monotonic() - started
    bar.update(reader.offset, summary, final=True)
    return summary


def check_target(target: str, protocol: str = "grpc") -> str:
    """Return the ``host:port`` of ``target``; raise ValueError naming the value and the expected form.

    For the http protocol an ``http://`` prefix is accepted and removed.
    """
    example = "127.0.0.1:4318" if protocol == "http" else "127.0.0.1:4317"
    address = target
    if protocol == "http" and target.startswith("http://"):
        address = target[len("http://"):].rstrip("/")
    if "://" in address:
        raise ValueError(
            f"invalid target {target!r}: expected host:port, for example {example} "
            "(replay sends plaintext only, without TLS)"
        )
    host, separator, port_text = address.rpartition(":")
    if not separator or not host or not port_text.isdigit():
        raise ValueError(f"invalid target {target!r}: expected host:port, for example {example}")
    if not 1 <= int(port_text) <= 65535:
        raise ValueError(f"invalid target {target!r}: port {port_text} is out of range (1-65535)")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError(f"invalid target {target!r}: put an IPv6 address in brackets, for example [::1]:4317")
    return address


def _file_size(path: str | Path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def _send_with_retry(sender, record: RecordedRequest, summary: TargetSummary, max_attempts: int, sleep) -> None:
    summary.requests += 1
    try:
        points = record.decode().points
    except (DecodeError, json_format.ParseError):
        points = 0
    backoff_s = INITIAL_BACKOFF_S
    last_reason = ""
    for attempt in range(1, max_attempts + 1):
        try:
            response = sender.send(record)
        except _Refused as refused:
            summary.refused_attempts += 1
            last_reason = str(refused)
            if attempt == max_attempts:
                break
            if attempt == 1:
                summary.retried_requests += 1
            delay_s = refused.delay_s if refused.delay_s is not None else backoff_s
            event(
                log, "request_refused", logging.DEBUG, offset=record.offset,
                attempt=attempt, reason=str(refused), retry_in_s=round(delay_s, 3),
            )  # fmt: skip
            sleep(min(delay_s, MAX_SERVER_DELAY_S))
            backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
            continue
        except _Failed as failed:
            summary.failed_requests += 1
            summary.errors.append(f"request at byte offset {record.offset}: {failed}")
            return
        summary.delivered += 1
        summary.points += points
        if response.HasField("partial_success"):
            summary.rejected_points += response.partial_success.rejected_data_points
        return
    summary.failed_requests += 1
    attempts = f"{max_attempts} attempt" + ("s" if max_attempts != 1 else "")
    summary.errors.append(
        f"request at byte offset {record.offset}: still refused after {attempts}: {last_reason}"
    )


# --- the command -------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recording", metavar="FILE", help="recording to replay (.otlprec or .otlprec.gz)")
    parser.add_argument("--config", metavar="CFG", help="config file (default: the embedded default config)")
    parser.add_argument(
        "--receiver", default="otlp", metavar="ID",
        help="receiver id whose pipelines get the requests (default: otlp; with one receiver, that one)",
    )
    parser.add_argument(
        "--out", metavar="FILE",
        help="write the produced snapshots as JSON Lines (as the file exporter does), e.g. to make a golden file",
    )
    parser.add_argument("--expect", metavar="GOLDEN", help="compare the produced snapshots with this JSON Lines file")
    parser.add_argument(
        "--tolerance", type=_tolerance, default=1e-9,
        help="relative tolerance for floats in --expect (absolute below magnitude 1; default: 1e-9)",
    )
    parser.add_argument("--target", metavar="ADDR", help="send to a running receiver at host:port instead")
    # The options below only apply with --target. Their defaults are None so
    # that main() can tell a given option from an absent one; it fills in
    # TARGET_DEFAULTS.
    parser.add_argument("--protocol", choices=["grpc", "http"], help="with --target (default: grpc)")
    parser.add_argument(
        "--speed", type=float,
        help="with --target: 1 = recorded arrival gaps, 2 = twice as fast, 0 = as fast as accepted (default: 1)",
    )
    parser.add_argument("--max-attempts", type=int, help="with --target: tries per request (default: 10)")
    parser.add_argument("--timeout-s", type=float, help="with --target: timeout per attempt in seconds (default: 10)")
    parser.add_argument(
        "--compression", choices=["as-recorded", "gzip", "none"],
        help="with --target: compression of the sent bodies (default: as recorded)",
    )
    parser.add_argument(
        "--bearer-token-file", metavar="FILE", help="with --target: send 'Authorization: Bearer' with this file's token",
    )
    parser.add_argument(
        "--no-progress", action="store_true", default=None, help="with --target: no progress bar on stderr",
    )
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"],
        help="log level of the pipelines' key=value logs on stderr (default: warning)",
    )


def _tolerance(text: str) -> float:
    """Parse --tolerance: a finite number of 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"invalid tolerance {text!r}: use a number of 0 or more, for example 1e-9")
    return value


def main(args: argparse.Namespace) -> int:
    """Exit 0 on success, 1 when snapshots differ from --expect, requests
    failed or the recording is damaged, 2 on invalid arguments or config."""
    setup_logging(args.log_level)
    if not Path(args.recording).is_file():
        print(
            f"otelsnap replay: recording not found: {args.recording}; check the path "
            "(otelsnap record and otelsnap convert make recordings)",
            file=sys.stderr,
        )
        return 2
    if args.target:
        if args.out or args.expect or args.config:
            print("otelsnap replay: --out, --expect and --config work in process only; drop --target", file=sys.stderr)
            return 2
        for dest, default in TARGET_DEFAULTS.items():
            if getattr(args, dest) is None:
                setattr(args, dest, default)
        return _main_target(args)
    given = [_option_name(dest) for dest in TARGET_DEFAULTS if getattr(args, dest) is not None]
    if given:
        names = given[0] if len(given) == 1 else f"{', '.join(given[:-1])} and {given[-1]}"
        verb = "needs" if len(given) == 1 else "need"
        print(
            f"otelsnap replay: {names} {verb} --target, because without it the recording "
            f"runs in process; add --target HOST:PORT or remove {names if len(given) == 1 else 'them'}",
            file=sys.stderr,
        )
        return 2
    return _main_in_process(args)


# Options that apply only with --target, and their defaults.
TARGET_DEFAULTS = {
    "protocol": "grpc",
    "speed": 1.0,
    "max_attempts": 10,
    "timeout_s": 10.0,
    "compression": "as-recorded",
    "bearer_token_file": "",
    "no_progress": False,
}


def _option_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _main_in_process(args: argparse.Namespace) -> int:
    try:
        config = load_replay_config(args.config)
    except ConfigError as exc:
        print(f"otelsnap replay: config invalid: {exc}", file=sys.stderr)
        return 2
    capture = bool(args.out or args.expect)
    out = None
    try:
        if args.out:
            out = open(args.out, "wb")  # noqa: SIM115 - closed below
        result = replay_in_process(
            args.recording,
            config,
            receiver_id=args.receiver,
            capture=bool(args.expect),
            # The default config prints to stdout; with --out/--expect the
            # capture replaces it. A given config keeps its exporters.
            config_exporters=bool(args.config) or not capture,
            out=out,
        )
    except OSError as exc:
        print(f"otelsnap replay: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"otelsnap replay: {exc}", file=sys.stderr)
        return 2
    finally:
        if out is not None:
            out.close()
    code = 0
    if result.error is not None:
        _print_damage(args.recording, result.error)
        code = 1
    print(
        f"replayed {result.requests} requests, {result.points} points "
        f"({result.rejected_points} rejected by the decoder, {result.invalid_requests} invalid requests), "
        f"{result.snapshots_built} node snapshots built",
        file=sys.stderr,
    )
    if args.expect:
        code = max(code, _check_golden(args.expect, result.lines, args.tolerance))
    return code


def _check_golden(golden_path: str, lines: list[bytes], tolerance: float) -> int:
    import orjson

    try:
        expected = read_json_lines(golden_path)
    except (OSError, ValueError) as exc:
        print(f"otelsnap replay: cannot read golden file: {exc}", file=sys.stderr)
        return 1
    actual = [orjson.loads(line) for line in lines]
    differences = compare_lines(expected, actual, tolerance)
    if not differences:
        print(f"snapshots match {golden_path} ({len(expected)} lines)", file=sys.stderr)
        return 0
    print(f"snapshots differ from {golden_path}: {len(differences)} differences", file=sys.stderr)
    print(render_differences(differences), file=sys.stderr)
    return 1


def _main_target(args: argparse.Namespace) -> int:
    try:
        address = check_target(args.target, args.protocol)
    except ValueError as exc:
        print(f"otelsnap replay: {exc}", file=sys.stderr)
        return 2
    unreachable = _check_listening(address)
    if unreachable is not None:
        print(
            f"otelsnap replay: cannot connect to {args.target}: {unreachable}; "
            "start the receiver (otelsnap run) or check --target",
            file=sys.stderr,
        )
        return 1
    token = None
    if args.bearer_token_file:
        try:
            token = Path(args.bearer_token_file).read_text().strip()
        except OSError as exc:
            print(f"otelsnap replay: cannot read bearer token file: {exc}", file=sys.stderr)
            return 2
    try:
        summary = replay_to_target(
            args.recording,
            args.target,
            protocol=args.protocol,
            speed=args.speed,
            max_attempts=args.max_attempts,
            timeout_s=args.timeout_s,
            compression=args.compression,
            token=token,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        print(f"otelsnap replay: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"otelsnap replay: cannot read {args.recording}: {exc}", file=sys.stderr)
        return 1
    print(
        f"replayed {summary.delivered} of {summary.requests} requests ({summary.points} points) "
        f"to {args.target} over {args.protocol} in {summary.elapsed_s:.3f} s\n"
        f"  rejected points (partial success): {summary.rejected_points}\n"
        f"  refused attempts: {summary.refused_attempts} ({summary.retried_requests} requests retried)\n"
        f"  failed requests: {summary.failed_requests}",
        file=sys.stderr,
    )
    for error in summary.errors[:20]:
        print(f"otelsnap replay: {error}", file=sys.stderr)
    code = 1 if summary.failed_requests else 0
    if summary.error is not None:
        _print_damage(args.recording, summary.error)
        code = 1
    return code


def _print_damage(recording: str, error: RecordingError) -> None:
    read = error.records_read
    print(
        f"otelsnap replay: {recording}: {error} "
        f"(replayed the {read} {'record' if read == 1 else 'records'} before it)",
        file=sys.stderr,
    )


def _check_listening(target: str, timeout_s: float = 2.0) -> str | None:
    """Return why nothing accepts TCP connections at ``target``, or None when something does."""
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)
