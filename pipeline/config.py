"""Load and check the configuration file; ``otelsnap validate``.

The file has the OpenTelemetry Collector's shape::

    receivers:  {otlp: {protocols: {grpc: {endpoint: 127.0.0.1:4317}}}}
    processors: {filter/node: {...}, delta_rate: {...}}
    exporters:  {master: {...}}
    service:
      pipelines:
        node: {receivers: [otlp], processors: [filter/node, delta_rate], exporters: [master]}
      telemetry: {metrics: {endpoint: 127.0.0.1:8888}, logs: {level: info}}

Component ids are ``type`` or ``type/name``; the type selects the class
(``pipeline.component.component_class``) and its ``Config`` dataclass, which
``build_dataclass`` fills from YAML. Errors name the full key path and the
fix, and loading collects every error it can find before raising.

String values may reference environment variables: ``${env:NAME}``,
``${env:NAME:-default}`` (the default applies when NAME is unset or empty),
and the Collector's shorthand ``${NAME}``. ``$$`` is a literal ``$``.
Substitution runs on parsed scalar values, so a variable's content is never
parsed as YAML syntax. A value that consists of one reference is converted
to a number or boolean when its option expects one.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from pipeline.component import ConfigError, available_types, component_class

RECEIVER_TYPES = ("otlp",)
TOP_LEVEL_KEYS = ("receivers", "processors", "exporters", "service")
LOG_LEVELS = ("debug", "info", "warning", "warn", "error")

# The type follows the Collector's rule. The name may be anything without spaces or "/".
# Processor type → (the processor type that must run before it in a
# pipeline, what goes wrong without it). Types are compared without the
# "/name" part of the id, so delta_rate/x counts as delta_rate.
PROCESSOR_PREREQUISITES = {
    "node_snapshot": ("delta_rate", "every rate and CPU percentage in its snapshots would be 0"),
}

_ID_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}(/[^\s/]+)?")
_REFERENCE = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
_REFERENCE_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):(?!-)")
_REFERENCE_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)


class ConfigErrors(ConfigError):
    """Several configuration errors found in one pass; ``errors`` lists them."""

    def __init__(self, errors: list[ConfigError]) -> None:
        first = errors[0]
        super().__init__(first.path, first.message)
        self.errors = errors

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def config_errors(error: ConfigError) -> list[ConfigError]:
    """List the single errors inside ``error``."""
    return list(getattr(error, "errors", [error]))


def raise_errors(errors: list[ConfigError]) -> None:
    """Raise the errors a validate() method collected: one ConfigError, or ConfigErrors for several."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ConfigErrors(errors)


def nested_errors(key: str, child: Any) -> list[ConfigError]:
    """Validate a nested config (None is skipped) and return its errors with ``key`` put before their paths."""
    if child is None:
        return []
    try:
        child.validate()
    except ConfigError as error:
        return [
            ConfigError(join_path(key, e.path) if e.path else key, e.message) for e in config_errors(error)
        ]
    return []


# --- service settings ---------------------------------------------------


@dataclass
class MetricsTelemetryConfig:
    """otelsnap's own metrics, served in Prometheus text format."""

    # host:port of the /metrics endpoint; "" turns it off.
    endpoint: str = "127.0.0.1:8888"

    def validate(self) -> None:
        if self.endpoint:
            check_endpoint(self.endpoint, "endpoint")


@dataclass
class LogsTelemetryConfig:
    level: str = "info"

    def validate(self) -> None:
        if self.level.lower() not in LOG_LEVELS:
            raise ConfigError(
                "level", f"invalid log level {self.level!r}; use one of debug, info, warning, error"
            )


@dataclass
class TelemetryConfig:
    metrics: MetricsTelemetryConfig = field(default_factory=MetricsTelemetryConfig)
    logs: LogsTelemetryConfig = field(default_factory=LogsTelemetryConfig)


@dataclass
class ServiceSettings:
    """The ``service`` section, except ``pipelines``."""

    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    # Max requests waiting for the worker thread. When the queue is full,
    # receivers reject new requests with a retryable status.
    queue_size: int = 64
    # Seconds between runs of the processors' timers (flush, state expiry).
    tick_interval_s: float = 1.0
    # Time limit for a graceful shutdown: draining the queue and the
    # pipelines, then letting exporters deliver or persist what they hold.
    shutdown_timeout_s: float = 10.0

    def validate(self) -> None:
        errors: list[ConfigError] = []
        if self.queue_size < 1:
            errors.append(ConfigError("queue_size", f"must be at least 1, got {self.queue_size}"))
        if not self.tick_interval_s > 0:
            errors.append(
                ConfigError("tick_interval_s", f"must be greater than 0, got {self.tick_interval_s}")
            )
        if self.shutdown_timeout_s < 0:
            errors.append(
                ConfigError("shutdown_timeout_s", f"must not be negative, got {self.shutdown_timeout_s}")
            )
        raise_errors(errors)


@dataclass
class PipelineOptions:
    """One entry under ``service.pipelines``, as written in YAML."""

    receivers: list[str] = field(default_factory=list)
    processors: list[str] = field(default_factory=list)
    exporters: list[str] = field(default_factory=list)


# --- the loaded configuration -------------------------------------------


@dataclass
class ComponentSpec:
    """A configured processor or exporter: its id, type, class and config."""

    id: str
    type: str
    cls: type
    config: Any


@dataclass
class PipelineSpec:
    name: str
    receivers: list[str]
    processors: list[str]
    exporters: list[str]


@dataclass
class Config:
    """A checked configuration; ``warnings`` lists problems that are not errors."""

    receivers: dict[str, Any]
    processors: dict[str, ComponentSpec]
    exporters: dict[str, ComponentSpec]
    pipelines: dict[str, PipelineSpec]
    service: ServiceSettings
    source: str = "<config>"
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Describe the pipelines in one line each."""
        lines = []
        for spec in self.pipelines.values():
            stages = [", ".join(spec.receivers), *spec.processors, ", ".join(spec.exporters)]
            lines.append(f"{spec.name}: " + " -> ".join(stages))
        return "\n".join(lines)


# --- loading --------------------------------------------------------------


def default_config_text() -> str:
    """Return the embedded default configuration (YAML text)."""
    return resources.files("pipeline").joinpath("defaults/otelsnap.yaml").read_text("utf-8")


def load_config(path: str | os.PathLike, env: Mapping[str, str] | None = None) -> Config:
    """Read and check the config file at ``path``; raise ConfigError on problems."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("", f"cannot read config file {os.fspath(path)!r}: {e.strerror or e}") from e
    return load_config_text(text, source=os.fspath(path), env=env)


def load_config_text(
    text: str, source: str = "<config>", env: Mapping[str, str] | None = None
) -> Config:
    """Parse and check configuration text; ``env`` defaults to os.environ.

    Raises ConfigError (a ConfigErrors when there are several) whose
    messages name the key path and the fix.
    """
    errors: list[ConfigError] = []
    raw = parse_yaml(text, source, errors)
    parse_error_count = len(errors)
    raw = expand_env(raw, os.environ if env is None else env, "", errors)
    reference_error_count = len(errors)
    if raw is None:
        raise ConfigError("", f"{source} is empty; it needs receivers, exporters and service.pipelines")
    if not isinstance(raw, dict):
        raise ConfigError("", f"{source} must be a mapping of sections, got {describe(raw)}")
    _check_keys(raw, TOP_LEVEL_KEYS, "", errors)

    receivers = _build_receivers(_section(raw, "receivers", errors), errors)
    processors = _build_components("processor", _section(raw, "processors", errors), errors)
    exporters = _build_components("exporter", _section(raw, "exporters", errors), errors)
    service_raw = _section(raw, "service", errors)
    settings_raw = {k: v for k, v in service_raw.items() if k != "pipelines"}
    _check_keys(settings_raw, ("pipelines", *_field_names(ServiceSettings)), "service", errors)
    settings_raw = {k: v for k, v in settings_raw.items() if k in _field_names(ServiceSettings)}
    settings = _build(ServiceSettings, settings_raw, "service", errors) or ServiceSettings()
    pipelines = _build_pipelines(service_raw.get("pipelines"), errors)

    # Ids whose config had errors still count as defined, so one mistake
    # is not reported again as a missing reference.
    declared = {
        "receiver": _section(raw, "receivers", []),
        "processor": _section(raw, "processors", []),
        "exporter": _section(raw, "exporters", []),
    }
    _check_references(pipelines, declared, errors)
    _check_processor_order(pipelines, errors)
    defined = {"receiver": receivers, "processor": processors, "exporter": exporters}
    errors = _without_consequences(errors, parse_error_count, reference_error_count)
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
    return Config(
        receivers=receivers,
        processors=processors,
        exporters=exporters,
        pipelines=pipelines,
        service=settings,
        source=source,
        warnings=_unused_warnings(pipelines, defined),
    )


def _without_consequences(errors: list[ConfigError], first: int, end: int) -> list[ConfigError]:
    """Drop errors about values whose ${...} reference already failed.

    ``errors[first:end]`` are the reference errors (an unset variable). A
    failed reference becomes "", so later checks of that key would report
    the empty value again, as a missing endpoint or an invalid number.
    """
    failed_paths = {error.path for error in errors[first:end]}
    if not failed_paths:
        return errors
    return errors[:end] + [error for error in errors[end:] if error.path not in failed_paths]


def _section(raw: dict, key: str, errors: list[ConfigError]) -> dict:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        errors.append(ConfigError(key, f"expected a mapping, got {describe(value)}"))
        return {}
    return value


def _build_receivers(raw: dict, errors: list[ConfigError]) -> dict[str, Any]:
    receivers: dict[str, Any] = {}
    for component_id, options in raw.items():
        path = f"receivers.{component_id}"
        type_name = _component_type(component_id, path, errors)
        if type_name is None:
            continue
        if type_name not in RECEIVER_TYPES:
            errors.append(
                ConfigError(
                    path,
                    f"unknown receiver type {type_name!r}{_suggest(type_name, RECEIVER_TYPES)}; "
                    f"known types: {', '.join(RECEIVER_TYPES)}",
                )
            )
            continue
        try:
            from pipeline.receiver import OtlpReceiverConfig
        except ImportError as e:
            errors.append(ConfigError(path, f"cannot load receiver type 'otlp': {e}"))
            continue
        built = _build(OtlpReceiverConfig, options, path, errors)
        if built is not None:
            receivers[component_id] = built
    return receivers


def _build_components(kind: str, raw: dict, errors: list[ConfigError]) -> dict[str, ComponentSpec]:
    section = kind + "s"
    specs: dict[str, ComponentSpec] = {}
    for component_id, options in raw.items():
        path = f"{section}.{component_id}"
        type_name = _component_type(component_id, path, errors)
        if type_name is None:
            continue
        try:
            cls = component_class(kind, type_name)
        except Exception as e:  # a broken plugin or module must not hide other errors
            errors.append(
                ConfigError(path, f"cannot load {kind} type {type_name!r}: {type(e).__name__}: {e}")
            )
            continue
        if cls is None:
            known = available_types(kind)
            errors.append(
                ConfigError(
                    path,
                    f"unknown {kind} type {type_name!r}{_suggest(type_name, known)}; "
                    f"known types: {', '.join(known)} "
                    f"(other types come from packages that register the entry point group "
                    f"'otelsnap.{section}')",
                )
            )
            continue
        config = _build(cls.Config, options, path, errors)
        if config is not None:
            specs[component_id] = ComponentSpec(component_id, type_name, cls, config)
    return specs


def _component_type(component_id: Any, path: str, errors: list[ConfigError]) -> str | None:
    if not isinstance(component_id, str) or not _ID_PATTERN.fullmatch(component_id):
        errors.append(
            ConfigError(
                path,
                f"invalid component id {component_id!r}; write 'type' or 'type/name', "
                "for example 'filter/node'",
            )
        )
        return None
    return component_id.partition("/")[0]


def _build_pipelines(raw: Any, errors: list[ConfigError]) -> dict[str, PipelineSpec]:
    path = "service.pipelines"
    if raw is None:
        errors.append(
            ConfigError(
                path,
                "no pipelines are defined; add one, for example "
                "node: {receivers: [otlp], processors: [...], exporters: [...]}",
            )
        )
        return {}
    if not isinstance(raw, dict):
        errors.append(ConfigError(path, f"expected a mapping of pipelines, got {describe(raw)}"))
        return {}
    pipelines: dict[str, PipelineSpec] = {}
    for name, options in raw.items():
        pipeline_path = f"{path}.{name}"
        if not isinstance(name, str) or not name:
            errors.append(ConfigError(pipeline_path, "a pipeline name must be a non-empty string"))
            continue
        built = _build(PipelineOptions, options, pipeline_path, errors)
        if built is None:
            continue
        for kind in ("receivers", "exporters"):
            if not getattr(built, kind):
                errors.append(
                    ConfigError(
                        f"{pipeline_path}.{kind}",
                        f"a pipeline needs at least one {kind[:-1]}; list one or remove the pipeline",
                    )
                )
        pipelines[name] = PipelineSpec(name, built.receivers, built.processors, built.exporters)
    return pipelines


def _check_references(
    pipelines: dict[str, PipelineSpec], defined: dict[str, dict], errors: list[ConfigError]
) -> None:
    for spec in pipelines.values():
        for kind, ids in (
            ("receiver", spec.receivers),
            ("processor", spec.processors),
            ("exporter", spec.exporters),
        ):
            seen: set[str] = set()
            for index, component_id in enumerate(ids):
                path = f"service.pipelines.{spec.name}.{kind}s[{index}]"
                if component_id in seen:
                    errors.append(
                        ConfigError(
                            path,
                            f"{kind} {component_id!r} is listed twice in this pipeline; "
                            "remove the second entry (to run a component twice, define "
                            f"a second id such as '{component_id.partition('/')[0]}/second')",
                        )
                    )
                    continue
                seen.add(component_id)
                if component_id not in defined[kind]:
                    errors.append(
                        ConfigError(
                            path,
                            f"{kind} {component_id!r} is not defined"
                            f"{_suggest(component_id, defined[kind])}; define it under "
                            f"'{kind}s' or remove it from the pipeline",
                        )
                    )


def _check_processor_order(pipelines: dict[str, PipelineSpec], errors: list[ConfigError]) -> None:
    """Report processors listed without the processor they need before them."""
    for spec in pipelines.values():
        types = [_type_of(component_id) for component_id in spec.processors]
        for index, type_name in enumerate(types):
            prerequisite = PROCESSOR_PREREQUISITES.get(type_name)
            if prerequisite is None:
                continue
            required, consequence = prerequisite
            if required in types[:index]:
                continue
            component_id = spec.processors[index]
            errors.append(
                ConfigError(
                    f"service.pipelines.{spec.name}.processors",
                    f"{component_id!r} has no {required} processor before it, so {consequence}; "
                    f"put {required} before {type_name}, for example "
                    f"[{', '.join(_with_prerequisite(spec.processors, index, required))}]",
                )
            )


def _type_of(component_id: Any) -> str:
    return component_id.partition("/")[0] if isinstance(component_id, str) else ""


def _with_prerequisite(processors: list[str], index: int, required: str) -> list[str]:
    """Return ``processors`` with the ``required`` ones moved (or one added) just before ``index``."""
    before = [p for p in processors[:index] if _type_of(p) != required]
    after = [p for p in processors[index + 1:] if _type_of(p) != required]
    moved = [p for p in processors[index + 1:] if _type_of(p) == required] or [required]
    return [*before, *moved, processors[index], *after]


def _unused_warnings(pipelines: dict[str, PipelineSpec], defined: dict[str, dict]) -> list[str]:
    used = {kind: set() for kind in defined}
    for spec in pipelines.values():
        used["receiver"].update(spec.receivers)
        used["processor"].update(spec.processors)
        used["exporter"].update(spec.exporters)
    return [
        f"{kind}s.{component_id}: defined but not used in any pipeline, so it is not started"
        for kind, components in defined.items()
        for component_id in components
        if component_id not in used[kind]
    ]


# --- YAML with key paths ------------------------------------------------


def parse_yaml(text: str, source: str, errors: list[ConfigError]) -> Any:
    """Parse YAML into plain Python values; duplicate keys are errors.

    PyYAML keeps the last of two equal keys without a word, which would hide
    a second definition of a component, so this walks the node tree itself.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError("", f"{source}: invalid YAML{where}: {problem}") from e
    if root is None:
        return None
    loader = yaml.SafeLoader("")
    return _node_value(root, "", loader, errors)


def _node_value(node: yaml.Node, path: str, loader: yaml.SafeLoader, errors: list) -> Any:
    if isinstance(node, yaml.MappingNode):
        return _mapping_value(node, path, loader, errors)
    if isinstance(node, yaml.SequenceNode):
        return [
            _node_value(item, f"{path}[{i}]", loader, errors) for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


def _mapping_value(node: yaml.MappingNode, path: str, loader: yaml.SafeLoader, errors: list) -> dict:
    result: dict[Any, Any] = {}
    lines: dict[Any, int] = {}
    merged: list[yaml.Node] = []
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            merged.extend(value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node])
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, (list, dict)):
            errors.append(ConfigError(path, f"line {key_node.start_mark.line + 1}: keys must be scalars"))
            continue
        key_path = join_path(path, key)
        line = key_node.start_mark.line + 1
        if key in result:
            errors.append(
                ConfigError(
                    key_path,
                    f"defined twice (lines {lines[key]} and {line}); YAML would keep only "
                    "the last one, so remove or rename one of them",
                )
            )
            continue
        lines[key] = line
        result[key] = _node_value(value_node, key_path, loader, errors)
    # Merge keys ("<<: *defaults") fill in what the mapping does not set itself.
    for source_node in merged:
        if not isinstance(source_node, yaml.MappingNode):
            errors.append(ConfigError(path, "'<<' must refer to a mapping"))
            continue
        for key, value in _mapping_value(source_node, path, loader, errors).items():
            result.setdefault(key, value)
    return result


def join_path(path: str, key: Any) -> str:
    """Append ``key`` to a dotted key path."""
    return f"{path}.{key}" if path else str(key)


# --- ${env:VAR} substitution ----------------------------------------------


class ExpandedStr(str):
    """A string that consisted of one ``${...}`` reference.

    build_dataclass reads it as a number or boolean when the option expects
    one, so ``queue_size: ${env:QUEUE_SIZE}`` works as it does in the Collector.
    """


def expand_env(value: Any, env: Mapping[str, str], path: str, errors: list[ConfigError]) -> Any:
    """Replace environment references in every string value of ``value``."""
    if isinstance(value, str):
        return _expand_string(value, env, path, errors)
    if isinstance(value, dict):
        return {k: expand_env(v, env, join_path(path, k), errors) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, env, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    return value


def _expand_string(text: str, env: Mapping[str, str], path: str, errors: list[ConfigError]) -> str:
    if "$" not in text:
        return text
    references = 0

    def replace(match: re.Match) -> str:
        nonlocal references
        token = match.group(0)
        if token == "$$":
            return "$"
        if match.group(1) is None:
            errors.append(ConfigError(path, f"unclosed '${{' in {text!r}; close it with '}}' or write '$$' for a literal '$'"))
            return token
        references += 1
        return _resolve_reference(match.group(1), env, path, errors)

    expanded = _REFERENCE.sub(replace, text)
    whole = _REFERENCE.fullmatch(text)
    if references == 1 and whole is not None and whole.group(1) is not None:
        return ExpandedStr(expanded)
    return expanded


def _resolve_reference(body: str, env: Mapping[str, str], path: str, errors: list[ConfigError]) -> str:
    scheme = _REFERENCE_SCHEME.match(body)
    if scheme is not None and scheme.group(1) != "env":
        errors.append(
            ConfigError(
                path,
                f"unsupported reference scheme {scheme.group(1)!r} in '${{{body}}}'; "
                "otelsnap expands only environment variables: ${env:NAME}",
            )
        )
        return ""
    match = _REFERENCE_BODY.fullmatch(body[scheme.end():] if scheme else body)
    if match is None:
        errors.append(
            ConfigError(
                path,
                f"invalid reference '${{{body}}}'; write ${{env:NAME}} or ${{env:NAME:-default}} "
                "(NAME: letters, digits and '_')",
            )
        )
        return ""
    name, default = match.group("name"), match.group("default")
    value = env.get(name)
    if default is not None and not value:
        return default
    if value is None:
        errors.append(
            ConfigError(
                path,
                f"environment variable {name} is not set; set it or give a default "
                f"with ${{env:{name}:-value}}",
            )
        )
        return ""
    return value


# --- YAML -> config dataclasses -------------------------------------------


def build_dataclass(cls: type, raw: Any, path: str) -> Any:
    """Build config dataclass ``cls`` from parsed YAML, then validate() it.

    Nested dataclasses are built recursively; a ``Dataclass | None`` option
    given with a null value means "enabled with defaults", and an absent one
    keeps the field's default. Raises ConfigError naming the full key path
    (a ConfigErrors when there are several).
    """
    errors: list[ConfigError] = []
    built = _build(cls, raw, path, errors)
    if errors:
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
    return built


def _build(cls: type, raw: Any, path: str, errors: list[ConfigError]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(ConfigError(path, f"expected a mapping of options, got {describe(raw)}"))
        return None
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _type_hints(cls)
    before = len(errors)
    _check_keys(raw, list(fields), path, errors)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in fields:
            kwargs[key] = _convert(hints.get(key, Any), value, join_path(path, key), errors)
    for name, f in fields.items():
        if name not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            errors.append(ConfigError(join_path(path, name), "this option is required; set it"))
    # A nested section that failed only its validate() rules still gives an
    # object, so this section's own rules are checked and reported too.
    if any(not isinstance(error, _RuleError) for error in errors[before:]):
        return None
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        errors.append(ConfigError(path, str(e)))
        return None
    _validate(obj, path, errors)
    return obj


class _RuleError(ConfigError):
    """An error raised by a config's validate(), after its options converted."""


def _validate(obj: Any, path: str, errors: list[ConfigError]) -> None:
    validate = getattr(obj, "validate", None)
    if validate is None:
        return
    try:
        validate()
    except ConfigError as e:
        found = [
            _RuleError(join_path(path, error.path) if error.path else path, error.message)
            for error in config_errors(e)
        ]
    except ValueError as e:
        found = [_RuleError(path, str(e))]
    else:
        return
    # A parent's validate() may check its nested sections again; report each error once.
    reported = {(error.path, error.message) for error in errors}
    errors.extend(error for error in found if (error.path, error.message) not in reported)


def _check_keys(raw: dict, known: Any, path: str, errors: list[ConfigError]) -> None:
    known = list(known)
    for key in raw:
        if key in known:
            continue
        key_path = join_path(path, key)
        if not isinstance(key, str):
            errors.append(ConfigError(key_path, f"option names are strings, got {describe(key)}"))
            continue
        hint = _suggest(key, known)
        if not hint:
            hint = f"; valid options: {', '.join(known)}" if known else "; this section takes no options"
        errors.append(ConfigError(key_path, f"unknown option {key!r}{hint}"))


def _convert(tp: Any, value: Any, path: str, errors: list[ConfigError]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _convert_union(args, value, path, errors)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, errors)
    if origin in (list, tuple) or tp in (list, tuple):
        return _convert_list(tp, origin or tp, args, value, path, errors)
    if origin is dict or tp is dict:
        return _convert_dict(args, value, path, errors)
    if origin is typing.Literal:
        if value in args and not isinstance(value, bool):
            return value
        choices = ", ".join(repr(a) for a in args)
        hint = _suggest(value, [str(a) for a in args]) if isinstance(value, str) else ""
        errors.append(ConfigError(path, f"expected one of {choices}, got {describe(value)}{hint}"))
        return None
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if member.value == value:
                return member
        choices = ", ".join(repr(m.value) for m in tp)
        errors.append(ConfigError(path, f"expected one of {choices}, got {describe(value)}"))
        return None
    return _convert_scalar(tp, value, path, errors)


def _convert_union(args: tuple, value: Any, path: str, errors: list[ConfigError]) -> Any:
    members = [a for a in args if a is not type(None)]
    if value is None and len(members) < len(args):
        # A present key with a null value: a dataclass option is enabled
        # with its defaults (as `grpc:` in the Collector), a scalar is None.
        if len(members) == 1 and dataclasses.is_dataclass(members[0]):
            return _build(members[0], None, path, errors)
        return None
    if len(members) == 1:
        return _convert(members[0], value, path, errors)
    for member in members:
        attempt: list[ConfigError] = []
        converted = _convert(member, value, path, attempt)
        if not attempt:
            return converted
    names = " or ".join(_type_name(m) for m in members)
    errors.append(ConfigError(path, f"expected {names}, got {describe(value)}"))
    return None


def _convert_list(tp: Any, origin: type, args: tuple, value: Any, path: str, errors: list) -> Any:
    item_type = args[0] if args else Any
    if not isinstance(value, list):
        example = f"[{value}]" if isinstance(value, (str, int, float)) and not isinstance(value, bool) else "[]"
        errors.append(
            ConfigError(path, f"expected a list{_of(item_type)}, got {describe(value)}; write {example}")
        )
        return None
    items = [_convert(item_type, item, f"{path}[{i}]", errors) for i, item in enumerate(value)]
    return tuple(items) if origin is tuple else items


def _convert_dict(args: tuple, value: Any, path: str, errors: list[ConfigError]) -> Any:
    key_type, value_type = args if args else (Any, Any)
    if not isinstance(value, dict):
        errors.append(ConfigError(path, f"expected a mapping, got {describe(value)}"))
        return None
    result = {}
    for key, item in value.items():
        item_path = join_path(path, key)
        if key_type is str and not isinstance(key, str):
            errors.append(ConfigError(item_path, f"keys must be strings, got {describe(key)}; quote it"))
            continue
        result[key] = _convert(value_type, item, item_path, errors)
    return result


def _convert_scalar(tp: Any, value: Any, path: str, errors: list[ConfigError]) -> Any:
    if isinstance(value, ExpandedStr) and tp in (int, float, bool):
        value = _yaml_scalar(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        errors.append(ConfigError(path, f"expected true or false, got {describe(value)}"))
        return None
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        errors.append(ConfigError(path, f"expected an integer, got {describe(value)}"))
        return None
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        errors.append(ConfigError(path, f"expected a number, got {describe(value)}"))
        return None
    if tp is str:
        if isinstance(value, str):
            return str(value)
        errors.append(
            ConfigError(path, f"expected a string, got {describe(value)}; put it in quotes")
        )
        return None
    errors.append(ConfigError(path, f"options of type {_type_name(tp)} are not supported"))
    return None


def _yaml_scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return str(text)
    return value if isinstance(value, (bool, int, float)) else str(text)


_HINTS_CACHE: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    hints = _HINTS_CACHE.get(cls)
    if hints is None:
        module = sys.modules.get(cls.__module__)
        try:
            hints = typing.get_type_hints(cls, vars(module) if module else None)
        except (NameError, TypeError):
            hints = {f.name: f.type for f in dataclasses.fields(cls)}
        _HINTS_CACHE[cls] = hints
    return hints


# --- small helpers ---------------------------------------------------------


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _suggest(value: Any, candidates: Any) -> str:
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _of(item_type: Any) -> str:
    return f" of {_type_name(item_type)}s" if item_type is not Any else ""


def _type_name(tp: Any) -> str:
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if tp in names:
        return names[tp]
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def describe(value: Any) -> str:
    """Render a parsed YAML value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(str(value))
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def check_endpoint(endpoint: str, path: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 hosts in brackets); raise ConfigError if invalid."""
    host, sep, port_text = endpoint.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ConfigError(
            path, f"invalid endpoint {endpoint!r}; write host:port, for example 127.0.0.1:8888"
        )
    if int(port_text) > 65535:
        raise ConfigError(
            path,
            f"port {port_text} of {endpoint!r} is out of range (0-65535); "
            "write host:port, for example 127.0.0.1:8888",
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


# --- otelsnap validate -----------------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="config file to check (default: the embedded default configuration)",
    )


def main(args) -> int:
    """Check the config; print a summary (exit 0) or every error (exit 2)."""
    try:
        if args.config:
            config = load_config(args.config)
        else:
            config = load_config_text(default_config_text(), source="<embedded default>")
    except ConfigError as e:
        source = args.config or "<embedded default>"
        problems = config_errors(e)
        count = f"{len(problems)} error" + ("s" if len(problems) != 1 else "")
        print(f"config invalid: {source}: {count}", file=sys.stderr)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    count = len(config.pipelines)
    print(f"config ok: {config.source}: {count} pipeline{'s' if count != 1 else ''}")
    for line in config.summary().splitlines():
        print(f"  {line}")
    return 0
