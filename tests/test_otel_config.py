"""The shipped configs in otel-config/ load, and the two sides agree."""

from pathlib import Path

import pytest
import yaml

from pipeline.config import default_config_text, load_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "otel-config"
ENV = {"MASTER_URL": "http://127.0.0.1:8080", "CLUSTER_ID": "test"}


@pytest.mark.parametrize("name", ["otelsnap.yaml", "otelsnap-sidecar.yaml", "otelsnap-gateway.yaml"])
def test_otelsnap_config_loads(name):
    config = load_config(CONFIG_DIR / name, env=ENV)
    assert list(config.pipelines) == ["node"]
    assert config.pipelines["node"].processors == ["filter/node", "delta_rate", "node_snapshot"]


def test_local_config_is_embedded_default():
    assert (CONFIG_DIR / "otelsnap.yaml").read_text() == default_config_text()


def test_sidecar_collector_targets_otelsnap():
    collector = yaml.safe_load((CONFIG_DIR / "collector-sidecar.yaml").read_text())
    otelsnap = yaml.safe_load((CONFIG_DIR / "otelsnap-sidecar.yaml").read_text())
    exporter = collector["exporters"]["otlp/otelsnap"]
    assert exporter["endpoint"] == otelsnap["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert exporter["compression"] == "gzip"
    assert exporter["sending_queue"]["num_consumers"] == 1
    assert collector["service"]["pipelines"]["metrics"]["exporters"] == ["otlp/otelsnap"]


def test_gateway_collector_routes_by_resource():
    collector = yaml.safe_load((CONFIG_DIR / "collector-gateway.yaml").read_text())
    otelsnap = yaml.safe_load((CONFIG_DIR / "otelsnap-gateway.yaml").read_text())
    exporter = collector["exporters"]["loadbalancing/otelsnap"]
    assert exporter["routing_key"] == "resource"
    assert exporter["protocol"]["otlp"]["compression"] == "gzip"
    port = int(otelsnap["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1])
    assert exporter["resolver"]["k8s"]["ports"] == [port]
