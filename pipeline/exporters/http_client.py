"""The HTTP side of the master exporter: a pooled urllib3 client, one POST,
and the classification of its outcome into delivered, retry or permanent.

urllib3 is used directly because its connection pool lets one TLS handshake
serve many requests, and it takes CA files and client certificates through
the standard ``ssl`` module. One timeout bounds the whole request. Its own
retries and redirects are turned off, so the exporter alone decides what to
retry.
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
from dataclasses import dataclass

import urllib3
from urllib3.exceptions import (
    HTTPError,
    InsecureRequestWarning,
    NewConnectionError,
    ProtocolError,
    SSLError,
    TimeoutError as Urllib3TimeoutError,
)

from pipeline.component import ConfigError
from pipeline.logs import event

# Outcomes of one request.
DELIVERED = "delivered"
RETRY = "retry"
PERMANENT = "permanent"

# Retry classes. "unavailable" means the Master could not take the request
# (not reachable, restarting behind a proxy, throttling): the item is not at
# fault, so it waits without a time limit. "server_error" means the Master
# responded with an error that the item itself may cause, so
# retry_on_failure.max_elapsed_s applies.
UNAVAILABLE = "unavailable"
SERVER_ERROR = "server_error"

_UNAVAILABLE_STATUSES = frozenset((429, 502, 503, 504))
_RETRY_AFTER_STATUSES = frozenset((429, 503))

# Retry-After values above this are capped, so a wrong header cannot stop
# delivery for hours.
MAX_RETRY_AFTER_S = 300.0
RESPONSE_EXCERPT_CHARS = 512


@dataclass
class TLSClientConfig:
    """TLS options for an https endpoint.

    ``ca_file`` is a PEM bundle of the CAs to trust; when it is empty, the
    system store is used. ``cert_file`` and ``key_file`` are a client
    certificate for mutual TLS. ``insecure_skip_verify`` turns off
    certificate and host name checks.
    """

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False

    def validate(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError(
                "cert_file" if not self.cert_file else "key_file",
                "cert_file and key_file must be set together for a client certificate",
            )

    def check_files(self, prefix: str) -> None:
        """Raise ConfigError naming the first configured file that cannot be read."""
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path and not os.access(path, os.R_OK):
                raise ConfigError(f"{prefix}tls.{name}", f"file {path!r} is missing or not readable")


@dataclass(slots=True)
class SendResult:
    """What one POST led to.

    ``outcome`` is DELIVERED, RETRY or PERMANENT. ``retry_class`` is
    UNAVAILABLE or SERVER_ERROR for a retry. ``reason`` is the short label
    for counters and logs ("status_503", "connection_refused", "timeout").
    """

    outcome: str
    reason: str = ""
    status: int = 0
    retry_class: str = ""
    retry_after_s: float | None = None
    response_excerpt: str = ""
    error: str = ""
    latency_s: float = 0.0


def build_pool(tls: TLSClientConfig, https: bool, log: logging.Logger) -> urllib3.PoolManager:
    """Create the connection pool; one connection, since requests go one at a time."""
    options: dict = {"num_pools": 2, "maxsize": 1, "retries": False}
    if https:
        if tls.insecure_skip_verify:
            options.update(cert_reqs="CERT_NONE", assert_hostname=False)
            # urllib3 would warn on every request; the exporter warns once at start.
            urllib3.disable_warnings(InsecureRequestWarning)
        else:
            options["cert_reqs"] = "CERT_REQUIRED"
            if tls.ca_file:
                options["ca_certs"] = tls.ca_file
        if tls.cert_file:
            options.update(cert_file=tls.cert_file, key_file=tls.key_file)
    return urllib3.PoolManager(**options)


def post(
    pool: urllib3.PoolManager, url: str, body: bytes, headers: dict[str, str], timeout_s: float
) -> SendResult:
    """POST ``body`` and classify the outcome; urllib3's network errors become RETRY results."""
    started = time.perf_counter()
    try:
        response = pool.request(
            "POST",
            url,
            body=body,
            headers=headers,
            timeout=urllib3.Timeout(total=timeout_s),
            retries=False,
            redirect=False,
            preload_content=True,
        )
    except HTTPError as err:
        reason = classify_error(err)
        return SendResult(
            RETRY,
            reason=reason,
            retry_class=UNAVAILABLE,
            error=str(err),
            latency_s=time.perf_counter() - started,
        )
    latency_s = time.perf_counter() - started
    status = response.status
    if 200 <= status < 300:
        return SendResult(DELIVERED, status=status, latency_s=latency_s)
    excerpt = response.data[: RESPONSE_EXCERPT_CHARS * 4].decode("utf-8", "replace")
    excerpt = excerpt[:RESPONSE_EXCERPT_CHARS]
    reason = f"status_{status}"
    if status in _UNAVAILABLE_STATUSES or status >= 500:
        retry_after = None
        if status in _RETRY_AFTER_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
        return SendResult(
            RETRY,
            reason=reason,
            status=status,
            retry_class=UNAVAILABLE if status in _UNAVAILABLE_STATUSES else SERVER_ERROR,
            retry_after_s=retry_after,
            response_excerpt=excerpt,
            latency_s=latency_s,
        )
    return SendResult(
        PERMANENT, reason=reason, status=status, response_excerpt=excerpt, latency_s=latency_s
    )


def classify_error(err: HTTPError) -> str:
    """Name a network failure: connection_refused, timeout, tls_error or connection_error."""
    # NewConnectionError is a subclass of urllib3's TimeoutError, so it goes first.
    if isinstance(err, NewConnectionError):
        cause = err.__cause__ or err.__context__
        if isinstance(cause, ConnectionRefusedError) or "refused" in str(err).lower():
            return "connection_refused"
        return "connection_error"
    if isinstance(err, Urllib3TimeoutError):
        return "timeout"
    if isinstance(err, SSLError):
        return "tls_error"
    if isinstance(err, ProtocolError):
        return "connection_error"
    return "connection_error"


def parse_retry_after(value: str | None, now_s: float) -> float | None:
    """Parse a Retry-After header (seconds or an HTTP date) into seconds from now.

    Returns None when the header is absent or invalid; caps the result at
    MAX_RETRY_AFTER_S.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - now_s
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def warn_insecure(log: logging.Logger, endpoint: str) -> None:
    event(
        log,
        "tls_verification_disabled",
        logging.WARNING,
        endpoint=endpoint,
        hint="insecure_skip_verify accepts any certificate; set tls.ca_file instead",
    )
