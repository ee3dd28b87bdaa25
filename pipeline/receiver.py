"""The OTLP receiver: OTLP/gRPC and OTLP/HTTP servers for metrics.

A collector's ``otlp`` (gRPC) or ``otlphttp`` exporter sends Export requests
here. Each request is decoded once (``pipeline.decode``), shown to the
optional ``raw_sink`` (recording), and handed to the consumer (the service's
bounded queue). The consumer's ``Admission`` decides the reply:

- accepted: OK, with an OTLP partial success when points were rejected;
- refused (queue full): gRPC UNAVAILABLE, or RESOURCE_EXHAUSTED with a
  ``google.rpc.RetryInfo`` detail when ``overload_status`` is
  ``resource_exhausted``; HTTP 503 or 429 with ``Retry-After``. The
  collector's exporter retries both, so overload is backpressure, not loss.
  A RESOURCE_EXHAUSTED without RetryInfo would be permanent for the
  collector (it drops the batch), so it is never sent without one.
- malformed: INVALID_ARGUMENT / HTTP 400 naming the byte count and the parse
  error. The server keeps serving.

gRPC uses grpcio with a generic handler whose request deserializer is the
identity, so the body arrives as bytes and is parsed by the decoder's fast
path instead of the standard message class. grpcio decompresses gzip and
deflate itself. It cannot decode zstd or snappy and replies to such a request
with INTERNAL "Error parsing 'grpc-encoding' metadata" before the handler
runs, which the collector treats as permanent. Collectors must send gzip.

HTTP uses the standard library's ``ThreadingHTTPServer`` (one thread per
connection, HTTP/1.1 keep-alive). A collector keeps a handful of long-lived
connections (one per sending-queue consumer), so a thread per connection is
cheap, and the stdlib server adds no dependency. Decoding holds the GIL
either way, so an async server would not decode faster.
"""

from __future__ import annotations

import hmac
import logging
import math
import socket
import ssl
import sys
import threading
import time
import zlib
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import grpc
from google.protobuf import any_pb2, json_format
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from pipeline.component import ComponentContext, ConfigError
from pipeline.config import nested_errors, raise_errors
from pipeline.decode import DecodeResult, decode_bytes, decode_request
from pipeline.logs import event
from pipeline.runtime import ACCEPTED, Admission, Consumer

METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
HTTP_METRICS_PATH = "/v1/metrics"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MIB = 1 << 20

# grpcio limits a message size to a signed 32-bit number of bytes.
GRPC_MAX_MSG_SIZE_MIB = 2047
# Export responses are a few bytes; a small send limit costs nothing.
GRPC_MAX_SEND_MSG_SIZE = 1 * MIB
GRPC_WORKERS = 8
# Longer than Go's default idle-connection timeout (90 s), so the collector
# closes an idle keep-alive connection before the server does.
HTTP_IDLE_TIMEOUT_S = 120.0
OVERLOAD_STATUSES = ("unavailable", "resource_exhausted")
MIN_RETRY_AFTER_S = 1.0
LOG_EVERY_S = 10.0


# ---------------------------------------------------------------- config


@dataclass
class TLSServerConfig:
    """Server certificate and key (PEM files); a client CA turns on mTLS."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""

    def validate(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            missing = "key_file" if self.cert_file else "cert_file"
            raise ConfigError(missing, "cert_file and key_file must be set together; set both or remove tls")
        if self.client_ca_file and not self.cert_file:
            raise ConfigError("cert_file", "client_ca_file needs a server certificate; set cert_file and key_file")
        if not self.cert_file:
            raise ConfigError("cert_file", "tls is present but empty; set cert_file and key_file or remove tls")


@dataclass
class GrpcProtocolConfig:
    """OTLP/gRPC listener. ``max_recv_msg_size_mib`` limits one decompressed Export request."""

    endpoint: str = "127.0.0.1:4317"
    max_recv_msg_size_mib: int = 64
    tls: TLSServerConfig | None = None

    def validate(self) -> None:
        errors = _endpoint_errors(self.endpoint, 4317)
        if not 1 <= self.max_recv_msg_size_mib <= GRPC_MAX_MSG_SIZE_MIB:
            errors.append(
                ConfigError(
                    "max_recv_msg_size_mib",
                    f"{self.max_recv_msg_size_mib} is out of range; set 1 to {GRPC_MAX_MSG_SIZE_MIB}",
                )
            )
        errors += nested_errors("tls", self.tls)
        raise_errors(errors)


@dataclass
class HttpProtocolConfig:
    """OTLP/HTTP listener. ``max_request_body_size_mib`` limits the body, before and after gzip."""

    endpoint: str = "127.0.0.1:4318"
    max_request_body_size_mib: int = 64
    tls: TLSServerConfig | None = None

    def validate(self) -> None:
        errors = _endpoint_errors(self.endpoint, 4318)
        if self.max_request_body_size_mib < 1:
            errors.append(
                ConfigError(
                    "max_request_body_size_mib",
                    f"{self.max_request_body_size_mib} is too small; set at least 1",
                )
            )
        errors += nested_errors("tls", self.tls)
        raise_errors(errors)


@dataclass
class ProtocolsConfig:
    """Enabled transports; None means disabled."""

    grpc: GrpcProtocolConfig | None = None
    http: HttpProtocolConfig | None = None

    def validate(self) -> None:
        if self.grpc is None and self.http is None:
            raise ConfigError("", "no protocol is enabled; add grpc: or http: (an empty key enables it with defaults)")
        raise_errors(nested_errors("grpc", self.grpc) + nested_errors("http", self.http))


@dataclass
class AuthConfig:
    """Bearer-token authentication for both transports."""

    # Compared in constant time; kept out of repr() so it never reaches a log.
    bearer_token: str = field(default="", repr=False)

    def validate(self) -> None:
        if not self.bearer_token:
            raise ConfigError(
                "bearer_token",
                "the value is empty; set a token (if it comes from an environment variable, "
                "set that variable to the token) or remove auth",
            )


@dataclass
class OtlpReceiverConfig:
    """Config of the ``otlp`` receiver.

    In YAML, a protocol key present with a null value (``grpc:``) enables
    that protocol with defaults, as in the Collector; an absent key disables
    it. ``overload_status`` is the gRPC code sent while the consumer refuses
    data: ``unavailable`` or ``resource_exhausted``.
    """

    protocols: ProtocolsConfig = field(default_factory=ProtocolsConfig)
    auth: AuthConfig | None = None
    overload_status: str = "unavailable"

    def validate(self) -> None:
        errors = nested_errors("protocols", self.protocols) + nested_errors("auth", self.auth)
        if self.overload_status not in OVERLOAD_STATUSES:
            errors.append(
                ConfigError(
                    "overload_status",
                    f"{self.overload_status!r} is not supported; use one of {', '.join(OVERLOAD_STATUSES)}",
                )
            )
        raise_errors(errors)


def _endpoint_errors(endpoint: str, default_port: int) -> list[ConfigError]:
    try:
        parse_endpoint(endpoint, "endpoint", default_port)
    except ConfigError as err:
        return [err]
    return []


def parse_endpoint(endpoint: str, path: str = "endpoint", default_port: int = 4317) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port``; an empty host means all interfaces).

    ``default_port`` is the protocol's usual port, used in the examples of
    error messages: 4317 for OTLP/gRPC, 4318 for OTLP/HTTP.
    """
    host, sep, port_text = endpoint.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(path, f"{endpoint!r} is not host:port; write for example 127.0.0.1:{default_port}")
    if int(port_text) > 65535:
        raise ConfigError(
            path,
            f"port {port_text} of {endpoint!r} is out of range (0-65535); "
            f"write for example 127.0.0.1:{default_port}",
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(
            path, f"{endpoint!r}: put an IPv6 address in brackets, for example [::1]:{default_port}"
        )
    return host or "0.0.0.0", int(port_text)


# ---------------------------------------------------------------- requests


@dataclass(slots=True)
class RawRequest:
    """One well-formed Export request as it arrived, for recordings.

    ``body`` is decompressed. ``compression`` is "gzip" when an HTTP body
    arrived gzipped. It is always "" for gRPC, because grpcio decompresses
    before the handler and does not tell which encoding was used.
    """

    body: bytes
    received_ns: int
    transport: str
    content_type: str
    compression: str


class InvalidRequest(Exception):
    """A request body that is not a valid Export request."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _BodyTooLarge(Exception):
    pass


# A body over the limit, but at most this many times the limit, is read and
# dropped before the 413 reply. A larger one is not read at all.
DISCARD_FACTOR = 4


# ---------------------------------------------------------------- receiver


class OtlpReceiver:
    """OTLP/gRPC and OTLP/HTTP listeners feeding one consumer."""

    def __init__(
        self,
        config: OtlpReceiverConfig,
        consumer: Consumer,
        context: ComponentContext,
        raw_sink: Callable[[RawRequest], None] | None = None,
    ) -> None:
        self.config = config
        self.consumer = consumer
        self.context = context
        self.telemetry = context.telemetry
        self.log = context.logger
        self.raw_sink = raw_sink
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        auth = config.auth
        self._token = auth.bearer_token.encode() if auth is not None and auth.bearer_token else None
        self._resource_exhausted = config.overload_status == "resource_exhausted"
        self._grpc_server: grpc.Server | None = None
        self._grpc_workers: futures.ThreadPoolExecutor | None = None
        self._health: health.HealthServicer | None = None
        self._http_server: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._stopped = False

    # -- lifecycle

    def start(self) -> None:
        """Bind the enabled listeners and start serving.

        Raises ConfigError when a TLS file cannot be read and OSError when
        an endpoint cannot be bound; nothing is left listening then.
        """
        protocols = self.config.protocols
        try:
            if protocols.grpc is not None:
                self._start_grpc(protocols.grpc)
            if protocols.http is not None:
                self._start_http(protocols.http)
        except BaseException:
            self.shutdown(grace_s=0)
            raise
        self._stopped = False
        event(
            self.log,
            "receiver_started",
            receiver=self.context.component_id,
            grpc_endpoint=self._bound(protocols.grpc, self.grpc_port),
            http_endpoint=self._bound(protocols.http, self.http_port),
            grpc_tls=bool(protocols.grpc and protocols.grpc.tls),
            http_tls=bool(protocols.http and protocols.http.tls),
            auth="bearer" if self._token else "none",
            overload_status=self.config.overload_status,
        )

    def shutdown(self, grace_s: float = 5.0) -> None:
        """Stop accepting requests and wait up to ``grace_s`` for those in flight.

        The gRPC health status turns NOT_SERVING first. Requests still
        running after ``grace_s`` are cancelled (gRPC) or cut (HTTP).
        """
        if self._stopped:
            return
        self._stopped = True
        deadline = time.monotonic() + max(grace_s, 0.0)
        if self._health is not None:
            self._health.enter_graceful_shutdown()
        grpc_stopped = self._grpc_server.stop(grace_s) if self._grpc_server is not None else None
        abandoned = 0
        if self._http_server is not None:
            abandoned = self._http_server.stop(deadline, self._http_thread)
        if grpc_stopped is not None:
            grpc_stopped.wait(max(deadline - time.monotonic(), 0.0) + 1.0)
        if self._grpc_workers is not None:
            self._grpc_workers.shutdown(wait=False)
        if self.grpc_port is not None or self.http_port is not None:
            event(
                self.log,
                "receiver_stopped",
                receiver=self.context.component_id,
                http_requests_cut=abandoned,
            )

    @staticmethod
    def _bound(protocol, port: int | None) -> str | None:
        if protocol is None or port is None:
            return None
        host, _ = parse_endpoint(protocol.endpoint)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _start_grpc(self, cfg: GrpcProtocolConfig) -> None:
        options = [
            ("grpc.max_receive_message_length", cfg.max_recv_msg_size_mib * MIB),
            ("grpc.max_send_message_length", GRPC_MAX_SEND_MSG_SIZE),
            # Without this, grpcio sets SO_REUSEPORT and a second process can
            # bind the same port and silently take half the connections.
            ("grpc.so_reuseport", 0),
            # Accept client keepalive pings every 10 s (grpc-go's minimum
            # keepalive time), with or without calls. Under grpc core's
            # default policy (one ping per 5 min without data), a collector
            # with keepalive.time: 30s gets GOAWAY too_many_pings.
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
        self._grpc_workers = futures.ThreadPoolExecutor(max_workers=GRPC_WORKERS, thread_name_prefix="otlp-grpc")
        server = grpc.server(self._grpc_workers, options=options)
        export = grpc.unary_unary_rpc_method_handler(self._grpc_export)  # bytes in, bytes out
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(METRICS_SERVICE, {"Export": export}),)
        )
        self._health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)

        host, port = parse_endpoint(cfg.endpoint, "protocols.grpc.endpoint")
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if cfg.tls is None:
                bound = server.add_insecure_port(address)
            else:
                bound = server.add_secure_port(address, _grpc_credentials(cfg.tls, "protocols.grpc.tls"))
        except RuntimeError as err:
            # grpcio's message ends with advice about GRPC_VERBOSITY; keep its first sentence.
            reason = str(err).split(";", 1)[0].rstrip(". ")
            raise OSError(
                f"cannot listen on {cfg.endpoint} "
                f"(receivers.{self.context.component_id}.protocols.grpc.endpoint): {reason}; "
                "is the port in use? choose a free port"
            ) from None
        server.start()

        self._grpc_server = server
        self.grpc_port = bound
        self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._health.set(METRICS_SERVICE, health_pb2.HealthCheckResponse.SERVING)

    def _start_http(self, cfg: HttpProtocolConfig) -> None:
        host, port = parse_endpoint(cfg.endpoint, "protocols.http.endpoint", default_port=4318)
        tls_context = _http_ssl_context(cfg.tls, "protocols.http.tls") if cfg.tls else None
        try:
            server = _HttpServer((host, port), self, cfg.max_request_body_size_mib * MIB, tls_context)
        except OSError as err:
            raise OSError(
                f"cannot listen on {cfg.endpoint} "
                f"(receivers.{self.context.component_id}.protocols.http.endpoint): {err}; "
                "is the port in use? choose a free port"
            ) from None
        self._http_server = server
        self.http_port = server.server_address[1]
        self._http_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="otlp-http", daemon=True
        )
        self._http_thread.start()

    # -- the path every request takes

    def accept(
        self, transport: str, body: bytes, content_type: str, compression: str, peer: str, received_ns: int
    ) -> tuple[DecodeResult, Admission]:
        """Decode one request body, record it and hand it to the consumer.

        Raises InvalidRequest (counted and logged) when the body is not a
        valid Export request. An empty request gets a success reply without
        reaching the consumer.
        """
        try:
            result = self._decode(body, content_type)
        except InvalidRequest as err:
            self.count_request(transport, "invalid")
            self.log_rejected(transport, "request_invalid", peer, err.message)
            raise
        if self.raw_sink is not None:
            self._record(RawRequest(body, received_ns, transport, content_type, compression))
        admission = self.consumer.submit(result, received_ns, transport) if result.batch else ACCEPTED
        if admission.accepted:
            self.count_request(transport, "accepted")
            self.telemetry.add("otelsnap_receiver_accepted_points", result.points, transport=transport)
            for reason, count in result.reject_reasons.items():
                self.telemetry.add("otelsnap_receiver_rejected_points", count, transport=transport, reason=reason)
        else:
            self.count_request(transport, "refused")
            self.telemetry.add(
                "otelsnap_receiver_refused_points", result.points, transport=transport, reason=admission.code
            )
            self.log_rejected(
                transport,
                "request_refused",
                peer,
                admission.reason,
                retry_after_s=admission.retry_after_s,
                points=result.points,
            )
        return result, admission

    def _decode(self, body: bytes, content_type: str) -> DecodeResult:
        if content_type == JSON:
            request = ExportMetricsServiceRequest()
            try:
                # OTLP/JSON: lowerCamelCase keys, 64-bit integers as strings,
                # enums as integers, unknown fields ignored.
                json_format.Parse(body, request, ignore_unknown_fields=True)
            except (json_format.ParseError, UnicodeDecodeError, RecursionError) as err:
                raise InvalidRequest(
                    f"request body of {len(body)} bytes is not a valid OTLP/JSON ExportMetricsServiceRequest: {err}"
                ) from None
            return decode_request(request)
        try:
            return decode_bytes(body)
        except DecodeError as err:
            raise InvalidRequest(
                f"request body of {len(body)} bytes is not a valid ExportMetricsServiceRequest: {err}"
            ) from None

    def _record(self, raw: RawRequest) -> None:
        try:
            self.raw_sink(raw)
        except Exception as err:  # a recording failure must not fail the request
            self.telemetry.add("otelsnap_receiver_raw_sink_errors", 1, transport=raw.transport)
            event(
                self.log,
                "raw_sink_failed",
                logging.ERROR,
                every_s=LOG_EVERY_S,
                key="raw_sink",
                transport=raw.transport,
                error=repr(err),
            )

    def authorized(self, header: str | None) -> bool:
        """Check an ``Authorization`` value against the bearer token in constant time."""
        if self._token is None:
            return True
        if not header:
            return False
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode(), self._token)

    def log_internal_error(self, transport: str, peer: str, err: Exception) -> None:
        """Count and log a failure of otelsnap itself while processing a request.

        The sender gets UNAVAILABLE (HTTP 503) and retries, as it does
        when the Collector's own OTLP receiver meets a non-permanent error.
        """
        self.count_request(transport, "internal_error")
        event(
            self.log,
            "request_failed",
            logging.ERROR,
            every_s=LOG_EVERY_S,
            key=(self.context.component_id, transport),
            transport=transport,
            peer=peer,
            error=repr(err),
            exc_info=err,
        )

    def count_request(self, transport: str, outcome: str) -> None:
        self.telemetry.add("otelsnap_receiver_requests", 1, transport=transport, outcome=outcome)

    def log_rejected(self, transport: str, name: str, peer: str, reason: str, **fields) -> None:
        """Log a request that was not accepted, at most once per 10 s per event and transport."""
        event(
            self.log,
            name,
            logging.WARNING,
            every_s=LOG_EVERY_S,
            key=(self.context.component_id, transport),
            transport=transport,
            peer=peer,
            reason=reason,
            **fields,
        )

    def retry_after_s(self, admission: Admission) -> float:
        return max(admission.retry_after_s, MIN_RETRY_AFTER_S)

    def overload_status(self, admission: Admission) -> status_pb2.Status:
        """Build the google.rpc.Status for a refused request, with RetryInfo."""
        delay_s = self.retry_after_s(admission)
        code = code_pb2.RESOURCE_EXHAUSTED if self._resource_exhausted else code_pb2.UNAVAILABLE
        retry_info = error_details_pb2.RetryInfo()
        retry_info.retry_delay.FromNanoseconds(round(delay_s * 1e9))
        detail = any_pb2.Any()
        detail.Pack(retry_info)
        reason = admission.reason or "otelsnap cannot take more data now"
        return status_pb2.Status(code=code, message=f"{reason}; retry after {delay_s:g} s", details=[detail])

    # -- gRPC

    def _grpc_export(self, body: bytes, context: grpc.ServicerContext) -> bytes:
        received_ns = time.time_ns()
        if self._token is not None and not self._grpc_authorized(context):
            self.count_request("grpc", "unauthenticated")
            self.log_rejected("grpc", "request_unauthenticated", context.peer(), "missing or wrong bearer token")
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong bearer token; send metadata authorization: Bearer <token>",
            )
        try:
            result, admission = self.accept("grpc", body, PROTOBUF, "", context.peer(), received_ns)
        except InvalidRequest as err:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.message)
        except Exception as err:
            self.log_internal_error("grpc", context.peer(), err)
            context.abort(grpc.StatusCode.UNAVAILABLE, f"otelsnap failed to process the request: {err!r}; retry")
        if not admission.accepted:
            context.abort_with_status(rpc_status.to_status(self.overload_status(admission)))
        return export_response(result).SerializeToString()

    def _grpc_authorized(self, context: grpc.ServicerContext) -> bool:
        for key, value in context.invocation_metadata():
            if key == "authorization":
                return self.authorized(value)
        return False


def export_response(result: DecodeResult) -> ExportMetricsServiceResponse:
    """Build the Export response; partial_success only when points were rejected."""
    response = ExportMetricsServiceResponse()
    if result.rejected:
        response.partial_success.rejected_data_points = result.rejected
        response.partial_success.error_message = result.error_message()
    return response


def _read_file(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise ConfigError(key, f"cannot read {path!r}: {err.strerror}; check the path and its permissions") from None


def _grpc_credentials(tls: TLSServerConfig, key: str) -> grpc.ServerCredentials:
    cert = _read_file(tls.cert_file, f"{key}.cert_file")
    private_key = _read_file(tls.key_file, f"{key}.key_file")
    client_ca = _read_file(tls.client_ca_file, f"{key}.client_ca_file") if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(private_key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _http_ssl_context(tls: TLSServerConfig, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _read_file(tls.cert_file, f"{key}.cert_file")
    _read_file(tls.key_file, f"{key}.key_file")
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError as err:
        raise ConfigError(key, f"cannot load cert_file and key_file: {err}; check they are a matching PEM pair") from None
    if tls.client_ca_file:
        _read_file(tls.client_ca_file, f"{key}.client_ca_file")
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except ssl.SSLError as err:
            raise ConfigError(f"{key}.client_ca_file", f"cannot load the CA certificates: {err}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


# ---------------------------------------------------------------- HTTP


class _HttpServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks requests in flight and open connections."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        receiver: OtlpReceiver,
        max_body_size: int,
        tls_context: ssl.SSLContext | None,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.receiver = receiver
        self.max_body_size = max_body_size
        self.tls_context = tls_context
        self.closing = False
        self.in_flight = 0
        self.connections: set[socket.socket] = set()
        self.state_changed = threading.Condition()
        super().__init__(address, _OtlpHttpHandler)

    def get_request(self):
        sock, address = super().get_request()
        if self.tls_context is not None:
            # The handshake runs in the connection's own thread (handler
            # setup), so a slow client cannot stall the accept loop.
            sock = self.tls_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request, client_address) -> None:
        # Called inside the except block of the connection's thread.
        err = sys.exc_info()[1]
        event(
            self.receiver.log,
            "http_connection_failed",
            logging.WARNING,
            every_s=LOG_EVERY_S,
            key="http_connection",
            peer=_peer(client_address),
            error=repr(err),
            # Network and TLS errors (a reset, a failed handshake) need no traceback.
            exc_info=None if isinstance(err, OSError) else err,
        )

    def begin_request(self) -> bool:
        with self.state_changed:
            if self.closing:
                return False
            self.in_flight += 1
            return True

    def end_request(self) -> None:
        with self.state_changed:
            self.in_flight -= 1
            self.state_changed.notify_all()

    def stop(self, deadline: float, serve_thread: threading.Thread | None) -> int:
        """Close the listener, wait until ``deadline`` for requests, then cut connections.

        Returns the number of requests still running when the wait ended.
        """
        with self.state_changed:
            self.closing = True
        if serve_thread is not None and serve_thread.is_alive():
            self.shutdown()
        self.server_close()
        with self.state_changed:
            while self.in_flight and (remaining := deadline - time.monotonic()) > 0:
                self.state_changed.wait(remaining)
            cut = self.in_flight
            connections = list(self.connections)
        for conn in connections:  # idle keep-alive connections, and any request past the deadline
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return cut


class _OtlpHttpHandler(BaseHTTPRequestHandler):
    """One connection: ``POST /v1/metrics`` with protobuf or JSON bodies."""

    server: _HttpServer
    protocol_version = "HTTP/1.1"
    server_version = "otelsnap"
    sys_version = ""
    timeout = HTTP_IDLE_TIMEOUT_S
    disable_nagle_algorithm = True

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()
        with self.server.state_changed:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.state_changed:
            self.server.connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args) -> None:
        # Request lines are not logged; failed requests are logged as events.
        pass

    def log_error(self, format: str, *args) -> None:
        event(
            self.server.receiver.log,
            "http_request_failed",
            logging.DEBUG,
            peer=self.peer,
            error=format % args,
        )

    @property
    def peer(self) -> str:
        return _peer(self.client_address)

    # -- methods

    def do_POST(self) -> None:
        self.body_state = "unread"
        if self._path() != HTTP_METRICS_PATH:
            self._not_found()
            return
        if not self.server.begin_request():
            self._send_error(503, code_pb2.UNAVAILABLE, "otelsnap is shutting down; retry", close=True)
            return
        try:
            self._export()
        finally:
            self.server.end_request()

    def _other_method(self) -> None:
        self.body_state = "unread"
        if self._path() != HTTP_METRICS_PATH:
            self._not_found()
            return
        self._reject("invalid", f"method {self.command} is not allowed on {HTTP_METRICS_PATH}; use POST")
        self._send_error(
            405,
            code_pb2.UNIMPLEMENTED,
            f"method {self.command} is not allowed; use POST",
            headers={"Allow": "POST"},
        )

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _other_method

    # -- export

    def _export(self) -> None:
        received_ns = time.time_ns()
        if not self._headers_acceptable():
            return
        body = self._read_body_or_reply(self._content_encoding() == "gzip")
        if body is None:
            return

        receiver = self.server.receiver
        compression = "gzip" if self._content_encoding() == "gzip" else ""
        try:
            result, admission = receiver.accept("http", body, self._media_type(), compression, self.peer, received_ns)
        except InvalidRequest as err:
            self._send_error(400, code_pb2.INVALID_ARGUMENT, err.message)
            return
        except Exception as err:
            receiver.log_internal_error("http", self.peer, err)
            self._send_error(
                503,
                code_pb2.UNAVAILABLE,
                f"otelsnap failed to process the request: {err!r}; retry",
                headers={"Retry-After": str(math.ceil(MIN_RETRY_AFTER_S))},
            )
            return
        if not admission.accepted:
            status = receiver.overload_status(admission)
            retry_after = str(math.ceil(receiver.retry_after_s(admission)))
            self._send(
                429 if status.code == code_pb2.RESOURCE_EXHAUSTED else 503,
                self._encode(status),
                headers={"Retry-After": retry_after},
            )
            return
        self._send(200, self._encode(export_response(result)))

    def _headers_acceptable(self) -> bool:
        """Check the token, Content-Type and Content-Encoding; send the error reply if one fails."""
        receiver = self.server.receiver
        if not receiver.authorized(self.headers.get("Authorization")):
            receiver.count_request("http", "unauthenticated")
            receiver.log_rejected("http", "request_unauthenticated", self.peer, "missing or wrong bearer token")
            self._send_error(
                401,
                code_pb2.UNAUTHENTICATED,
                "missing or wrong bearer token; send the header Authorization: Bearer <token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
            return False

        content_type = self._media_type()
        if content_type not in (PROTOBUF, JSON):
            self._reject("invalid", f"unsupported Content-Type {content_type!r}")
            self._send_error(
                415,
                code_pb2.INVALID_ARGUMENT,
                f"Content-Type {content_type or '(none)'!r} is not supported; send {PROTOBUF} or {JSON}",
            )
            return False

        encoding = self._content_encoding()
        if encoding not in ("", "identity", "gzip"):
            self._reject("invalid", f"unsupported Content-Encoding {encoding!r}")
            self._send_error(
                415,
                code_pb2.INVALID_ARGUMENT,
                f"Content-Encoding {encoding!r} is not supported; configure the exporter with "
                "compression: gzip (or none)",
            )
            return False
        return True

    def _read_body_or_reply(self, gzipped: bool) -> bytes | None:
        """Read (and gunzip) the body, or send the error reply and return None."""
        limit = self.server.max_body_size
        self.body_state = "broken"  # until the whole body has been read
        try:
            body = self._read_body(limit)
        except _BodyTooLarge as err:
            self._too_large(str(err))
            return None
        except ValueError as err:
            self._reject("invalid", str(err))
            self._send_error(400, code_pb2.INVALID_ARGUMENT, str(err), close=True)
            return None
        if body is None:
            self._reject("invalid", "request without Content-Length")
            self._send_error(411, code_pb2.INVALID_ARGUMENT, "send Content-Length or chunked encoding", close=True)
            return None
        self.body_state = "read"
        if not gzipped:
            return body
        try:
            return gunzip(body, limit)
        except _BodyTooLarge as err:
            self._too_large(str(err))
        except (zlib.error, EOFError) as err:
            message = f"request body of {len(body)} bytes is not valid gzip: {err}"
            self.server.receiver.count_request("http", "invalid")
            self.server.receiver.log_rejected("http", "request_invalid", self.peer, message)
            self._send_error(400, code_pb2.INVALID_ARGUMENT, message)
        return None

    def _read_body(self, limit: int) -> bytes | None:
        """Read the body by Content-Length or chunked encoding; None when neither is sent."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return None
        try:
            length = int(length_text)
        except ValueError:
            raise ValueError(f"Content-Length {length_text!r} is not a number") from None
        if length < 0:
            raise ValueError(f"Content-Length {length} is negative")
        if length > limit:
            # Read the body before replying, so the client receives the 413.
            # A reply sent mid-upload reaches it as a broken connection, which
            # an exporter retries forever. Bodies far over the limit are not
            # read, and the connection is closed on them.
            if length <= DISCARD_FACTOR * limit:
                self._discard(length)
            raise _BodyTooLarge(f"request body of {length} bytes is larger than the limit of {limit} bytes")
        body = self.rfile.read(length)
        if len(body) != length:
            raise ValueError(f"connection closed after {len(body)} of {length} body bytes")
        return body

    def _discard(self, length: int) -> None:
        """Read and drop ``length`` body bytes, in pieces of at most 64 KiB."""
        left = length
        while left > 0:
            piece = self.rfile.read(min(left, 1 << 16))
            if not piece:
                return
            left -= len(piece)

    def _read_chunked(self, limit: int) -> bytes:
        parts = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ValueError(f"invalid chunk size line {size_line[:40]!r}") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > limit:
                raise _BodyTooLarge(f"chunked request body is larger than the limit of {limit} bytes")
            chunk = self.rfile.read(size)
            if len(chunk) != size:
                raise ValueError("connection closed inside a chunk")
            parts.append(chunk)
            self.rfile.readline(16)

    # -- replies

    def _too_large(self, message: str) -> None:
        self._reject("too_large", message)
        self._send_error(413, code_pb2.RESOURCE_EXHAUSTED, message, close=True)

    def _not_found(self) -> None:
        self._reject("invalid", f"path {self._path()!r} not found")
        self._send_error(
            404, code_pb2.NOT_FOUND, f"path {self._path()!r} not found; OTLP metrics go to POST {HTTP_METRICS_PATH}",
        )

    def _reject(self, outcome: str, reason: str) -> None:
        receiver = self.server.receiver
        receiver.count_request("http", outcome)
        receiver.log_rejected("http", "request_invalid" if outcome == "invalid" else "request_too_large", self.peer, reason)

    def _send_error(self, status: int, code: int, message: str, close: bool = False, headers=None) -> None:
        """Reply with a google.rpc.Status in the request's content type (text for others)."""
        if self._media_type() in (PROTOBUF, JSON):
            body = self._encode(status_pb2.Status(code=code, message=message))
        else:
            body = (message + "\n").encode()
        self._send(status, body, close=close, headers=headers, content_type=None)

    def _encode(self, message) -> bytes:
        if self._media_type() == JSON:
            return json_format.MessageToJson(message, indent=None).encode()
        return message.SerializeToString()

    def _send(self, status: int, body: bytes, close: bool = False, headers=None, content_type=None) -> None:
        media_type = self._media_type()
        if content_type is None:
            content_type = media_type if media_type in (PROTOBUF, JSON) else "text/plain; charset=utf-8"
        if self.body_state == "broken" or (self.body_state == "unread" and not self._drain_body()):
            # The rest of the body is unknown, so the connection cannot carry another request.
            close = True
        if close:
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _drain_body(self) -> bool:
        """Read and discard an unread body within the size limit, so the connection stays usable.

        Closing a socket with unread input makes the kernel send a reset,
        which can destroy the reply before the client reads it.
        """
        self.body_state = "read"
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return False
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return self.command != "POST"  # other methods without Content-Length carry no body
        try:
            remaining = int(length_text)
        except ValueError:
            return False
        if not 0 <= remaining <= self.server.max_body_size:
            return False
        while remaining:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                return False
            remaining -= len(chunk)
        return True

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    def _media_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()

    def _content_encoding(self) -> str:
        return self.headers.get("Content-Encoding", "").strip().lower()


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress a gzip body (all members) and raise _BodyTooLarge past ``limit`` bytes."""
    out = []
    total = 0
    while data:
        decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        chunk = decompressor.decompress(data, limit - total + 1)
        total += len(chunk)
        if total > limit or decompressor.unconsumed_tail:
            raise _BodyTooLarge(f"decompressed request body is larger than the limit of {limit} bytes")
        if not decompressor.eof:
            raise EOFError("gzip stream ends before its end marker")
        out.append(chunk)
        data = decompressor.unused_data
    return b"".join(out)


def _peer(client_address) -> str:
    if isinstance(client_address, tuple) and len(client_address) >= 2:
        host, port = client_address[0], client_address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(client_address)
