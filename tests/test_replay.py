"""otelsnap replay (in process and to a receiver) and otelsnap record.

In-process replays run the committed six-node recording (real node_exporter
text, second scrape advanced by testdata/atlhyper-six-nodes/advance.yaml)
through the embedded default pipeline; expected rates come from that table,
not from the code. Network tests use real servers on 127.0.0.1 with
ephemeral ports: a running ``otelsnap run`` or ``otelsnap record``
subprocess, or an in-process OtlpReceiver whose consumer refuses on purpose
to exercise retries, and the OpenTelemetry SDK's OTLP exporters as clients.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
import yaml

from pipeline import replay
from pipeline.component import ComponentContext
from pipeline.recording import RecordedRequest, RecordingWriter, read_recording, recording_bytes
from pipeline.runtime import ACCEPTED, Admission
from pipeline.telemetry import Telemetry

ROOT = Path(__file__).parent.parent
SIX_NODES_REC = ROOT / "testdata" / "six-nodes.otlprec"
ADVANCE = yaml.safe_load((ROOT / "testdata" / "atlhyper-six-nodes" / "advance.yaml").read_text())
SECOND = "2025-12-22T10:00:15.000Z"
OTELSNAP = [sys.executable, "-m", "pipeline.cli"]
WAIT_S = 20.0


def run_replay(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    replay.add_arguments(parser)
    return replay.main(parser.parse_args(argv))


def replay_six_nodes() -> list[dict]:
    config = replay.load_replay_config(None)
    result = replay.replay_in_process(SIX_NODES_REC, config, config_exporters=False)
    assert result.error is None
    return [orjson.loads(line) for line in result.lines]


def recording_points(path: Path) -> int:
    return sum(record.decode().points for record in read_recording(path))


# --- in process ----------------------------------------------------------------


def test_in_process_six_nodes_snapshots():
    bodies = replay_six_nodes()
    assert len(bodies) == 12
    # The nodenames of node_uname_info in the text.
    assert {b["node_name"] for b in bodies} == {
        "desk-zero", "desk-one", "desk-two", "raspi-zero", "raspi-one", "raspi-nfs",
    }
    assert sorted({b["timestamp"] for b in bodies}) == ["2025-12-22T10:00:00.000Z", SECOND]


def test_in_process_rates_follow_advance_table():
    interval_s = ADVANCE["interval_s"]
    modes = ADVANCE["cpu_modes"]
    counters = ADVANCE["counters"]
    total = sum(modes.values())
    for body in replay_six_nodes():
        if body["timestamp"] != SECOND:
            continue
        node = body["node_name"]
        cpu = body["cpu"]
        assert cpu["usage_percent"] == pytest.approx((total - modes["idle"]) / total * 100, rel=1e-9), node
        assert cpu["user_percent"] == pytest.approx(modes["user"] / total * 100, rel=1e-9), node
        assert cpu["iowait_percent"] == pytest.approx(modes["iowait"] / total * 100, rel=1e-9), node
        assert len(cpu["per_core"]) == cpu["cores"]
        for network in body["networks"]:
            assert network["rx_rate"] == pytest.approx(counters["node_network_receive_bytes_total"] / interval_s, rel=1e-9)
            assert network["tx_rate"] == pytest.approx(counters["node_network_transmit_bytes_total"] / interval_s, rel=1e-9)
        psi = body["psi"]
        if "psi" not in body["unavailable"]:
            expected = counters["node_pressure_io_waiting_seconds_total"] / interval_s * 100
            assert psi["io_some_percent"] == pytest.approx(expected, rel=1e-9), node
        assert body["vmstat"]["pgfault_ps"] == pytest.approx(counters["node_vmstat_pgfault"] / interval_s, rel=1e-9)


def test_in_process_is_deterministic():
    assert replay_six_nodes() == replay_six_nodes()


def test_out_matches_file_exporter(tmp_path):
    exported = tmp_path / "exported.jsonl"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
processors:
  filter/node:
  delta_rate:
  node_snapshot:
exporters:
  file:
    path: {exported}
service:
  pipelines:
    node:
      receivers: [otlp]
      processors: [filter/node, delta_rate, node_snapshot]
      exporters: [file]
  telemetry:
    metrics:
      endpoint: ""
"""
    )
    out = tmp_path / "out.jsonl"
    assert run_replay([str(SIX_NODES_REC), "--config", str(config), "--out", str(out)]) == 0
    assert out.read_bytes() == exported.read_bytes()
    assert len(out.read_bytes().splitlines()) == 12


# --- golden files ----------------------------------------------------------------


def write_golden(tmp_path: Path) -> Path:
    golden = tmp_path / "golden.jsonl"
    assert run_replay([str(SIX_NODES_REC), "--out", str(golden)]) == 0
    return golden


def test_expect_passes_on_own_output(tmp_path, capsys):
    golden = write_golden(tmp_path)
    assert run_replay([str(SIX_NODES_REC), "--expect", str(golden)]) == 0
    assert "snapshots match" in capsys.readouterr().err


def edit_golden(golden: Path, node: str, timestamp: str, edit) -> None:
    lines = []
    for line in golden.read_bytes().splitlines():
        body = orjson.loads(line)
        if body["node_name"] == node and body["timestamp"] == timestamp:
            edit(body)
        lines.append(orjson.dumps(body))
    golden.write_bytes(b"\n".join(lines) + b"\n")


def test_expect_mismatch_names_node_field_values(tmp_path, capsys):
    golden = write_golden(tmp_path)

    def edit(body):
        body["cpu"]["usage_percent"] = 21.5
        body["networks"][0]["rx_bytes"] += 1

    edit_golden(golden, "desk-zero", SECOND, edit)
    capsys.readouterr()
    assert run_replay([str(SIX_NODES_REC), "--expect", str(golden)]) == 1
    err = capsys.readouterr().err
    assert "2 differences" in err
    assert f"desk-zero[timestamp={SECOND}].cpu.usage_percent: expected 21.5, actual 20.0" in err
    assert re.search(rf"desk-zero\[timestamp={re.escape(SECOND)}\]\.networks\[interface=eno1\]\.rx_bytes: "
                     r"expected \d+, actual \d+", err)


def test_expect_tolerance_is_relative(tmp_path):
    golden = write_golden(tmp_path)
    edit_golden(golden, "desk-zero", SECOND, lambda b: b["cpu"].update(usage_percent=20.0 * (1 + 1e-7)))
    assert run_replay([str(SIX_NODES_REC), "--expect", str(golden)]) == 1
    assert run_replay([str(SIX_NODES_REC), "--expect", str(golden), "--tolerance", "1e-6"]) == 0


@pytest.mark.parametrize("tolerance", ["-1", "nan", "inf", "tight"])
def test_expect_invalid_tolerance_is_usage_error(tolerance, capsys):
    with pytest.raises(SystemExit) as caught:
        run_replay([str(SIX_NODES_REC), "--expect", "golden.jsonl", "--tolerance", tolerance])
    assert caught.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"error: argument --tolerance: invalid tolerance '{tolerance}': use a number of 0 or more, for example 1e-9\n"
    )


def test_expect_int_versus_float_is_a_difference(tmp_path, capsys):
    golden = write_golden(tmp_path)
    edit_golden(golden, "raspi-zero", SECOND, lambda b: b.update(uptime=float(b["uptime"])))
    capsys.readouterr()
    assert run_replay([str(SIX_NODES_REC), "--expect", str(golden)]) == 1
    assert "uptime" in capsys.readouterr().err


def test_expect_missing_snapshot(tmp_path, capsys):
    golden = write_golden(tmp_path)
    lines = golden.read_bytes().splitlines()
    extra = orjson.loads(lines[0])
    extra["node_name"] = "desk-ghost"
    golden.write_bytes(b"\n".join([*lines, orjson.dumps(extra)]) + b"\n")
    capsys.readouterr()
    assert run_replay([str(SIX_NODES_REC), "--expect", str(golden)]) == 1
    assert "desk-ghost[timestamp=2025-12-22T10:00:00.000Z]: expected \"<line>\", actual <missing>" in capsys.readouterr().err


def test_truncated_recording_replays_what_it_can(tmp_path, capsys):
    cut = tmp_path / "cut.otlprec"
    cut.write_bytes(SIX_NODES_REC.read_bytes()[:-50])
    out = tmp_path / "out.jsonl"
    assert run_replay([str(cut), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "(replayed the 1 record before it)" in err
    assert "byte offset" in err
    bodies = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(bodies) == 6
    assert {b["timestamp"] for b in bodies} == {"2025-12-22T10:00:00.000Z"}


# --- to a receiver -------------------------------------------------------------------


def tap_config(path: Path, out: Path) -> None:
    path.write_text(
        f"""
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
      http:
        endpoint: 127.0.0.1:0
exporters:
  file:
    path: {out}
service:
  pipelines:
    tap:
      receivers: [otlp]
      processors: []
      exporters: [file]
  telemetry:
    metrics:
      endpoint: ""
"""
    )


class Process:
    """A subprocess whose stderr is read on a thread, so it never blocks."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(argv, cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, pattern: str) -> re.Match:
        deadline = time.monotonic() + WAIT_S
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = regex.search(line)
                if match:
                    return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not seen; stderr:\n{''.join(self.lines)}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=WAIT_S)
        self._reader.join(timeout=5)
        return code


@pytest.fixture
def otelsnap_run(tmp_path):
    started = []

    def start() -> tuple[Process, int, int, Path]:
        out = tmp_path / f"tap{len(started)}.jsonl"
        config = tmp_path / f"tap{len(started)}.yaml"
        tap_config(config, out)
        process = Process([*OTELSNAP, "run", "--config", str(config)], ROOT)
        started.append(process)
        match = process.wait_for(r"event=receiver_started .*grpc_endpoint=127\.0\.0\.1:(\d+) http_endpoint=127\.0\.0\.1:(\d+)")
        return process, int(match[1]), int(match[2]), out

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(timeout=WAIT_S)


def tap_points(path: Path) -> int:
    total = 0
    for line in path.read_bytes().splitlines():
        for metric in orjson.loads(line)["metrics"]:
            total += len(metric["points"])
    return total


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_target_speed_zero_delivers_every_point(otelsnap_run, protocol):
    process, grpc_port, http_port, out = otelsnap_run()
    port = grpc_port if protocol == "grpc" else http_port
    summary = replay.replay_to_target(SIX_NODES_REC, f"127.0.0.1:{port}", protocol=protocol, speed=0, progress=False)
    assert process.stop() == 0
    assert summary.delivered == summary.requests == 2
    assert summary.failed_requests == 0
    assert summary.points == recording_points(SIX_NODES_REC) == 2998
    assert tap_points(out) == 2998


def small_recording(path: Path, gaps_ns: list[int]) -> None:
    body = next(iter(read_recording(SIX_NODES_REC))).body
    t = 1_766_397_600_000_000_000
    with RecordingWriter(path) as writer:
        for gap in [0, *gaps_ns]:
            t += gap
            writer.write(t, "grpc", "application/x-protobuf", "gzip", body)


def test_target_speed_one_keeps_gaps(otelsnap_run, tmp_path):
    rec = tmp_path / "three.otlprec"
    small_recording(rec, [250_000_000, 250_000_000])
    process, grpc_port, _, out = otelsnap_run()
    summary = replay.replay_to_target(rec, f"127.0.0.1:{grpc_port}", speed=1, progress=False)
    assert process.stop() == 0
    assert summary.delivered == 3
    # Recorded arrivals span 0.5 s; at speed 1 the replay cannot be faster.
    assert summary.elapsed_s >= 0.5
    assert tap_points(out) == 3 * 1499


class RefusingConsumer:
    """Refuses the first ``refusals`` requests, then accepts (or refuses forever)."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.submitted = 0
        self.accepted_points = 0

    def submit(self, result, received_ns, transport):
        self.submitted += 1
        if self.refusals < 0 or self.submitted <= self.refusals:
            return Admission(False, 1.0, "processing queue is full")
        self.accepted_points += result.points
        return ACCEPTED


def start_receiver(consumer, overload_status: str = "unavailable"):
    from pipeline.receiver import GrpcProtocolConfig, HttpProtocolConfig, OtlpReceiver, OtlpReceiverConfig, ProtocolsConfig

    config = OtlpReceiverConfig(
        protocols=ProtocolsConfig(
            grpc=GrpcProtocolConfig(endpoint="127.0.0.1:0"), http=HttpProtocolConfig(endpoint="127.0.0.1:0")
        ),
        overload_status=overload_status,
    )
    receiver = OtlpReceiver(config, consumer, ComponentContext("otlp", telemetry=Telemetry()))
    receiver.start()
    return receiver


def test_target_retries_unavailable(tmp_path):
    consumer = RefusingConsumer(refusals=2)
    receiver = start_receiver(consumer)
    sleeps = []
    try:
        summary = replay.replay_to_target(
            SIX_NODES_REC, f"127.0.0.1:{receiver.grpc_port}", speed=0, progress=False, sleep=sleeps.append
        )
    finally:
        receiver.shutdown(grace_s=1)
    assert summary.refused_attempts == 2
    assert summary.retried_requests == 1
    assert summary.delivered == 2
    assert summary.failed_requests == 0
    assert consumer.accepted_points == 2998
    # UNAVAILABLE carries no delay: exponential backoff from 0.1 s.
    assert sleeps == [0.1, 0.2]


def test_target_honours_http_retry_after():
    consumer = RefusingConsumer(refusals=1)
    receiver = start_receiver(consumer)
    sleeps = []
    try:
        summary = replay.replay_to_target(
            SIX_NODES_REC, f"127.0.0.1:{receiver.http_port}", protocol="http", speed=0,
            progress=False, sleep=sleeps.append,
        )
    finally:
        receiver.shutdown(grace_s=1)
    assert summary.refused_attempts == 1
    assert summary.delivered == 2
    assert consumer.accepted_points == 2998
    assert sleeps == [1.0]  # the receiver's Retry-After: 1


def test_target_honours_grpc_retry_info():
    consumer = RefusingConsumer(refusals=1)
    receiver = start_receiver(consumer, overload_status="resource_exhausted")
    sleeps = []
    try:
        summary = replay.replay_to_target(
            SIX_NODES_REC, f"127.0.0.1:{receiver.grpc_port}", speed=0, progress=False, sleep=sleeps.append
        )
    finally:
        receiver.shutdown(grace_s=1)
    assert summary.delivered == 2
    assert sleeps == [1.0]  # RetryInfo's delay


def test_target_gives_up_after_max_attempts(capsys):
    receiver = start_receiver(RefusingConsumer(refusals=-1))
    try:
        summary = replay.replay_to_target(
            SIX_NODES_REC, f"127.0.0.1:{receiver.grpc_port}", speed=0, max_attempts=3,
            progress=False, sleep=lambda s: None,
        )
    finally:
        receiver.shutdown(grace_s=1)
    assert summary.failed_requests == 2
    assert summary.delivered == 0
    assert summary.refused_attempts == 6
    assert summary.errors[0] == (
        "request at byte offset 10: still refused after 3 attempts: UNAVAILABLE: processing queue is full; retry after 1 s"
    )


def test_target_cli_summary_and_exit_code(otelsnap_run, capsys):
    process, grpc_port, _, _ = otelsnap_run()
    code = run_replay([str(SIX_NODES_REC), "--target", f"127.0.0.1:{grpc_port}", "--speed", "0"])
    process.stop()
    assert code == 0
    err = capsys.readouterr().err
    assert "replayed 2 of 2 requests (2998 points)" in err
    assert "failed requests: 0" in err


def test_target_rejects_in_process_options(capsys):
    assert run_replay([str(SIX_NODES_REC), "--target", "127.0.0.1:1", "--out", "x.jsonl"]) == 2


def free_port() -> int:
    """Return a loopback port that nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_target_refused_error_names_reason():
    port = free_port()
    summary = replay.replay_to_target(
        SIX_NODES_REC, f"127.0.0.1:{port}", speed=0, max_attempts=1, progress=False, sleep=lambda s: None
    )
    assert summary.failed_requests == 2
    assert summary.refused_attempts == 2
    assert summary.retried_requests == 0
    assert summary.errors[0].startswith("request at byte offset 10: still refused after 1 attempt: UNAVAILABLE: ")
    assert "Connection refused" in summary.errors[0]


def test_target_grpc_to_http_port_names_reason():
    receiver = start_receiver(RefusingConsumer(refusals=0))
    try:
        summary = replay.replay_to_target(
            SIX_NODES_REC, f"127.0.0.1:{receiver.http_port}", speed=0, max_attempts=2,
            progress=False, sleep=lambda s: None,
        )
    finally:
        receiver.shutdown(grace_s=1)
    assert summary.refused_attempts == 4
    assert summary.retried_requests == 2
    assert summary.errors[0].startswith("request at byte offset 10: still refused after 2 attempts: UNAVAILABLE: ")
    assert "Failed parsing HTTP/2" in summary.errors[0]


def json_recording(path: Path) -> None:
    from google.protobuf import json_format

    with RecordingWriter(path) as writer:
        for record in read_recording(SIX_NODES_REC):
            body = json_format.MessageToJson(record.to_request(), indent=None).encode()
            writer.write(record.received_ns, "http", "application/json", "", body)


@pytest.mark.parametrize("content_type", ["application/x-protobuf", "application/json"])
def test_target_http_401_shows_status_message(content_type, tmp_path):
    from pipeline.receiver import AuthConfig, GrpcProtocolConfig, HttpProtocolConfig, OtlpReceiver, OtlpReceiverConfig, ProtocolsConfig

    recording = SIX_NODES_REC
    if content_type == "application/json":
        recording = tmp_path / "json.otlprec"
        json_recording(recording)
    config = OtlpReceiverConfig(
        protocols=ProtocolsConfig(grpc=GrpcProtocolConfig(endpoint="127.0.0.1:0"), http=HttpProtocolConfig(endpoint="127.0.0.1:0")),
        auth=AuthConfig(bearer_token="right"),
    )
    receiver = OtlpReceiver(config, RefusingConsumer(refusals=0), ComponentContext("otlp", telemetry=Telemetry()))
    receiver.start()
    try:
        summary = replay.replay_to_target(
            recording, f"127.0.0.1:{receiver.http_port}", protocol="http", speed=0, token="wrong", progress=False,
        )
    finally:
        receiver.shutdown(grace_s=1)
    assert summary.failed_requests == 2
    assert summary.errors[0] == (
        "request at byte offset 10: HTTP 401: missing or wrong bearer token; "
        "send the header Authorization: Bearer <token>"
    )


def test_target_without_port_is_invalid(capsys):
    assert run_replay([str(SIX_NODES_REC), "--target", "localhost"]) == 2
    assert capsys.readouterr().err == (
        "otelsnap replay: invalid target 'localhost': expected host:port, for example 127.0.0.1:4317\n"
    )
    assert run_replay([str(SIX_NODES_REC), "--target", "localhost", "--protocol", "http"]) == 2
    assert capsys.readouterr().err == (
        "otelsnap replay: invalid target 'localhost': expected host:port, for example 127.0.0.1:4318\n"
    )
    assert run_replay([str(SIX_NODES_REC), "--target", "127.0.0.1:99999"]) == 2
    assert capsys.readouterr().err == (
        "otelsnap replay: invalid target '127.0.0.1:99999': port 99999 is out of range (1-65535)\n"
    )


def test_target_options_without_target(capsys):
    argv = [str(SIX_NODES_REC), "--speed", "0", "--protocol", "http", "--max-attempts", "1", "--timeout-s", "1",
            "--compression", "gzip", "--bearer-token-file", "token.txt", "--no-progress"]
    assert run_replay(argv) == 2
    assert capsys.readouterr().err == (
        "otelsnap replay: --protocol, --speed, --max-attempts, --timeout-s, --compression, "
        "--bearer-token-file and --no-progress need --target, because without it the recording runs in process; "
        "add --target HOST:PORT or remove them\n"
    )
    assert run_replay([str(SIX_NODES_REC), "--speed", "2"]) == 2
    assert capsys.readouterr().err == (
        "otelsnap replay: --speed needs --target, because without it the recording runs in process; "
        "add --target HOST:PORT or remove --speed\n"
    )


# --- otelsnap record ---------------------------------------------------------------


def start_record(tmp_path: Path, *extra: str) -> tuple[Process, dict[str, int], Path]:
    out = tmp_path / "recorded.otlprec"
    process = Process(
        [*OTELSNAP, "record", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--out", str(out), *extra],
        ROOT,
    )
    match = process.wait_for(r"listening otlp grpc=127\.0\.0\.1:(\d+) otlp http=127\.0\.0\.1:(\d+)")
    return process, {"grpc": int(match[1]), "http": int(match[2])}, out


def test_record_keeps_bodies_byte_for_byte(tmp_path):
    process, ports, out = start_record(tmp_path)
    summary = replay.replay_to_target(SIX_NODES_REC, f"127.0.0.1:{ports['grpc']}", speed=0, progress=False)
    assert summary.delivered == 2
    assert process.stop() == 0
    recorded = list(read_recording(out))
    original = list(read_recording(SIX_NODES_REC))
    assert [r.body for r in recorded] == [r.body for r in original]
    assert {r.transport for r in recorded} == {"grpc"}
    assert recorded[0].received_ns <= recorded[1].received_ns
    assert abs(recorded[0].received_ns - time.time_ns()) < 60e9
    assert any("recorded 2 requests (2998 points" in line for line in process.lines)


def test_record_from_sdk_exporters_over_grpc_and_http(tmp_path):
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    process, ports, out = start_record(tmp_path, "--max-requests", "2")
    exporters = [
        GrpcExporter(endpoint=f"127.0.0.1:{ports['grpc']}", insecure=True),
        HttpExporter(endpoint=f"http://127.0.0.1:{ports['http']}/v1/metrics", compression=Compression.Gzip),
    ]
    for exporter in exporters:
        reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
        provider = MeterProvider(metric_readers=[reader])
        counter = provider.get_meter("record-test").create_counter("record_test_requests")
        counter.add(7, {"route": "/a"})
        # Shutdown collects and exports once.
        provider.shutdown()
    # --max-requests 2 ends the recording by itself.
    assert process.proc.wait(timeout=WAIT_S) == 0
    records = list(read_recording(out))
    assert [(r.transport, r.content_type, r.compression) for r in records] == [
        ("grpc", "application/x-protobuf", ""),
        ("http", "application/x-protobuf", "gzip"),
    ]
    for record in records:
        (rm,) = record.decode().batch
        (metric,) = rm.metrics
        assert metric.name == "record_test_requests"
        assert metric.values == [7.0]
        assert metric.attrs == [{"route": "/a"}]


def test_record_forward_runs_pipelines(tmp_path):
    tap_out = tmp_path / "forwarded.jsonl"
    config = tmp_path / "tap.yaml"
    tap_config(config, tap_out)
    out = tmp_path / "recorded.otlprec"
    process = Process([*OTELSNAP, "record", "--forward", "--config", str(config), "--out", str(out)], ROOT)
    match = process.wait_for(r"listening otlp grpc=127\.0\.0\.1:(\d+)")
    summary = replay.replay_to_target(SIX_NODES_REC, f"127.0.0.1:{match[1]}", speed=0, progress=False)
    assert summary.delivered == 2
    assert process.stop() == 0
    assert tap_points(tap_out) == 2998
    assert recording_points(out) == 2998


def test_record_duration_stops_and_flushes(tmp_path):
    process, _, out = start_record(tmp_path, "--duration-s", "0.5")
    assert process.proc.wait(timeout=WAIT_S) == 0
    assert list(read_recording(out)) == []
    assert out.read_bytes() == recording_bytes([])


def run_record(argv: list[str]) -> int:
    from pipeline import record

    parser = argparse.ArgumentParser()
    record.add_arguments(parser)
    return record.main(parser.parse_args(argv))


def test_record_refuses_existing_out(tmp_path, capsys):
    out = tmp_path / "yesterday.otlprec"
    out.write_bytes(recording_bytes([]))

    assert run_record(["--out", str(out), "--listen", "127.0.0.1:0", "--duration-s", "0.1"]) == 2

    assert out.read_bytes() == recording_bytes([])
    assert capsys.readouterr().err == (
        f"otelsnap record: {out} already exists; choose another --out, or add --force to overwrite it\n"
    )


def test_record_force_overwrites_out(tmp_path):
    out = tmp_path / "recorded.otlprec"
    out.write_bytes(b"not a recording")
    process, _, out = start_record(tmp_path, "--duration-s", "0.5", "--force")
    assert process.proc.wait(timeout=WAIT_S) == 0
    assert out.read_bytes() == recording_bytes([])


# --- committed goldens ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["six-nodes", "node-exporter-local"])
def test_committed_golden_matches(name, capsys):
    recording = ROOT / "testdata" / f"{name}.otlprec"
    golden = ROOT / "testdata" / f"{name}.golden.jsonl"
    code = run_replay([str(recording), "--expect", str(golden)])
    assert code == 0, capsys.readouterr().err


def test_local_golden_hand_checked_fields():
    # Values worked out from scrape-0002.prom and scrape-0003.prom with awk
    # (see testdata/README.md): dt = 5.241 s between the two scrapes.
    golden = ROOT / "testdata" / "node-exporter-local.golden.jsonl"
    body = next(
        orjson.loads(line) for line in golden.read_bytes().splitlines()
        if orjson.loads(line)["timestamp"] == "2026-12-04T20:33:07.546Z"
    )
    dt = 5.241
    assert body["cpu"]["usage_percent"] == pytest.approx((10.47 - 2.43) / 10.47 * 100, rel=1e-9)
    (disk,) = body["disks"]
    assert disk["write_rate"] == pytest.approx((565428224 - 497938432) / dt, rel=1e-9)
    assert disk["used"] == 270553174016 - 247128113152
    assert body["psi"]["cpu_some_percent"] == pytest.approx((8.850125 - 6.778326) / dt * 100, rel=1e-9)
    assert body["memory"]["used"] == 25276194816 - 24917995520
    assert body["uptime"] == 994
    assert body["networks"][0]["speed"] == 0


def test_record_forward_listen_overrides_config(tmp_path):
    tap_out = tmp_path / "forwarded.jsonl"
    config = tmp_path / "grpc-only.yaml"
    tap_config(config, tap_out)
    text = config.read_text().replace("      http:\n        endpoint: 127.0.0.1:0\n", "")
    config.write_text(text.replace("endpoint: 127.0.0.1:0", "endpoint: 127.0.0.1:1"))
    out = tmp_path / "recorded.otlprec"
    process = Process(
        [*OTELSNAP, "record", "--forward", "--config", str(config), "--out", str(out),
         "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
        ROOT,
    )
    match = process.wait_for(r"listening otlp grpc=127\.0\.0\.1:(\d+) otlp http=127\.0\.0\.1:(\d+)")
    assert match[1] != "1"
    summary = replay.replay_to_target(SIX_NODES_REC, f"127.0.0.1:{match[2]}", protocol="http", speed=0, progress=False)
    assert summary.delivered == 2
    assert process.stop() == 0
    assert [r.transport for r in read_recording(out)] == ["http", "http"]
    assert tap_points(tap_out) == 2998


def test_record_forward_listen_replaces_config_listeners(tmp_path):
    tap_out = tmp_path / "forwarded.jsonl"
    config = tmp_path / "tap.yaml"
    tap_config(config, tap_out)
    import socket

    with socket.socket() as taken:
        # The config's HTTP port is in use: binding it would stop the start.
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config.write_text(config.read_text().replace(
            "      http:\n        endpoint: 127.0.0.1:0\n",
            f"      http:\n        endpoint: 127.0.0.1:{taken.getsockname()[1]}\n",
        ))
        process = Process(
            [*OTELSNAP, "record", "--forward", "--config", str(config), "--out", str(tmp_path / "r.otlprec"),
             "--listen", "127.0.0.1:0", "--duration-s", "0.5"],
            ROOT,
        )
        match = process.wait_for(r"otelsnap record: listening (.*), writing")
        assert process.proc.wait(timeout=WAIT_S) == 0
    assert re.fullmatch(r"otlp grpc=127\.0\.0\.1:\d+", match[1])


def test_target_not_listening(capsys):
    port = free_port()
    assert run_replay([str(SIX_NODES_REC), "--target", f"127.0.0.1:{port}", "--speed", "0"]) == 1
    assert capsys.readouterr().err == (
        f"otelsnap replay: cannot connect to 127.0.0.1:{port}: Connection refused; "
        "start the receiver (otelsnap run) or check --target\n"
    )


def test_recording_not_found(tmp_path, capsys):
    missing = tmp_path / "missing.otlprec"
    assert run_replay([str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"otelsnap replay: recording not found: {missing}; check the path "
        "(otelsnap record and otelsnap convert make recordings)\n"
    )
