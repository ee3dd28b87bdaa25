"""The file and stdout exporters: exact JSON Lines, rotation, flushing."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import pytest

from master_stub import INT64_MAX, node_body, node_values
from pipeline.component import ComponentContext, ConfigError, EmptyConfig, Snapshot
from pipeline.convert import ConvertOptions, exposition_to_request
from pipeline.decode import decode_request
from pipeline.exporters.file import FileExporter, FileExporterConfig, StdoutExporter
from pipeline.exporters.queue import MIB
from pipeline.model import Metric, MetricKind, ResourceMetrics
from pipeline.promtext import parse
from pipeline.telemetry import Telemetry

SAMPLES = Path(__file__).resolve().parent.parent / "testdata" / "atlhyper-six-nodes"
T0 = 1_766_400_000_000_000_000
VALUES = node_values()


def compact(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def file_exporter(path: Path, **options) -> FileExporter:
    config = FileExporterConfig(path=str(path), **options)
    config.validate()
    exporter = FileExporter(config, ComponentContext("file", telemetry=Telemetry(), logger=logging.getLogger("otelsnap.test.file")))
    exporter.start()
    return exporter


def snapshots(scrape: int = 0) -> list[Snapshot]:
    time_ns = T0 + scrape * 15_000_000_000
    return [Snapshot("node", name, time_ns, node_body(name, VALUES[name], time_ns)) for name in sorted(VALUES)]


def test_snapshot_lines_exact(tmp_path):
    path = tmp_path / "snapshots.jsonl"
    exporter = file_exporter(path)
    items = snapshots()
    exporter.export(items, T0)
    exporter.shutdown()
    assert exporter.telemetry.get("otelsnap_exporter_written_lines") == 6

    data = path.read_bytes()
    assert data == b"".join(compact(item.body) + b"\n" for item in items)
    # The 2^63 - 1 clamp of node_filefd_maximum stays an integer on the line.
    assert b'"filefd_maximum":9223372036854775807' in data
    first = json.loads(data.splitlines()[0])
    assert first["node_name"] == "desk-one"
    assert first["system"]["filefd_maximum"] == INT64_MAX


def test_resource_metrics_lines(tmp_path):
    text = (SAMPLES / "otel_raspi_zero.txt").read_text()
    request = exposition_to_request(parse(text), T0, ConvertOptions(strip_prefix="otel_"))
    batch = decode_request(request).batch
    path = tmp_path / "tap.jsonl"
    exporter = file_exporter(path)
    exporter.export(batch, T0)
    exporter.shutdown()

    lines = [json.loads(line) for line in path.read_bytes().splitlines()]
    assert len(lines) == len(batch)
    line = lines[0]
    assert set(line) == {"resource", "metrics"}
    assert line["resource"]["service.instance.id"] == "192.168.0.182:9100"
    assert line["resource"]["service.name"] == "node-exporter"
    metrics = {m["name"]: m for m in line["metrics"]}
    assert len(metrics) == len(batch[0].metrics)
    memory = metrics["node_memory_MemTotal_bytes"]
    assert memory["kind"] == "gauge"
    assert memory["points"] == [
        {"attributes": {}, "time_unix_nano": T0, "value": 8323080192.0, "delta": None, "interval_s": None}
    ]
    idle = [
        p for p in metrics["node_cpu_seconds_total"]["points"]
        if p["attributes"] == {"cpu": "0", "mode": "idle"}
    ]  # fmt: skip
    assert metrics["node_cpu_seconds_total"]["kind"] == "sum"
    assert len(idle) == 1
    expected_idle = next(
        s.value for s in parse(text).samples
        if s.name == "otel_node_cpu_seconds_total" and s.labels.get("cpu") == "0" and s.labels.get("mode") == "idle"
    )  # fmt: skip
    assert idle[0]["value"] == expected_idle


def test_non_finite_values_and_deltas(tmp_path):
    # Invented points: the sample contains no staleness markers or infinities.
    metric = Metric(
        "node_network_receive_bytes_total",
        MetricKind.SUM,
        attrs=[{"device": "eth0"}] * 5,
        times=[T0 + i for i in range(5)],
        values=[None, math.nan, math.inf, -math.inf, 1.5],
        deltas=[None, None, None, None, 0.5],
        intervals=[None, None, None, None, 15.0],
        monotonic=True,
    )
    path = tmp_path / "tap.jsonl"
    exporter = file_exporter(path)
    exporter.export([ResourceMetrics({"host.name": "desk-zero"}, [metric])], T0)
    exporter.shutdown()

    line = json.loads(path.read_bytes())
    points = line["metrics"][0]["points"]
    assert [p["value"] for p in points] == [None, "NaN", "Infinity", "-Infinity", 1.5]
    assert [p["delta"] for p in points] == [None, None, None, None, 0.5]
    assert [p["interval_s"] for p in points] == [None, None, None, None, 15.0]
    assert [p["time_unix_nano"] for p in points] == [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4]


def test_flush_each_batch(tmp_path):
    path = tmp_path / "snapshots.jsonl"
    exporter = file_exporter(path)
    exporter.export(snapshots()[:1], T0)
    # Another reader sees the line before shutdown.
    assert path.read_bytes() == compact(snapshots()[0].body) + b"\n"
    exporter.shutdown()


def test_buffered_until_shutdown(tmp_path):
    path = tmp_path / "snapshots.jsonl"
    exporter = file_exporter(path, flush_each_batch=False)
    exporter.export(snapshots()[:1], T0)
    assert path.read_bytes() == b""
    assert exporter.telemetry.get("otelsnap_exporter_written_lines") == 0
    exporter.shutdown()
    assert path.read_bytes() == compact(snapshots()[0].body) + b"\n"
    assert exporter.telemetry.get("otelsnap_exporter_written_lines") == 1


def test_appends_to_existing_file(tmp_path):
    path = tmp_path / "snapshots.jsonl"
    path.write_bytes(b'{"earlier":1}\n')
    exporter = file_exporter(path)
    exporter.export(snapshots()[:1], T0)
    exporter.shutdown()
    assert path.read_bytes() == b'{"earlier":1}\n' + compact(snapshots()[0].body) + b"\n"


def test_partial_last_line_removed_on_start(tmp_path):
    # Invented content: what a process killed in the middle of a write leaves.
    path = tmp_path / "snapshots.jsonl"
    path.write_bytes(b'{"earlier":1}\n{"node_name":"desk-ze')
    exporter = file_exporter(path)
    exporter.export(snapshots()[:1], T0)
    exporter.shutdown()
    assert path.read_bytes() == b'{"earlier":1}\n' + compact(snapshots()[0].body) + b"\n"


def test_rotation_by_size(tmp_path):
    path = tmp_path / "snapshots.jsonl"
    limit = 700
    exporter = file_exporter(path, max_size_mib=limit / MIB, max_files=2)
    lines = []
    for scrape in range(4):
        items = snapshots(scrape)
        exporter.export(items, T0)
        lines += [compact(item.body) + b"\n" for item in items]
    exporter.shutdown()

    # Expected files, computed independently: fill a file until the next line would pass the limit.
    files: list[bytes] = [b""]
    for line in lines:
        if files[-1] and len(files[-1]) + len(line) > limit:
            files.append(b"")
        files[-1] += line
    assert path.read_bytes() == files[-1]
    assert Path(f"{path}.1").read_bytes() == files[-2]
    assert Path(f"{path}.2").read_bytes() == files[-3]
    assert not Path(f"{path}.3").exists()
    assert len(files) > 3
    for name in (path, Path(f"{path}.1"), Path(f"{path}.2")):
        assert name.stat().st_size <= limit


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_write_error_counted(caplog):
    caplog.set_level(logging.ERROR, logger="otelsnap.test.file")
    exporter = file_exporter(Path("/dev/full"))
    exporter.export(snapshots()[:2], T0)
    assert exporter.telemetry.get("otelsnap_exporter_dropped_lines", exporter="file", reason="write_error") == 2
    assert exporter.telemetry.get("otelsnap_exporter_written_lines") == 0
    assert any(getattr(r, "event_fields", {}).get("event") == "write_failed" for r in caplog.records)
    exporter.export(snapshots()[:1], T0)
    assert exporter.telemetry.get("otelsnap_exporter_dropped_lines") == 3
    exporter.shutdown()
    assert exporter.telemetry.get("otelsnap_exporter_dropped_lines") == 3


def test_unflushed_write_error_counted_at_shutdown():
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    exporter = file_exporter(Path("/dev/full"), flush_each_batch=False)
    exporter.export(snapshots()[:2], T0)
    assert exporter.telemetry.get("otelsnap_exporter_dropped_lines") == 0
    exporter.shutdown()
    assert exporter.telemetry.get("otelsnap_exporter_dropped_lines", exporter="file", reason="write_error") == 2
    assert exporter.telemetry.get("otelsnap_exporter_written_lines") == 0


def test_stdout_lines(capsys):
    exporter = StdoutExporter(EmptyConfig(), ComponentContext("stdout", telemetry=Telemetry()))
    exporter.start()
    items = snapshots()[:2]
    exporter.export(items, T0)
    exporter.shutdown()
    out = capsys.readouterr().out
    assert out == "".join(compact(item.body).decode() + "\n" for item in items)


@pytest.mark.parametrize(
    ("options", "path"),
    [
        ({"path": ""}, "path"),
        ({"path": "out.jsonl", "max_size_mib": -1}, "max_size_mib"),
        ({"path": "out.jsonl", "max_files": 0}, "max_files"),
    ],
)
def test_file_config_errors(options, path):
    with pytest.raises(ConfigError) as info:
        FileExporterConfig(**options).validate()
    assert info.value.path == path
