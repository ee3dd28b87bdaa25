"""Loading and checking the configuration file, and ``otelsnap validate``.

Components that the built-in modules do not provide (a processor with every
kind of option) are registered the way a third-party package does it: an
entry point in a real ``.dist-info`` directory on sys.path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.component import ConfigError, Exporter, Processor
from pipeline.config import (
    ConfigErrors,
    build_dataclass,
    config_errors,
    default_config_text,
    load_config,
    load_config_text,
)

OTELSNAP = Path(sys.executable).parent / "otelsnap"


# --- a processor with every kind of option (invented for these tests) ----


@dataclass
class TLSOptions:
    ca_file: str = ""
    port: int = 443

    def validate(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError("port", f"must be between 1 and 65535, got {self.port}")


@dataclass
class MatchOptions:
    include: list[str] = field(default_factory=lambda: ["node_*"])
    exclude: list[str] = field(default_factory=list)


@dataclass
class ExampleConfig:
    max_staleness_s: float = 300.0
    max_series: int = 1000
    enabled: bool = True
    cluster_id: str = ""
    metrics: MatchOptions = field(default_factory=MatchOptions)
    tls: TLSOptions | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if self.max_series < 1:
            raise ConfigError("max_series", f"must be at least 1, got {self.max_series}")


class ExampleProcessor(Processor):
    type_name = "example"
    Config = ExampleConfig


class DiscardExporter(Exporter):
    type_name = "discard"

    def export(self, items, now_ns):
        pass


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """Register ExampleProcessor as type 'example' and DiscardExporter as 'discard'."""
    dist = tmp_path / "otelsnap_test_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: otelsnap-test-plugins\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        f"[otelsnap.processors]\nexample = {__name__}:ExampleProcessor\n"
        f"[otelsnap.exporters]\ndiscard = {__name__}:DiscardExporter\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def messages(error: ConfigError) -> list[str]:
    return [str(e) for e in config_errors(error)]


def load_errors(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(textwrap.dedent(text), env=env or {})
    return messages(caught.value)


# --- build_dataclass ----------------------------------------------------------


def test_build_dataclass_all_option_types():
    raw = {
        "max_staleness_s": 60,
        "max_series": 5,
        "enabled": False,
        "cluster_id": "home",
        "metrics": {"include": ["node_cpu_*", "node_memory_*"]},
        "tls": {"ca_file": "ca.pem"},
        "headers": {"X-Cluster-ID": "home"},
    }
    config = build_dataclass(ExampleConfig, raw, "processors.example")
    assert config.max_staleness_s == 60.0
    assert isinstance(config.max_staleness_s, float)
    assert config.max_series == 5
    assert config.enabled is False
    assert config.cluster_id == "home"
    assert config.metrics.include == ["node_cpu_*", "node_memory_*"]
    assert config.metrics.exclude == []
    assert config.tls == TLSOptions(ca_file="ca.pem", port=443)
    assert config.headers == {"X-Cluster-ID": "home"}


def test_build_dataclass_null_means_defaults():
    assert build_dataclass(ExampleConfig, None, "p") == ExampleConfig()


def test_optional_section_null_enables_defaults():
    config = build_dataclass(ExampleConfig, {"tls": None}, "p")
    assert config.tls == TLSOptions()


def test_optional_section_absent_stays_off():
    config = build_dataclass(ExampleConfig, {}, "p")
    assert config.tls is None


def test_typo_names_path_and_suggestion():
    with pytest.raises(ConfigError) as caught:
        build_dataclass(ExampleConfig, {"max_stalenes_s": 5}, "processors.example")
    assert str(caught.value) == (
        "processors.example.max_stalenes_s: unknown option 'max_stalenes_s' "
        "(did you mean 'max_staleness_s'?)"
    )


def test_nested_typo_names_full_path():
    with pytest.raises(ConfigError) as caught:
        build_dataclass(ExampleConfig, {"metrics": {"inclde": ["x"]}}, "processors.filter/node")
    assert caught.value.path == "processors.filter/node.metrics.inclde"
    assert "did you mean 'include'?" in caught.value.message


def test_unknown_key_without_match_lists_options():
    with pytest.raises(ConfigError) as caught:
        build_dataclass(TLSOptions, {"zzz": 1}, "x")
    assert str(caught.value) == "x.zzz: unknown option 'zzz'; valid options: ca_file, port"


def test_wrong_type_messages():
    cases = [
        ({"max_staleness_s": "five minutes"}, "p.max_staleness_s: expected a number, got 'five minutes'"),
        ({"max_series": 2.5}, "p.max_series: expected an integer, got 2.5"),
        ({"max_series": True}, "p.max_series: expected an integer, got true"),
        ({"enabled": "yes please"}, "p.enabled: expected true or false, got 'yes please'"),
        ({"cluster_id": 123}, "p.cluster_id: expected a string, got 123; put it in quotes"),
        ({"metrics": {"include": "node_cpu"}}, "p.metrics.include: expected a list of strings, got 'node_cpu'; write [node_cpu]"),
        ({"metrics": {"include": ["a", 7]}}, "p.metrics.include[1]: expected a string, got 7; put it in quotes"),
        ({"headers": ["a"]}, "p.headers: expected a mapping, got a list"),
        ({"tls": "on"}, "p.tls: expected a mapping of options, got 'on'"),
    ]
    for raw, expected in cases:
        with pytest.raises(ConfigError) as caught:
            build_dataclass(ExampleConfig, raw, "p")
        assert str(caught.value) == expected


def test_validate_error_gets_path_prefix():
    with pytest.raises(ConfigError) as caught:
        build_dataclass(ExampleConfig, {"tls": {"port": 0}}, "exporters.master")
    assert str(caught.value) == "exporters.master.tls.port: must be between 1 and 65535, got 0"


def test_several_errors_are_collected():
    raw = {"max_series": "many", "enabled": 1, "metrics": {"exclud": []}}
    with pytest.raises(ConfigErrors) as caught:
        build_dataclass(ExampleConfig, raw, "p")
    paths = [e.path for e in caught.value.errors]
    assert paths == ["p.max_series", "p.enabled", "p.metrics.exclud"]


# --- ${env:VAR} ---------------------------------------------------------------


PLUGIN_PIPELINE = """
receivers:
  otlp:
    protocols:
      grpc:
processors:
  example:
    cluster_id: {cluster_id}
    max_series: {max_series}
    enabled: {enabled}
    headers:
      Authorization: "Bearer ${{env:TOKEN}}"
      Literal: "cost $$5"
exporters:
  discard:
service:
  pipelines:
    p: {{receivers: [otlp], processors: [example], exporters: [discard]}}
"""


def example_config(text: str, env: dict[str, str]) -> ExampleConfig:
    return load_config_text(text, env=env).processors["example"].config


def test_env_substitution(plugins):
    text = PLUGIN_PIPELINE.format(
        cluster_id="${env:CLUSTER}", max_series="${env:MAX_SERIES}", enabled="${ENABLED}"
    )
    env = {"CLUSTER": "prod: eu #1", "MAX_SERIES": "250", "ENABLED": "false", "TOKEN": "s3cr3t"}
    config = example_config(text, env)
    # The value is taken as is: ": " and " #" inside it are not YAML syntax.
    assert config.cluster_id == "prod: eu #1"
    assert config.max_series == 250
    assert config.enabled is False
    assert config.headers == {"Authorization": "Bearer s3cr3t", "Literal": "cost $5"}


def test_env_default_when_unset_or_empty(plugins):
    text = PLUGIN_PIPELINE.format(
        cluster_id="${env:CLUSTER:-dev}", max_series="${env:MAX_SERIES:-10}", enabled="true"
    )
    assert example_config(text, {"TOKEN": "t"}).cluster_id == "dev"
    assert example_config(text, {"TOKEN": "t", "CLUSTER": ""}).cluster_id == "dev"
    assert example_config(text, {"TOKEN": "t", "CLUSTER": "prod"}).cluster_id == "prod"
    assert example_config(text, {"TOKEN": "t"}).max_series == 10


def test_env_string_option_stays_string(plugins):
    text = PLUGIN_PIPELINE.format(cluster_id="${env:CLUSTER}", max_series="1", enabled="true")
    assert example_config(text, {"CLUSTER": "0123", "TOKEN": "t"}).cluster_id == "0123"


def test_env_missing_variable_error(plugins):
    text = PLUGIN_PIPELINE.format(cluster_id="x", max_series="1", enabled="true")
    errors = load_errors(text, env={})
    assert (
        "processors.example.headers.Authorization: environment variable TOKEN is not set; "
        "set it or give a default with ${env:TOKEN:-value}"
    ) in errors


def test_env_non_number_for_integer_option(plugins):
    text = PLUGIN_PIPELINE.format(cluster_id="x", max_series="${env:MAX_SERIES}", enabled="true")
    errors = load_errors(text, env={"MAX_SERIES": "lots", "TOKEN": "t"})
    assert "processors.example.max_series: expected an integer, got 'lots'" in errors


def test_unset_variable_is_the_only_error():
    text = default_config_text().replace(
        "\nexporters:\n", "\nexporters:\n  master:\n    endpoint: ${env:MASTER_URL}\n    cluster_id: home\n", 1
    )
    text = text.replace("exporters: [stdout]", "exporters: [stdout, master]")
    text = text.replace("  tick_interval_s: 1.0\n", "  tick_interval_s: ${env:TMO}\n", 1)
    errors = load_errors(text)
    assert errors == [
        "exporters.master.endpoint: environment variable MASTER_URL is not set; "
        "set it or give a default with ${env:MASTER_URL:-value}",
        "service.tick_interval_s: environment variable TMO is not set; "
        "set it or give a default with ${env:TMO:-value}",
    ]


def test_env_other_scheme_is_rejected(plugins):
    text = PLUGIN_PIPELINE.format(cluster_id="${file:/etc/cluster}", max_series="1", enabled="true")
    errors = load_errors(text, env={"TOKEN": "t"})
    assert any(
        m.startswith("processors.example.cluster_id: unsupported reference scheme 'file'")
        for m in errors
    ), errors


# --- whole files --------------------------------------------------------------


def test_unknown_processor_type_lists_known():
    errors = load_errors(
        """
        processors:
          filtr/node:
        service:
          pipelines:
            node: {receivers: [otlp], processors: [filtr/node], exporters: [stdout]}
        """
    )
    unknown = [m for m in errors if m.startswith("processors.filtr/node:")]
    assert len(unknown) == 1
    assert "unknown processor type 'filtr' (did you mean 'filter'?)" in unknown[0]
    assert "known types: delta_rate, filter, node_snapshot, slo_snapshot" in unknown[0]
    # The id was declared, so the pipeline's reference to it is not an error too.
    assert not any(m.startswith("service.pipelines.node.processors") for m in errors)


def test_unknown_exporter_and_receiver_types():
    errors = load_errors(
        """
        receivers:
          prometheus:
        exporters:
          otlphttp:
        service:
          pipelines:
            node: {receivers: [prometheus], exporters: [otlphttp]}
        """
    )
    assert any(m.startswith("receivers.prometheus: unknown receiver type 'prometheus'") for m in errors)
    assert any(m.startswith("exporters.otlphttp: unknown exporter type 'otlphttp'") for m in errors)


def test_undefined_reference_names_path_and_fix():
    errors = load_errors(
        """
        service:
          pipelines:
            node:
              receivers: [otlp]
              processors: [delta_rat]
              exporters: [stdout]
        """
    )
    assert (
        "service.pipelines.node.processors[0]: processor 'delta_rat' is not defined; "
        "define it under 'processors' or remove it from the pipeline"
    ) in errors
    assert any(m.startswith("service.pipelines.node.receivers[0]: receiver 'otlp' is not defined") for m in errors)


def test_undefined_reference_suggests_defined_id(plugins):
    errors = load_errors(
        """
        processors:
          example/node:
        service:
          pipelines:
            node: {receivers: [otlp], processors: [example/nod], exporters: [stdout]}
        """
    )
    assert any(
        m.startswith(
            "service.pipelines.node.processors[0]: processor 'example/nod' is not defined "
            "(did you mean 'example/node'?)"
        )
        for m in errors
    ), errors


def test_pipeline_needs_receivers_and_exporters():
    errors = load_errors(
        """
        service:
          pipelines:
            node: {processors: []}
        """
    )
    assert (
        "service.pipelines.node.receivers: a pipeline needs at least one receiver; "
        "list one or remove the pipeline"
    ) in errors
    assert (
        "service.pipelines.node.exporters: a pipeline needs at least one exporter; "
        "list one or remove the pipeline"
    ) in errors


def test_no_pipelines_is_an_error():
    errors = load_errors("receivers: {}\n")
    assert any(m.startswith("service.pipelines: no pipelines are defined") for m in errors)


def test_duplicate_key_is_an_error(plugins):
    errors = load_errors(
        """
        processors:
          example:
            max_series: 5
          example:
            max_series: 6
        service:
          pipelines:
            p: {receivers: [otlp], processors: [example], exporters: [stdout]}
        """
    )
    assert (
        "processors.example: defined twice (lines 3 and 5); YAML would keep only the last one, "
        "so remove or rename one of them"
    ) in errors


def test_component_listed_twice_in_pipeline(plugins):
    errors = load_errors(
        """
        processors:
          example:
        service:
          pipelines:
            p: {receivers: [otlp], processors: [example, example], exporters: [stdout]}
        """
    )
    assert any(
        m.startswith("service.pipelines.p.processors[1]: processor 'example' is listed twice")
        for m in errors
    ), errors


def test_invalid_component_id():
    errors = load_errors(
        """
        processors:
          filter/:
          "filter/a b":
        service:
          pipelines:
            p: {receivers: [otlp], exporters: [stdout]}
        """
    )
    assert any(m.startswith("processors.filter/: invalid component id 'filter/'") for m in errors)
    assert any(m.startswith("processors.filter/a b: invalid component id") for m in errors)


def test_unknown_top_level_and_service_keys():
    errors = load_errors(
        """
        extensions: {}
        service:
          pipeline: {}
          telemetry:
            metrics: {adress: ":8888"}
        """
    )
    assert any(m.startswith("extensions: unknown option 'extensions'") for m in errors), errors
    assert "service.pipeline: unknown option 'pipeline' (did you mean 'pipelines'?)" in errors
    assert (
        "service.telemetry.metrics.adress: unknown option 'adress'; valid options: endpoint"
    ) in errors


def test_service_queue_size_checked():
    errors = load_errors("service: {queue_size: 0, tick_interval_s: 0, pipelines: {}}\n")
    assert "service.queue_size: must be at least 1, got 0" in errors


def test_service_telemetry_checked():
    errors = load_errors(
        """
        service:
          telemetry:
            metrics: {endpoint: "localhost"}
            logs: {level: verbose}
          pipelines: {}
        """
    )
    assert (
        "service.telemetry.metrics.endpoint: invalid endpoint 'localhost'; write host:port, "
        "for example 127.0.0.1:8888"
    ) in errors
    assert (
        "service.telemetry.logs.level: invalid log level 'verbose'; "
        "use one of debug, info, warning, error"
    ) in errors


def test_telemetry_port_out_of_range():
    errors = load_errors("service: {telemetry: {metrics: {endpoint: '127.0.0.1:99999'}}, pipelines: {}}\n")
    assert (
        "service.telemetry.metrics.endpoint: port 99999 of '127.0.0.1:99999' is out of range (0-65535); "
        "write host:port, for example 127.0.0.1:8888"
    ) in errors


def test_service_rules_all_reported():
    errors = load_errors("service: {queue_size: 0, tick_interval_s: -1, shutdown_timeout_s: -2, pipelines: {}}\n")
    assert errors[-3:] == [
        "service.queue_size: must be at least 1, got 0",
        "service.tick_interval_s: must be greater than 0, got -1.0",
        "service.shutdown_timeout_s: must not be negative, got -2.0",
    ]


def test_master_rules_all_reported():
    text = with_node_processors("filter/node, delta_rate, node_snapshot").replace(
        "\nexporters:\n",
        textwrap.dedent(
            """
            exporters:
              master:
                endpoint: http://master.example:8080
                mode: agent
                compression: zstd
                headers: {Content-Type: text/plain}
                retry_on_failure: {multiplier: 0.5}
            """
        ),
        1,
    ).replace("exporters: [stdout]", "exporters: [master]")
    errors = load_errors(text)
    assert errors == [
        "exporters.master.retry_on_failure.multiplier: invalid value 0.5: use 1 or more",
        "exporters.master.mode: invalid mode 'agent': use one of snapshot, agent_receiver",
        "exporters.master.compression: invalid compression 'zstd': use one of gzip, none",
        "exporters.master.headers.Content-Type: the exporter sets this header itself: remove it",
    ]


def test_receiver_rules_all_reported():
    text = default_config_text().replace(
        "        endpoint: 127.0.0.1:4318\n",
        "        endpoint: 127.0.0.1:99999\n        max_request_body_size_mib: 0\n    overload_status: drop\n",
        1,
    )
    errors = load_errors(text)
    assert errors == [
        "receivers.otlp.protocols.http.endpoint: port 99999 of '127.0.0.1:99999' is out of range (0-65535); "
        "write for example 127.0.0.1:4318",
        "receivers.otlp.protocols.http.max_request_body_size_mib: 0 is too small; set at least 1",
        "receivers.otlp.overload_status: 'drop' is not supported; use one of unavailable, resource_exhausted",
    ]


def test_empty_receiver_token_names_fix():
    text = default_config_text().replace(
        "        endpoint: 127.0.0.1:4318\n", "        endpoint: 127.0.0.1:4318\n    auth:\n      bearer_token: ${env:RECEIVER_TOKEN}\n", 1
    )
    errors = load_errors(text, env={"RECEIVER_TOKEN": ""})
    assert errors == [
        "receivers.otlp.auth.bearer_token: the value is empty; set a token (if it comes from an environment "
        "variable, set that variable to the token) or remove auth"
    ]


def test_invalid_yaml_names_line():
    with pytest.raises(ConfigError) as caught:
        load_config_text("service:\n  pipelines: [a\n", source="bad.yaml")
    assert str(caught.value).startswith("bad.yaml: invalid YAML at line 3")


def test_missing_file():
    with pytest.raises(ConfigError) as caught:
        load_config("/nonexistent/otelsnap.yaml")
    assert "cannot read config file '/nonexistent/otelsnap.yaml'" in str(caught.value)


def test_yaml_merge_keys_fill_unset_options():
    from pipeline.config import parse_yaml

    errors: list = []
    raw = parse_yaml(
        "base: &b {max_series: 7, cluster_id: base}\nexample: {<<: *b, cluster_id: own}\n",
        "<test>",
        errors,
    )
    assert not errors
    assert raw["example"] == {"max_series": 7, "cluster_id": "own"}


def test_null_protocol_means_defaults(plugins):
    from pipeline.receiver import GrpcProtocolConfig

    text = """
    receivers:
      otlp:
        protocols:
          grpc:
    exporters:
      discard:
    service:
      pipelines:
        tap: {receivers: [otlp], exporters: [discard]}
    """
    config = load_config_text(textwrap.dedent(text), env={})
    protocols = config.receivers["otlp"].protocols
    assert protocols.grpc == GrpcProtocolConfig()
    assert protocols.grpc.endpoint == "127.0.0.1:4317"
    assert protocols.http is None


def test_receiver_without_protocol_is_an_error(plugins):
    errors = load_errors(
        """
        receivers:
          otlp:
            protocols: {}
        exporters:
          discard:
        service:
          pipelines:
            tap: {receivers: [otlp], exporters: [discard]}
        """
    )
    assert any(m.startswith("receivers.otlp") for m in errors), errors


def test_default_config_loads():
    config = load_config_text(default_config_text(), env={})
    assert list(config.pipelines) == ["node"]
    node = config.pipelines["node"]
    assert node.receivers == ["otlp"]
    assert node.processors == ["filter/node", "delta_rate", "node_snapshot"]
    assert node.exporters == ["stdout"]
    assert config.processors["filter/node"].type == "filter"
    protocols = config.receivers["otlp"].protocols
    assert protocols.grpc.endpoint == "127.0.0.1:4317"
    assert protocols.http.endpoint == "127.0.0.1:4318"
    assert config.service.queue_size == 64
    assert config.service.telemetry.metrics.endpoint == "127.0.0.1:8888"
    assert config.warnings == []


def test_unused_component_is_a_warning():
    text = default_config_text().replace(
        "\nexporters:\n", "\nexporters:\n  file/unused:\n    path: out.jsonl\n", 1
    )
    config = load_config_text(text, env={})
    assert config.warnings == [
        "exporters.file/unused: defined but not used in any pipeline, so it is not started"
    ]


def test_delta_rate_typo_suggests_option():
    text = default_config_text().replace("  delta_rate:\n", "  delta_rate:\n    max_stalenes_s: 60\n", 1)
    errors = load_errors(text)
    assert errors == [
        "processors.delta_rate.max_stalenes_s: unknown option 'max_stalenes_s' "
        "(did you mean 'max_staleness_s'?)"
    ]


# --- otelsnap validate as a subprocess ----------------------------------------


def run_validate(path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OTELSNAP_TEST_TOKEN"}
    return subprocess.run(
        [str(OTELSNAP), "validate", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_validate_command_good_file(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(default_config_text())
    result = run_validate(path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"config ok: {path}: 1 pipeline",
        "  node: otlp -> filter/node -> delta_rate -> node_snapshot -> stdout",
    ]


def test_validate_command_bad_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        textwrap.dedent(
            """
            processors:
              filtr/node:
            exporters:
              stdout:
                token: ${env:OTELSNAP_TEST_TOKEN}
            service:
              pipelines:
                node:
                  receivers: [otlp]
                  processors: [filtr/node, delta_rate]
            """
        )
    )
    result = run_validate(path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"config invalid: {path}: ")
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == int(lines[0].split(": ")[-1].split()[0])
    expected_starts = [
        "error: processors.filtr/node: unknown processor type 'filtr'",
        "error: exporters.stdout.token: environment variable OTELSNAP_TEST_TOKEN is not set",
        "error: service.pipelines.node.exporters: a pipeline needs at least one exporter",
        "error: service.pipelines.node.processors[1]: processor 'delta_rate' is not defined",
    ]
    for start in expected_starts:
        assert any(line.startswith(start) for line in errors), (start, errors)


# --- processor order ------------------------------------------------------------


def with_node_processors(processors: str) -> str:
    text = default_config_text()
    default = "processors: [filter/node, delta_rate, node_snapshot]"
    assert default in text
    return text.replace(default, f"processors: [{processors}]")


ORDER_ERROR = (
    "service.pipelines.node.processors: 'node_snapshot' has no delta_rate processor before it, "
    "so every rate and CPU percentage in its snapshots would be 0; put delta_rate before "
    "node_snapshot, for example [{fix}]"
)


@pytest.mark.parametrize(
    "processors, fix",
    [
        ("filter/node, node_snapshot", "filter/node, delta_rate, node_snapshot"),
        ("filter/node, node_snapshot, delta_rate", "filter/node, delta_rate, node_snapshot"),
        ("node_snapshot, filter/node", "delta_rate, node_snapshot, filter/node"),
    ],
)
def test_node_snapshot_needs_delta_rate_before(processors, fix):
    errors = load_errors(with_node_processors(processors))
    assert errors == [ORDER_ERROR.format(fix=fix)]


def test_named_delta_rate_counts_by_type():
    text = with_node_processors("filter/node, delta_rate/x, node_snapshot/y")
    text = text.replace("  delta_rate:\n", "  delta_rate/x:\n", 1)
    text = text.replace("  node_snapshot:\n", "  node_snapshot/y:\n", 1)
    config = load_config_text(text, env={})
    assert config.pipelines["node"].processors == ["filter/node", "delta_rate/x", "node_snapshot/y"]


# --- processors report every broken rule of their section -----------------------


def with_processor_options(options: str) -> str:
    """The default config with the processors section replaced by ``options``."""
    text = default_config_text()
    start = text.index("\nprocessors:\n")
    end = text.index("\nexporters:\n")
    return text[:start] + "\nprocessors:\n" + textwrap.indent(textwrap.dedent(options), "  ") + text[end:]


BROKEN_FILTER = """\
    filter/node:
      name_prefixes: [""]
      metrics:
        include_snapshot_families: false
        exclude: ["node_*", ""]
      block_devices:
        max_tracked_resources: 0
    delta_rate:
    node_snapshot:
    """

FILTER_ERRORS = [
    "processors.filter/node.block_devices.max_tracked_resources: must be a positive integer, got 0",
    "processors.filter/node.metrics.exclude[1]: expected a non-empty name or glob pattern, got ''",
    "processors.filter/node.metrics.include: no metric can pass: list names or patterns in include, "
    "or set include_snapshot_families to true",
    "processors.filter/node.name_prefixes[0]: expected a non-empty name or glob pattern, got ''",
]


def test_filter_rules_all_reported():
    errors = load_errors(with_processor_options(BROKEN_FILTER))
    assert sorted(errors) == FILTER_ERRORS


def test_filter_validate_collects_nested_errors():
    from processors.filter import BlockDevicesConfig, FilterConfig, MetricsConfig, NetworkInterfacesConfig

    config = FilterConfig(
        name_prefixes=["otel_", ""],
        metrics=MetricsConfig(include=["node_forks_total", "node_forks"], exclude=[3]),
        network_interfaces=NetworkInterfacesConfig(device_exclude="lo"),
        block_devices=BlockDevicesConfig(device_include=[""], max_tracked_resources=-1),
    )
    with pytest.raises(ConfigErrors) as caught:
        config.validate()
    assert [e.path for e in caught.value.errors] == [
        "name_prefixes[1]",
        "metrics.exclude[0]",
        "metrics.include",
        "network_interfaces.device_exclude",
        "block_devices.device_include[0]",
        "block_devices.max_tracked_resources",
    ]


def test_delta_rate_rules_all_reported():
    errors = load_errors(
        with_processor_options(
            """\
            filter/node:
            delta_rate:
              gauges_as_counters: [node_vmstat_*, ""]
              jitter_max_ratio: 1.5
              boot_time_tolerance_s: -5
              max_series: 0
            node_snapshot:
            """
        )
    )
    assert errors == [
        "processors.delta_rate.gauges_as_counters[1]: expected a non-empty string, got ''",
        "processors.delta_rate.jitter_max_ratio: must be at least 0 and below 1 (0.01 is 1 %), got 1.5",
        "processors.delta_rate.boot_time_tolerance_s: must not be negative, got -5.0",
        "processors.delta_rate.max_series: must be a positive integer, got 0",
    ]


def test_node_snapshot_rules_all_reported():
    errors = load_errors(
        with_processor_options(
            """\
            filter/node:
            delta_rate:
            node_snapshot:
              scrape_time_tolerance_s: -1
              node_expiry_s: 2
              max_nodes: 0
            """
        )
    )
    # node_expiry_s (2) is not longer than the default scrape_wait_s (5).
    assert errors == [
        "processors.node_snapshot.scrape_time_tolerance_s: must be a number of seconds >= 0, got -1.0",
        "processors.node_snapshot.node_expiry_s: must be longer than scrape_wait_s (5.0), got 2.0",
        "processors.node_snapshot.max_nodes: must be an integer >= 1, got 0",
    ]


def test_node_snapshot_invalid_wait_reported_once():
    errors = load_errors(
        with_processor_options(
            """\
            filter/node:
            delta_rate:
            node_snapshot:
              scrape_wait_s: -1
              node_expiry_s: 0.5
            """
        )
    )
    assert errors == ["processors.node_snapshot.scrape_wait_s: must be a number of seconds >= 0, got -1.0"]


def test_validate_command_processor_rules(tmp_path):
    path = tmp_path / "processors.yaml"
    path.write_text(
        with_processor_options(
            BROKEN_FILTER.replace(
                "    delta_rate:\n",
                "    delta_rate:\n      max_staleness_s: 0\n      jitter_max_ratio: -0.1\n",
            ).replace("    node_snapshot:\n", "    node_snapshot:\n      max_nodes: 0\n")
        )
    )
    result = run_validate(path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == f"config invalid: {path}: 7 errors"
    assert sorted(lines[1:]) == sorted(
        ["error: " + e for e in FILTER_ERRORS]
        + [
            "error: processors.delta_rate.jitter_max_ratio: must be at least 0 and below 1 (0.01 is 1 %), got -0.1",
            "error: processors.delta_rate.max_staleness_s: must be a positive number of seconds, got 0.0",
            "error: processors.node_snapshot.max_nodes: must be an integer >= 1, got 0",
        ]
    )
