"""The recording file format (pipeline.recording) and otelsnap inspect.

Recordings are built from the real six-node node_exporter text. The round
trip is checked against an independent parse of that text (a regular
expression here, not pipeline.promtext). Damaged files are made by cutting
or flipping bytes of a real recording; the expected offsets are computed
from the record sizes, not read from the reader.
"""

from __future__ import annotations

import argparse
import io
import re
import threading
from pathlib import Path

import pytest

from pipeline import convert, inspect, promtext, recording
from pipeline.recording import RecordedRequest, RecordingError, RecordingReader, RecordingWriter

ROOT = Path(__file__).parent.parent
SIX_DIR = ROOT / "testdata" / "atlhyper-six-nodes"
SIX_NODES = SIX_DIR / "otel_all_nodes.txt"
SIX_NODES_LATER = SIX_DIR / "otel_all_nodes_plus15s.txt"
T0 = 1_766_397_600_000_000_000
T1 = T0 + 15_000_000_000

SAMPLE_RE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
LABEL_RE = re.compile(r'(\w+)="([^"]*)"')


def parse_text_independently(path: Path) -> dict[tuple, float]:
    """Map (instance, name without otel_, sorted labels) → value."""
    out = {}
    for line in path.read_text().splitlines():
        match = SAMPLE_RE.match(line)
        assert match, line
        labels = dict(LABEL_RE.findall(match["labels"]))
        instance = labels.pop("instance")
        labels.pop("job")
        labels = {k: v for k, v in labels.items() if v}
        name = match["name"].removeprefix("otel_")
        out[(instance, name, tuple(sorted(labels.items())))] = float(match["value"])
    return out


def scrape_body(path: Path, time_ns: int) -> bytes:
    request = convert.exposition_to_request(
        promtext.parse(path.read_text()), time_ns, convert.ConvertOptions(strip_prefix="otel_")
    )
    return request.SerializeToString()


def two_scrape_records() -> list[RecordedRequest]:
    return [
        RecordedRequest(T0 + 40_000_000, "grpc", "application/x-protobuf", "gzip", scrape_body(SIX_NODES, T0)),
        RecordedRequest(T1 + 35_000_000, "http", "application/x-protobuf", "", scrape_body(SIX_NODES_LATER, T1)),
    ]


def record_size(record: RecordedRequest) -> int:
    return len(recording.encode_record(
        record.received_ns, record.transport, record.content_type, record.compression, record.body
    ))


def write(path: Path, records: list[RecordedRequest]) -> None:
    with RecordingWriter(path) as writer:
        for record in records:
            writer.write_request(record)


# --- round trip --------------------------------------------------------------


def test_round_trip_points_match_text(tmp_path):
    path = tmp_path / "six.otlprec"
    write(path, two_scrape_records())
    records = list(recording.read_recording(path))
    assert len(records) == 2
    for record, text_path, time_ns in zip(records, [SIX_NODES, SIX_NODES_LATER], [T0, T1]):
        expected = parse_text_independently(text_path)
        result = record.decode()
        got = {}
        for rm in result.batch:
            instance = rm.attrs["service.instance.id"]
            assert rm.attrs["service.name"] == "node-exporter"
            for metric in rm.metrics:
                for attrs, t, value in zip(metric.attrs, metric.times, metric.values):
                    assert t == time_ns
                    key = (instance, metric.name, tuple(sorted(attrs.items())))
                    assert key not in got
                    got[key] = value
        assert got == expected
        assert len(got) == 1499


def test_round_trip_keeps_transport_metadata(tmp_path):
    path = tmp_path / "six.otlprec"
    original = two_scrape_records()
    write(path, original)
    records = list(recording.read_recording(path))
    for got, want in zip(records, original):
        assert got.received_ns == want.received_ns
        assert got.transport == want.transport
        assert got.content_type == want.content_type
        assert got.compression == want.compression
        assert got.body == want.body
    assert records[0].offset == recording.HEADER_SIZE
    assert records[1].offset == recording.HEADER_SIZE + record_size(original[0])


def test_six_node_scrape_shape(tmp_path):
    path = tmp_path / "six.otlprec"
    write(path, two_scrape_records()[:1])
    (record,) = recording.read_recording(path)
    result = record.decode()
    assert len(result.batch) == 6
    assert len({m.name for rm in result.batch for m in rm.metrics}) == 57
    assert result.points == 1499


def test_header_layout(tmp_path):
    path = tmp_path / "empty.otlprec"
    write(path, [])
    assert path.read_bytes() == b"OTLPREC\n\x01\x00"
    assert list(recording.read_recording(path)) == []


def test_gzip_recording_round_trip(tmp_path):
    path = tmp_path / "six.otlprec.gz"
    write(path, two_scrape_records())
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    records = list(recording.read_recording(path))
    assert [r.received_ns for r in records] == [T0 + 40_000_000, T1 + 35_000_000]
    assert records[1].decode().points == 1499


def test_reader_streams_one_record_at_a_time():
    records = two_scrape_records()
    data = recording.recording_bytes(records)

    class CountingStream(io.BytesIO):
        consumed = 0

        def read(self, n=-1):
            chunk = super().read(n)
            self.consumed += len(chunk)
            return chunk

    stream = CountingStream(data)
    iterator = iter(RecordingReader(stream))
    first = next(iterator)
    assert first.received_ns == T0 + 40_000_000
    # Only the header and the first record have been read.
    assert stream.consumed == recording.HEADER_SIZE + record_size(records[0])
    assert stream.consumed < len(data)


def test_concurrent_writers_keep_records_whole(tmp_path):
    path = tmp_path / "threads.otlprec"
    writer = RecordingWriter(path)
    bodies = {i: bytes([i % 251]) * (1000 + i) for i in range(200)}

    def send(start):
        for i in range(start, 200, 4):
            writer.write(i, "grpc", "application/x-protobuf", "", bodies[i])

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    got = {r.received_ns: r.body for r in recording.read_recording(path)}
    assert got == bodies


def test_writer_rejects_unknown_transport(tmp_path):
    with RecordingWriter(tmp_path / "x.otlprec") as writer:
        with pytest.raises(ValueError, match="invalid transport 'udp'"):
            writer.write(1, "udp", "application/x-protobuf", "", b"")


# --- damaged recordings ------------------------------------------------------


def read_until_error(data: bytes) -> tuple[list[RecordedRequest], RecordingError]:
    got = []
    with pytest.raises(RecordingError) as info:
        for record in RecordingReader(io.BytesIO(data)):
            got.append(record)
    return got, info.value


def test_truncated_recording_names_offset_and_keeps_earlier_records():
    records = two_scrape_records()
    data = recording.recording_bytes(records)
    second_at = recording.HEADER_SIZE + record_size(records[0])
    got, error = read_until_error(data[:-100])
    assert [r.received_ns for r in got] == [T0 + 40_000_000]
    assert got[0].decode().points == 1499
    assert error.offset == second_at
    assert error.records_read == 1
    assert f"byte offset {second_at}" in str(error)
    assert "truncated record" in str(error)


def test_truncated_inside_length_prefix():
    records = two_scrape_records()
    data = recording.recording_bytes(records)
    second_at = recording.HEADER_SIZE + record_size(records[0])
    # The second record's length needs 3 varint bytes; keep one of them.
    got, error = read_until_error(data[: second_at + 1])
    assert len(got) == 1
    assert error.offset == second_at
    assert "length prefix is cut off" in str(error)


def test_corrupt_body_fails_crc_at_its_record():
    records = two_scrape_records()
    data = bytearray(recording.recording_bytes(records))
    second_at = recording.HEADER_SIZE + record_size(records[0])
    data[second_at + 2000] ^= 0xFF
    got, error = read_until_error(bytes(data))
    assert len(got) == 1
    assert error.offset == second_at
    assert "CRC-32" in str(error)


def test_corrupt_length_prefix_is_reported():
    records = two_scrape_records()
    data = recording.recording_bytes(records)
    second_at = recording.HEADER_SIZE + record_size(records[0])
    # Eleven continuation bytes cannot be a varint.
    damaged = data[:second_at] + b"\xff" * 11 + data[second_at:]
    got, error = read_until_error(damaged)
    assert len(got) == 1
    assert error.offset == second_at
    assert "longer than 10 bytes" in str(error)


def test_garbage_record_is_corrupt_not_crash():
    data = recording.header_bytes() + recording.encode_varint(7) + b"\x08\x01\x12\x03udp"
    got, error = read_until_error(data)
    assert got == []
    assert error.offset == recording.HEADER_SIZE
    assert "invalid transport 'udp'" in str(error)


def test_not_a_recording_and_unknown_version():
    _, error = read_until_error(b"# TYPE x counter\nx 1\n")
    assert error.offset == 0
    assert "not an OTLP recording" in str(error)
    _, error = read_until_error(b"OTLPREC\n\x02\x00")
    assert error.offset == 8
    assert "unsupported format version 2" in str(error)
    _, error = read_until_error(b"OTLP")
    assert "truncated header" in str(error)


# --- otelsnap inspect --------------------------------------------------------


def run_inspect(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    inspect.add_arguments(parser)
    return inspect.main(parser.parse_args(argv))


def test_inspect_table_of_six_nodes(tmp_path, capsys):
    path = tmp_path / "six.otlprec"
    write(path, two_scrape_records())
    assert run_inspect([str(path)]) == 0
    out = capsys.readouterr().out
    assert "time span: 2025-12-22T10:00:00.040Z to 2025-12-22T10:00:15.035Z (14.995 s)" in out
    assert "requests: 2" in out
    assert "resources: 6" in out
    assert "metrics: 57" in out
    assert "points: 2998 (staleness markers 0" in out
    # The text has 288 CPU series over the six nodes, so 576 points in two scrapes.
    cpu_line = next(line for line in out.splitlines() if line.strip().startswith("node_cpu_seconds_total "))
    assert cpu_line.split()[-4:] == ["counter", "288", "576", "0"]
    desk_zero = next(line for line in out.splitlines() if "192.168.0.130:9100" in line)
    # desk-zero's series counted independently from the text, twice.
    expected = sum(1 for key in parse_text_independently(SIX_NODES) if key[0] == "192.168.0.130:9100")
    assert desk_zero.split()[-2:] == ["2", str(2 * expected)]


def test_inspect_json(tmp_path, capsys):
    import orjson

    path = tmp_path / "six.otlprec"
    write(path, two_scrape_records())
    assert run_inspect([str(path), "--json"]) == 0
    body = orjson.loads(capsys.readouterr().out)
    assert body["requests"] == 2
    assert body["points"] == 2998
    assert body["metrics"]["node_vmstat_pgfault"] == {
        "type": "gauge", "prometheus.type": "unknown", "series": 6, "points": 12, "stale_points": 0,
    }
    assert body["first_received_unix_nano"] == T0 + 40_000_000
    assert body["error"] is None


def test_inspect_truncated_reports_records_read(tmp_path, capsys):
    path = tmp_path / "cut.otlprec"
    data = recording.recording_bytes(two_scrape_records())
    path.write_bytes(data[:-10])
    assert run_inspect([str(path)]) == 1
    captured = capsys.readouterr()
    assert "requests: 1" in captured.out
    assert "(1 records read before it)" in captured.err
    assert "byte offset" in captured.err


@pytest.mark.parametrize("json_output", [False, True])
def test_inspect_not_a_recording_prints_no_tables(tmp_path, capsys, json_output):
    path = tmp_path / "notes.txt"
    path.write_text("node_load1 0.5\n")
    assert run_inspect([str(path), *(["--json"] if json_output else [])]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"otelsnap inspect: {path}: byte offset 0: not an OTLP recording: "
        "the file does not start with b'OTLPREC\\n'\n"
    )


# --- the committed test data -------------------------------------------------


def test_second_scrape_follows_advance_table():
    import yaml

    table = yaml.safe_load((SIX_DIR / "advance.yaml").read_text())
    first = parse_text_independently(SIX_NODES)
    second = parse_text_independently(SIX_NODES_LATER)
    assert first.keys() == second.keys()
    advanced = 0
    for key, before in first.items():
        _, name, labels = key
        if name == "node_cpu_seconds_total":
            amount = table["cpu_modes"][dict(labels)["mode"]]
        else:
            amount = table["counters"].get(name)
        if amount is None:
            assert not name.endswith("_total"), name
            assert second[key] == before, key
            continue
        assert second[key] - before == pytest.approx(amount, rel=1e-9, abs=1e-9), key
        advanced += 1
    assert advanced == 1053


def test_committed_six_node_recording_is_current(tmp_path):
    from pipeline import convert_cli

    out = tmp_path / "six-nodes.otlprec"
    scrapes = [convert_cli.Scrape(str(SIX_NODES), T0), convert_cli.Scrape(str(SIX_NODES_LATER), T1)]
    convert_cli.convert_scrapes(scrapes, out, convert.ConvertOptions(strip_prefix="otel_"))
    assert out.read_bytes() == (ROOT / "testdata" / "six-nodes.otlprec").read_bytes()
