"""The recording file: OTLP Export request bodies with their arrival times.

Layout (all of it documented in docs/recordings.md)::

    header   8 bytes magic b"OTLPREC\\n", then the format version as a
             little-endian uint16 (currently 1)
    record*  varint length N, then N bytes of a RecordedRequest message

    message RecordedRequest {
      uint64  received_unix_nano = 1;  // arrival time at the receiver
      string  transport          = 2;  // "grpc" or "http"
      string  content_type       = 3;  // "application/x-protobuf" or "application/json"
      string  compression        = 4;  // how it arrived: "gzip" or ""
      bytes   body               = 5;  // the Export request, decompressed
      fixed32 body_crc32         = 6;  // CRC-32 (zlib polynomial) of body
    }

Reading and writing stream one record at a time, so a recording of any
length needs memory for one request only. A file whose name ends in
``.gz`` is gzip-compressed as a whole. The reader yields every good record
and then raises ``RecordingError`` naming the byte offset of the first
record it cannot read (for ``.gz`` files, the offset in the decompressed
stream).
"""

from __future__ import annotations

import gzip
import io
import os
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from pipeline.decode import DecodeResult, decode_bytes, decode_request

MAGIC = b"OTLPREC\n"
FORMAT_VERSION = 1
HEADER_SIZE = len(MAGIC) + 2

# A length prefix above this is taken as corruption rather than a request
# (the receiver's own default limit is 64 MiB per message).
MAX_RECORD_BYTES = 1 << 30

TRANSPORTS = ("grpc", "http")
CONTENT_TYPE_PROTOBUF = "application/x-protobuf"
CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPES = (CONTENT_TYPE_PROTOBUF, CONTENT_TYPE_JSON)


class RecordingError(Exception):
    """A recording that cannot be read past ``offset`` (bytes from the start).

    ``records_read`` is how many good records came before the bad one.
    """

    def __init__(self, message: str, offset: int, records_read: int = 0) -> None:
        super().__init__(f"byte offset {offset}: {message}")
        self.offset = offset
        self.records_read = records_read
        self.reason = message


@dataclass(slots=True)
class RecordedRequest:
    """One Export request as the receiver got it, body decompressed."""

    received_ns: int
    transport: str
    content_type: str
    compression: str
    body: bytes
    offset: int = 0  # byte offset of the record's length prefix; 0 for a new record

    def decode(self) -> DecodeResult:
        """Decode the body into the model, by its content type.

        Raises DecodeError (protobuf) or json_format.ParseError (JSON) on a
        body that is not a valid request.
        """
        if self.content_type == CONTENT_TYPE_JSON:
            request = ExportMetricsServiceRequest()
            json_format.Parse(self.body, request, ignore_unknown_fields=True)
            return decode_request(request)
        return decode_bytes(self.body)

    def to_request(self) -> ExportMetricsServiceRequest:
        """Parse the body into a standard ExportMetricsServiceRequest."""
        request = ExportMetricsServiceRequest()
        if self.content_type == CONTENT_TYPE_JSON:
            json_format.Parse(self.body, request, ignore_unknown_fields=True)
        else:
            request.ParseFromString(self.body)
        return request


def _recorded_request_class() -> type:
    """Build the RecordedRequest protobuf message class at import time."""
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="otelsnap/recording.proto", package="otelsnap.recording.v1", syntax="proto3"
    )
    message = file_proto.message_type.add(name="RecordedRequest")
    field_type = descriptor_pb2.FieldDescriptorProto
    for number, (name, kind) in enumerate(
        (
            ("received_unix_nano", field_type.TYPE_UINT64),
            ("transport", field_type.TYPE_STRING),
            ("content_type", field_type.TYPE_STRING),
            ("compression", field_type.TYPE_STRING),
            ("body", field_type.TYPE_BYTES),
            ("body_crc32", field_type.TYPE_FIXED32),
        ),
        start=1,
    ):
        message.field.add(name=name, number=number, type=kind, label=field_type.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file_proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("otelsnap.recording.v1.RecordedRequest")
    )


RecordedRequestProto = _recorded_request_class()


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def header_bytes(version: int = FORMAT_VERSION) -> bytes:
    return MAGIC + version.to_bytes(2, "little")


def encode_record(
    received_ns: int, transport: str, content_type: str, compression: str, body: bytes
) -> bytes:
    """Serialize one record, length prefix included."""
    proto = RecordedRequestProto(
        received_unix_nano=received_ns,
        transport=transport,
        content_type=content_type,
        compression=compression,
        body=body,
        body_crc32=zlib.crc32(body),
    )
    payload = proto.SerializeToString()
    return encode_varint(len(payload)) + payload


def _open_binary(path: str | os.PathLike, mode: str) -> BinaryIO:
    if os.fspath(path).endswith(".gz"):
        return gzip.open(path, mode)  # type: ignore[return-value]
    return open(path, mode)  # noqa: SIM115 - closed by the owner


class RecordingWriter:
    """Append records to a recording file; safe to call from several threads.

    Each record is flushed to the operating system as it is written, so a
    killed ``otelsnap record`` leaves every finished record readable.
    """

    def __init__(self, path: str | os.PathLike, *, flush_each: bool = True) -> None:
        self.path = os.fspath(path)
        self._file = _open_binary(path, "wb")
        self._lock = threading.Lock()
        self._flush_each = flush_each
        self.records = 0
        self.bytes_written = 0
        self._file.write(header_bytes())
        self.bytes_written = HEADER_SIZE
        self._closed = False

    def write(
        self,
        received_ns: int,
        transport: str,
        content_type: str,
        compression: str,
        body: bytes,
    ) -> None:
        """Append one request."""
        if transport not in TRANSPORTS:
            raise ValueError(f"invalid transport {transport!r}: use one of {', '.join(TRANSPORTS)}")
        data = encode_record(received_ns, transport, content_type, compression, body)
        with self._lock:
            if self._closed:
                raise ValueError(f"recording {self.path} is closed")
            self._file.write(data)
            if self._flush_each:
                self._file.flush()
            self.records += 1
            self.bytes_written += len(data)

    def write_request(self, request) -> None:
        """Append a RawRequest (receiver) or RecordedRequest: any object with
        ``received_ns``, ``transport``, ``content_type``, ``compression`` and ``body``."""
        self.write(
            request.received_ns,
            request.transport,
            request.content_type,
            request.compression,
            request.body,
        )

    def close(self, fsync: bool = True) -> None:
        """Flush, optionally fsync, and close the file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._file.flush()
            if fsync and not isinstance(self._file, gzip.GzipFile):
                os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RecordingReader:
    """Iterate over the records of a recording, one at a time.

    ``records_read`` and ``offset`` tell how far reading got; they stay
    valid after a RecordingError.
    """

    def __init__(self, source: str | os.PathLike | BinaryIO, max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        if isinstance(source, (str, os.PathLike)):
            self.name = os.fspath(source)
            self._file: BinaryIO = _open_binary(source, "rb")
            self._owns_file = True
        else:
            self.name = getattr(source, "name", "<stream>")
            self._file = source
            self._owns_file = False
        self.max_record_bytes = max_record_bytes
        self.version = 0
        self.records_read = 0
        self.offset = 0

    def close(self) -> None:
        if self._owns_file:
            self._file.close()

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[RecordedRequest]:
        self._read_header()
        while True:
            record = self._read_record()
            if record is None:
                return
            yield record

    def _fail(self, message: str, offset: int) -> RecordingError:
        return RecordingError(message, offset, self.records_read)

    def _read_exact(self, n: int) -> bytes:
        chunks = []
        remaining = n
        while remaining:
            chunk = self._file.read(remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _read_header(self) -> None:
        try:
            header = self._read_exact(HEADER_SIZE)
        except (OSError, EOFError, zlib.error) as exc:
            raise self._fail(f"cannot read the header ({exc})", 0) from None
        if not header:
            raise self._fail("empty file: not an OTLP recording", 0)
        if header[: len(MAGIC)] != MAGIC[: len(header)]:
            raise self._fail(f"not an OTLP recording: the file does not start with {MAGIC!r}", 0)
        if len(header) < HEADER_SIZE:
            raise self._fail(f"truncated header: {HEADER_SIZE} bytes expected, {len(header)} present", 0)
        self.version = int.from_bytes(header[len(MAGIC):], "little")
        if self.version != FORMAT_VERSION:
            raise self._fail(
                f"unsupported format version {self.version}: this otelsnap reads version "
                f"{FORMAT_VERSION}; upgrade otelsnap to read it",
                len(MAGIC),
            )
        self.offset = HEADER_SIZE

    def _read_varint(self, start: int) -> int | None:
        """Read a varint length prefix; None at a clean end of file."""
        result = shift = 0
        for index in range(10):
            byte = self._file.read(1)
            if not byte:
                if index == 0:
                    return None
                raise self._fail("truncated record: the length prefix is cut off", start)
            value = byte[0]
            result |= (value & 0x7F) << shift
            if not value & 0x80:
                self.offset = start + index + 1
                return result
            shift += 7
        raise self._fail("corrupt record: the length prefix is longer than 10 bytes", start)

    def _read_record(self) -> RecordedRequest | None:
        start = self.offset
        try:
            length = self._read_varint(start)
            if length is None:
                return None
            if length > self.max_record_bytes:
                raise self._fail(
                    f"corrupt record: length {length} bytes exceeds the maximum of "
                    f"{self.max_record_bytes} bytes",
                    start,
                )
            payload = self._read_exact(length)
        except (OSError, EOFError, zlib.error) as exc:
            raise self._fail(f"cannot read record ({exc})", start) from None
        if len(payload) < length:
            raise self._fail(
                f"truncated record: {length} bytes expected, {len(payload)} present", start
            )
        proto = RecordedRequestProto()
        try:
            proto.ParseFromString(payload)
        except DecodeError as exc:
            raise self._fail(f"corrupt record: not a RecordedRequest message ({exc})", start) from None
        if proto.transport not in TRANSPORTS:
            raise self._fail(f"corrupt record: invalid transport {proto.transport!r}", start)
        if zlib.crc32(proto.body) != proto.body_crc32:
            raise self._fail("corrupt record: the body does not match its CRC-32", start)
        self.offset += length
        self.records_read += 1
        return RecordedRequest(
            received_ns=proto.received_unix_nano,
            transport=proto.transport,
            content_type=proto.content_type,
            compression=proto.compression,
            body=proto.body,
            offset=start,
        )


def read_recording(source: str | os.PathLike | BinaryIO) -> Iterator[RecordedRequest]:
    """Yield the records of a recording; raise RecordingError at the first bad one."""
    with RecordingReader(source) as reader:
        yield from reader


def write_recording(path: str | os.PathLike, records) -> int:
    """Write records (objects with the RecordedRequest fields) to ``path``; return the count."""
    with RecordingWriter(path, flush_each=False) as writer:
        for record in records:
            writer.write_request(record)
        return writer.records


def recording_bytes(records) -> bytes:
    """Serialize records to an in-memory recording (for tests and small tools)."""
    out = io.BytesIO()
    out.write(header_bytes())
    for r in records:
        out.write(encode_record(r.received_ns, r.transport, r.content_type, r.compression, r.body))
    return out.getvalue()
