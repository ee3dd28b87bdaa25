"""The slo_snapshot processor: per-pod deltas summed per service, edge and ingress.

All data here is invented: the repository contains no recording of Linkerd,
Traefik or ingress-nginx metrics. Two scrapes 15 s apart are written as
Prometheus text (with ``# TYPE`` lines, names prefixed ``otel_``), turned
into collector-shaped OTLP by ``pipeline.convert`` and decoded by
``pipeline.decode``. Every expected delta is computed by hand in the
comments next to the values.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest

from pipeline import convert, decode, promtext
from pipeline.component import ComponentContext, ConfigError, Snapshot
from pipeline.config import ConfigErrors
from pipeline.telemetry import Telemetry
from processors.slo_snapshot import SloSnapshotConfig, SloSnapshotProcessor, bound_key

T0 = 1_766_400_000_000_000_000
S = 1_000_000_000
T1 = T0 + 15 * S
DROPPED = "otelsnap_processor_dropped_points"
OTELSNAP = Path(sys.executable).parent / "otelsnap"

LINKERD_A = 'job="linkerd-proxy",instance="10.0.0.1:4191",namespace="shop",deployment="web",pod="web-a"'
LINKERD_B = 'job="linkerd-proxy",instance="10.0.0.2:4191",namespace="shop",deployment="web",pod="web-b"'
LINKERD_C = 'job="linkerd-proxy",instance="10.0.0.3:4191",namespace="shop",deployment="web",pod="web-c"'
LINKERD_IDLE = 'job="linkerd-proxy",instance="10.0.0.4:4191",namespace="shop",deployment="idle",pod="idle-a"'
LINKERD_SYS = (
    'job="linkerd-proxy",instance="10.0.0.5:4191",namespace="linkerd",deployment="linkerd-destination",'
    'pod="linkerd-destination-a"'
)
INBOUND = 'direction="inbound",route_name="default",srv_port="8080"'
TRAEFIK = 'job="traefik",instance="10.0.1.1:9100"'
NGINX = 'job="ingress-nginx",instance="10.0.1.2:10254"'


def response(labels: str, extra: str, value: float) -> str:
    return f"otel_response_total{{{labels},{extra}}} {value}\n"


def histogram(name: str, labels: str, buckets: dict[str, float], total: float, count: float) -> str:
    lines = [f'{name}_bucket{{{labels},le="{le}"}} {n}' for le, n in buckets.items()]
    lines.append(f"{name}_sum{{{labels}}} {total}")
    lines.append(f"{name}_count{{{labels}}} {count}")
    return "\n".join(lines) + "\n"


def scrape_text(second: bool) -> str:
    """One scrape of every target; ``second`` picks the values of scrape 2 (15 s later)."""

    def v(first: float, later: float) -> float:
        return later if second else first

    text = "# TYPE otel_response_total counter\n"
    # Inbound, pod web-a: 200 tls 100 -> 130 (+30), 500 tls 5 -> 7 (+2), 200 plain 10 -> 14 (+4).
    text += response(LINKERD_A, f'{INBOUND},status_code="200",classification="success",tls="true"', v(100, 130))
    text += response(LINKERD_A, f'{INBOUND},status_code="500",classification="failure",tls="true"', v(5, 7))
    text += response(LINKERD_A, f'{INBOUND},status_code="200",classification="success",tls="no_identity"', v(10, 14))
    if second:
        # A new series on a pod seen in scrape 1: counts from zero, +3.
        text += response(LINKERD_A, f'{INBOUND},status_code="503",classification="failure",tls="true"', 3)
        # A new pod: its first scrape only sets the base.
        text += response(LINKERD_C, f'{INBOUND},status_code="200",classification="success",tls="true"', 50)
    # Pod web-b restarts: 200 -> 12 is a restart, +12. 404 stays at 7: delta 0, omitted.
    text += response(LINKERD_B, f'{INBOUND},status_code="200",classification="success",tls="true"', v(200, 12))
    text += response(LINKERD_B, f'{INBOUND},status_code="404",classification="failure",tls="true"', v(7, 7))
    # A service whose only series does not move: left out of the snapshot.
    text += response(LINKERD_IDLE, f'{INBOUND},status_code="200",classification="success",tls="true"', v(5, 5))
    # Dropped: probe route, proxy admin port, system namespace.
    probe = 'direction="inbound",route_name="probe",srv_port="8080",status_code="200",classification="success"'
    admin = 'direction="inbound",route_name="default",srv_port="4191",status_code="200",classification="success"'
    text += response(LINKERD_A, probe + ',tls="true"', v(10, 20))
    text += response(LINKERD_A, admin + ',tls="true"', v(1, 9))
    text += response(LINKERD_SYS, f'{INBOUND},status_code="200",classification="success",tls="true"', v(1, 2))
    # Outbound web-a -> shop/api: 200 40 -> 50 (+10), 502 failure 1 -> 4 (+3).
    to_api = 'direction="outbound",dst_namespace="shop",dst_deployment="api"'
    text += response(LINKERD_A, f'{to_api},status_code="200",classification="success",tls="true"', v(40, 50))
    text += response(LINKERD_A, f'{to_api},status_code="502",classification="failure",tls="true"', v(1, 4))
    # Dropped: outbound to a system namespace, outbound without a destination workload.
    to_dns = 'direction="outbound",dst_namespace="kube-system",dst_deployment="coredns"'
    text += response(LINKERD_A, f'{to_dns},status_code="200",classification="success",tls="true"', v(3, 6))
    text += response(LINKERD_A, 'direction="outbound",status_code="200",classification="success"', v(3, 8))

    text += "# TYPE otel_response_latency_ms histogram\n"
    # web-a: cumulative le 1/5/12.5/50/+Inf 0,10,15,20,22 -> 0,14,20,27,30, sum 300 -> 420.
    text += histogram(
        "otel_response_latency_ms",
        f"{LINKERD_A},{INBOUND}",
        {"1": 0, "5": v(10, 14), "12.5": v(15, 20), "50": v(20, 27), "+Inf": v(22, 30)},
        v(300, 420),
        v(22, 30),
    )
    # web-b restarts: 0,100,150,200,200 -> 0,1,2,3,3, sum 2000 -> 30.
    text += histogram(
        "otel_response_latency_ms",
        f"{LINKERD_B},{INBOUND}",
        {"1": 0, "5": v(100, 1), "12.5": v(150, 2), "50": v(200, 3), "+Inf": v(200, 3)},
        v(2000, 30),
        v(200, 3),
    )
    # Edge web-a -> shop/api: count 3 -> 7, sum 20 -> 60.
    text += histogram(
        "otel_response_latency_ms",
        f"{LINKERD_A},{to_api},status_code=\"200\"",
        {"5": v(1, 2), "12.5": v(2, 4), "50": v(3, 6), "+Inf": v(3, 7)},
        v(20, 60),
        v(3, 7),
    )

    text += "# TYPE otel_traefik_service_requests_total counter\n"
    text += f'otel_traefik_service_requests_total{{{TRAEFIK},service="shop-web-80@kubernetes",code="200",method="GET"}} {v(1000, 1100)}\n'
    text += f'otel_traefik_service_requests_total{{{TRAEFIK},service="shop-web-80@kubernetes",code="500",method="POST"}} {v(10, 11)}\n'
    text += f'otel_traefik_service_requests_total{{{TRAEFIK},service="dashboard@internal",code="200",method="GET"}} {v(5, 9)}\n'
    text += f'otel_traefik_service_requests_total{{{TRAEFIK},service="shop-api-8080@kubernetescrd",code="200",method="GET"}} 0\n'
    text += "# TYPE otel_traefik_service_request_duration_seconds histogram\n"
    # GET 200: cumulative 10,20,40,50,50 -> 30,70,120,145,150, sum 4.5 -> 12 s.
    text += histogram(
        "otel_traefik_service_request_duration_seconds",
        f'{TRAEFIK},service="shop-web-80@kubernetes",code="200",method="GET"',
        {"0.005": v(10, 30), "0.0125": v(20, 70), "0.1": v(40, 120), "0.3": v(50, 145), "+Inf": v(50, 150)},
        v(4.5, 12),
        v(50, 150),
    )
    # POST 500: 0,0,0,10,10 -> 0,0,0,10,11, sum 3 -> 4.5 s.
    text += histogram(
        "otel_traefik_service_request_duration_seconds",
        f'{TRAEFIK},service="shop-web-80@kubernetes",code="500",method="POST"',
        {"0.005": 0, "0.0125": 0, "0.1": 0, "0.3": 10, "+Inf": v(10, 11)},
        v(3, 4.5),
        v(10, 11),
    )

    text += "# TYPE otel_nginx_ingress_controller_requests counter\n"
    nginx_web = f'{NGINX},namespace="shop",service="cart",service_port="80",ingress="cart"'
    text += f'otel_nginx_ingress_controller_requests{{{nginx_web},status="200",method="GET"}} {v(500, 560)}\n'
    text += (
        f'otel_nginx_ingress_controller_requests{{{NGINX},namespace="kube-system",service="dashboard",'
        f'service_port="443",status="200",method="GET"}} {v(1, 2)}\n'
    )
    text += f'otel_nginx_ingress_controller_requests{{{NGINX},namespace="shop",status="404",method="GET"}} {v(3, 4)}\n'
    text += "# TYPE otel_nginx_ingress_controller_request_duration_seconds histogram\n"
    # 10,20,20 -> 40,55,60, sum 5 -> 25 s.
    text += histogram(
        "otel_nginx_ingress_controller_request_duration_seconds",
        f'{nginx_web},status="200",method="GET"',
        {"0.25": v(10, 40), "1": v(20, 55), "+Inf": v(20, 60)},
        v(5, 25),
        v(20, 60),
    )
    return text


def batch(text: str, time_ns: int):
    request = convert.exposition_to_request(promtext.parse(text), time_ns, convert.ConvertOptions())
    return decode.decode_request(request).batch


def make(**options) -> tuple[SloSnapshotProcessor, Telemetry]:
    telemetry = Telemetry()
    config = SloSnapshotConfig(**options)
    config.validate()
    context = ComponentContext(component_id="slo_snapshot", telemetry=telemetry)
    return SloSnapshotProcessor(config, context), telemetry


def two_scrapes(**options) -> tuple[SloSnapshotProcessor, Telemetry, list]:
    processor, telemetry = make(**options)
    processor.start()
    out = processor.process(batch(scrape_text(False), T0), T0)
    out += processor.flush(T0 + 1 * S)
    out += processor.process(batch(scrape_text(True), T1), T1 + 1 * S)
    return processor, telemetry, out


EXPECTED_SERVICES = [
    {
        "namespace": "shop",
        "name": "web",
        # 200: 30 + 4 (web-a) + 12 (web-b restarted); 500: 2; 503: 3 (new series on web-a).
        "requests": [
            {"status_code": "200", "classification": "success", "delta": 46},
            {"status_code": "500", "classification": "failure", "delta": 2},
            {"status_code": "503", "classification": "failure", "delta": 3},
        ],
        # web-a 4,5,7,8 plus web-b 1,2,3,3 (restarted); le="1" stays 0 and is left out.
        "latency_buckets": {"5": 5, "12.5": 7, "50": 10, "+Inf": 11},
        "latency_sum": 150.0,  # 120 + 30
        "latency_count": 11,  # 8 + 3
        "tls_request_delta": 47,  # 30 + 2 + 3 + 12
        "total_request_delta": 51,  # 47 + 4
    }
]
EXPECTED_EDGES = [
    {
        "src_ns": "shop",
        "src_name": "web",
        "dst_ns": "shop",
        "dst_name": "api",
        "request_delta": 13,
        "failure_delta": 3,
        "latency_sum": 40.0,
        "latency_count": 4,
    }
]
EXPECTED_INGRESS = [
    {
        "service_key": "shop-cart-80",
        "requests": [{"code": "200", "method": "GET", "delta": 60}],
        # 30,35,40 cumulative; le 0.25 s and 1 s become "250" and "1000".
        "latency_buckets": {"250": 30, "1000": 35, "+Inf": 40},
        "latency_sum": 20000.0,
        "latency_count": 40,
    },
    {
        # Traefik: "@kubernetes" removed; the two series summed.
        "service_key": "shop-web-80",
        "requests": [
            {"code": "200", "method": "GET", "delta": 100},
            {"code": "500", "method": "POST", "delta": 1},
        ],
        # GET 20,50,80,95,100 plus POST 0,0,0,0,1.
        "latency_buckets": {"5": 20, "12.5": 50, "100": 80, "300": 95, "+Inf": 101},
        "latency_sum": 9000.0,  # (7.5 + 1.5) s
        "latency_count": 101,
    },
]


def slo_snapshots(items) -> list[Snapshot]:
    return [item for item in items if isinstance(item, Snapshot)]


# --- the snapshot body ---------------------------------------------------------


def test_first_scrape_sets_base_only():
    processor, _ = make()
    out = processor.process(batch(scrape_text(False), T0), T0)
    assert slo_snapshots(out) == []
    assert slo_snapshots(processor.flush(T0 + 60 * S)) == []
    assert slo_snapshots(processor.shutdown()) == []


def test_services_sum_per_pod_deltas():
    processor, _, out = two_scrapes()
    assert slo_snapshots(out) == []
    snapshots = slo_snapshots(processor.flush(T1 + 16 * S))
    assert len(snapshots) == 1
    body = snapshots[0].body
    assert body["services"] == EXPECTED_SERVICES
    assert body["timestamp"] == T1 // S


def test_edges_from_outbound_responses():
    processor, _, _ = two_scrapes()
    body = slo_snapshots(processor.flush(T1 + 16 * S))[0].body
    assert body["edges"] == EXPECTED_EDGES


def test_ingress_traefik_and_nginx_keys():
    processor, _, _ = two_scrapes()
    body = slo_snapshots(processor.flush(T1 + 16 * S))[0].body
    assert body["ingress"] == EXPECTED_INGRESS


def test_snapshot_fields_and_key():
    processor, _, _ = two_scrapes(cluster_id="home")
    snapshot = slo_snapshots(processor.flush(T1 + 16 * S))[0]
    assert snapshot.kind == "slo"
    assert snapshot.key == "home"
    assert snapshot.time_ns == T1
    assert list(snapshot.body) == ["timestamp", "services", "edges", "ingress"]


def test_key_defaults_to_slo():
    processor, _, _ = two_scrapes()
    assert slo_snapshots(processor.flush(T1 + 16 * S))[0].key == "slo"


def test_body_serializes_with_orjson():
    processor, _, _ = two_scrapes()
    body = slo_snapshots(processor.flush(T1 + 16 * S))[0].body
    decoded = orjson.loads(orjson.dumps(body))
    assert decoded == body
    assert decoded["services"][0]["total_request_delta"] == 51
    assert isinstance(decoded["timestamp"], int)


def test_drops_counted_by_reason():
    _, telemetry, _ = two_scrapes()
    # One series of each, in both scrapes.
    assert telemetry.get(DROPPED, processor="slo_snapshot", reason="probe_route") == 2
    assert telemetry.get(DROPPED, processor="slo_snapshot", reason="admin_port") == 2
    # linkerd inbound, outbound to kube-system, nginx in kube-system.
    assert telemetry.get(DROPPED, processor="slo_snapshot", reason="system_namespace") == 6
    assert telemetry.get(DROPPED, processor="slo_snapshot", reason="no_destination") == 2
    assert telemetry.get(DROPPED, processor="slo_snapshot", reason="internal_service") == 2
    assert telemetry.get(DROPPED, processor="slo_snapshot", reason="no_service") == 2
    assert telemetry.get("otelsnap_slo_snapshot_counter_resets") == 2  # web-b counter and histogram


def test_system_namespaces_configurable():
    processor, telemetry, _ = two_scrapes(system_namespaces=[])
    body = slo_snapshots(processor.flush(T1 + 16 * S))[0].body
    services = [(s["namespace"], s["name"]) for s in body["services"]]
    assert services == [("linkerd", "linkerd-destination"), ("shop", "web")]
    edges = [(e["dst_ns"], e["dst_name"], e["request_delta"]) for e in body["edges"]]
    assert edges == [("kube-system", "coredns", 3), ("shop", "api", 13)]
    assert telemetry.get(DROPPED, processor="slo_snapshot", reason="system_namespace") == 0


# --- per-series rules ------------------------------------------------------------


def test_duplicate_scrape_adds_nothing():
    processor, telemetry, _ = two_scrapes()
    first = slo_snapshots(processor.flush(T1 + 16 * S))
    assert len(first) == 1
    # The collector retries the second request.
    processor.process(batch(scrape_text(True), T1), T1 + 20 * S)
    assert slo_snapshots(processor.flush(T1 + 60 * S)) == []
    assert telemetry.get(DROPPED, processor="slo_snapshot", reason="duplicate") > 0


def test_nan_and_stale_skip_to_next_sample():
    labels = f'{LINKERD_A},{INBOUND},status_code="200",classification="success",tls="true"'
    head = "# TYPE otel_response_total counter\n"
    processor, _ = make(interval_s=0)
    processor.process(batch(head + f"otel_response_total{{{labels}}} 100\n", T0), T0)
    out = processor.process(batch(head + f"otel_response_total{{{labels}}} NaN\n", T1), T1)
    assert slo_snapshots(out) == []
    # Pairs with 100 from scrape 1: +25.
    out = processor.process(batch(head + f"otel_response_total{{{labels}}} 125\n", T1 + 15 * S), T1 + 15 * S)
    body = slo_snapshots(out)[0].body
    assert body["services"][0]["total_request_delta"] == 25


def test_interval_waits_on_runtime_clock():
    processor, _, out = two_scrapes()
    assert slo_snapshots(out) == []
    # The first delta arrived at T1 + 1 s; the window closes 15 s later.
    assert slo_snapshots(processor.flush(T1 + 15 * S)) == []
    assert len(slo_snapshots(processor.flush(T1 + 16 * S))) == 1
    assert slo_snapshots(processor.flush(T1 + 40 * S)) == []


def test_shutdown_emits_pending_deltas():
    processor, _, _ = two_scrapes()
    snapshots = slo_snapshots(processor.shutdown())
    assert len(snapshots) == 1
    assert snapshots[0].body["services"] == EXPECTED_SERVICES


def test_stale_series_evicted():
    processor, telemetry, _ = two_scrapes(max_staleness_s=60)
    tracked = processor.series_count
    assert tracked > 0
    processor.flush(T1 + 100 * S)
    assert processor.series_count == 0
    assert telemetry.get("otelsnap_slo_snapshot_series_evicted") == tracked


def test_series_limit_drops_new_series():
    processor, telemetry, _ = two_scrapes(max_series=3)
    assert processor.series_count == 3
    assert telemetry.get(DROPPED, processor="slo_snapshot", reason="series_limit") > 0


def test_other_metrics_pass_through():
    text = "# TYPE otel_node_load1 gauge\notel_node_load1{job=\"node\",instance=\"n:9100\"} 0.5\n"
    processor, _ = make()
    out = processor.process(batch(text + scrape_text(False), T0), T0)
    names = [m.name for item in out for m in item.metrics]
    assert names == ["otel_node_load1"]


@pytest.mark.parametrize(
    ("bound", "scale", "key"),
    [(5.0, 1, "5"), (12.5, 1, "12.5"), (0.005, 1000, "5"), (0.0125, 1000, "12.5"), (0.1, 1000, "100"),
     (0.3, 1000, "300"), (2.5, 1000, "2500"), (math.inf, 1000, "+Inf")],
)
def test_bound_key_shortest_decimal(bound, scale, key):
    from decimal import Decimal

    assert bound_key(bound, Decimal(scale)) == key


# --- config ---------------------------------------------------------------------


def test_config_errors_name_every_field():
    config = SloSnapshotConfig(interval_s=-1, max_series=0, max_staleness_s=0, system_namespaces="linkerd")
    with pytest.raises(ConfigErrors) as raised:
        config.validate()
    paths = sorted(e.path for e in raised.value.errors)
    assert paths == ["interval_s", "max_series", "max_staleness_s", "system_namespaces"]


def test_config_single_error():
    with pytest.raises(ConfigError, match="interval_s: must be a number of seconds >= 0, got -1"):
        SloSnapshotConfig(interval_s=-1).validate()


def test_validate_command_slo_pipeline(tmp_path):
    path = tmp_path / "slo.yaml"
    path.write_text(
        textwrap.dedent(
            """
            receivers:
              otlp:
                protocols:
                  grpc:
                    endpoint: 127.0.0.1:0
            processors:
              filter/slo:
                metrics:
                  include_snapshot_families: false
                  include:
                    - response_total
                    - response_latency_ms
                    - traefik_service_requests_total
                    - traefik_service_request_duration_seconds
                    - nginx_ingress_controller_requests
                    - nginx_ingress_controller_request_duration_seconds
              slo_snapshot:
                interval_s: 15
            exporters:
              stdout:
            service:
              pipelines:
                slo:
                  receivers: [otlp]
                  processors: [filter/slo, slo_snapshot]
                  exporters: [stdout]
            """
        )
    )
    result = subprocess.run(
        [str(OTELSNAP), "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"config ok: {path}: 1 pipeline",
        "  slo: otlp -> filter/slo -> slo_snapshot -> stdout",
    ]
