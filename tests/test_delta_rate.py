"""Counter semantics of the delta_rate processor.

The normal path uses the real six-node node_exporter sample: scrape 1 is
the text as recorded, later scrapes are built in the test by changing
values by amounts chosen here, so every expected delta is known without
running the processor. Resets, jitter, reboots, staleness markers, NaN and
new series do not occur in one recorded scrape. Those tests change the real
values in the stated way or build invented points, and their comments say
which.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from pipeline import convert, decode, promtext
from pipeline.component import ComponentContext, ConfigError, Snapshot
from pipeline.model import Metric, MetricKind, ResourceMetrics
from pipeline.telemetry import Telemetry
from processors.delta_rate import DeltaRateConfig, DeltaRateProcessor

SIX_NODES = Path(__file__).parent.parent / "testdata" / "atlhyper-six-nodes" / "otel_all_nodes.txt"
TEXT = SIX_NODES.read_text()
T0 = 1_766_400_000_000_000_000
STEP_NS = 15_000_000_000
S = 1_000_000_000
DROPPED = "otelsnap_processor_dropped_points"
RESETS = "otelsnap_delta_rate_counter_resets"
POINTS = sum(1 for line in TEXT.splitlines() if line and not line.startswith("#"))

DESK_ZERO = "192.168.0.130:9100"  # nodename desk-zero in node_uname_info
RASPI_ZERO = "192.168.0.182:9100"  # nodename raspi-zero


def is_counter_name(name: str) -> bool:
    """Counters of the sample by node_exporter's naming (independent of the processor)."""
    return name.endswith("_total") or name.startswith("otel_node_vmstat_")


def increment(index: int) -> float:
    """The amount scrape k adds to counter sample ``index`` per scrape: 1 to 7."""
    return float(index % 7 + 1)


def scrape(time_ns: int, change=None, extra: str = "") -> list[ResourceMetrics]:
    """Decode the six-node text at ``time_ns``; ``change(index, sample)`` returns a new value."""
    exposition = promtext.parse(TEXT + extra)
    if change is not None:
        for index, sample in enumerate(exposition.samples):
            sample.value = change(index, sample)
    options = convert.ConvertOptions(strip_prefix="otel_")
    request = convert.exposition_to_request(exposition, time_ns, options)
    return decode.decode_request(request).batch


def advanced(k: int):
    """A change function: counters grown by k * increment(index), other samples as recorded."""

    def change(index, sample):
        if is_counter_name(sample.name):
            return sample.value + k * increment(index)
        return sample.value

    return change


def make_processor(config: DeltaRateConfig | None = None, component_id: str = "delta_rate"):
    config = config or DeltaRateConfig()
    config.validate()
    telemetry = Telemetry()
    processor = DeltaRateProcessor(config, ComponentContext(component_id=component_id, telemetry=telemetry))
    processor.start()
    return processor, telemetry


def series_key(rm: ResourceMetrics, name: str, attrs: dict[str, str]) -> tuple:
    return (rm.attrs["service.instance.id"], name, frozenset(attrs.items()))


def expected_by_series(change_index_value) -> dict[tuple, float]:
    """Map (instance, name, labels) → a value computed from each text sample."""
    out = {}
    for index, sample in enumerate(promtext.parse(TEXT).samples):
        labels = dict(sample.labels)
        instance = labels.pop("instance")
        labels.pop("job")
        name = sample.name.removeprefix("otel_")
        out[(instance, name, frozenset(labels.items()))] = change_index_value(index, sample)
    return out


def points(batch):
    """Yield (rm, metric, i) for every point."""
    for rm in batch:
        for metric in rm.metrics:
            for i in range(len(metric.values)):
                yield rm, metric, i


def find(batch, instance: str, name: str, **labels) -> tuple[Metric, int]:
    for rm in batch:
        if rm.attrs["service.instance.id"] != instance:
            continue
        for metric in rm.metrics:
            if metric.name != name:
                continue
            for i, attrs in enumerate(metric.attrs):
                if attrs == labels:
                    return metric, i
    raise AssertionError(f"no point {instance} {name} {labels}")


def resets(telemetry: Telemetry, reason: str, component: str = "delta_rate") -> float:
    return telemetry.get(RESETS, processor=component, reason=reason)


def dropped(telemetry: Telemetry, reason: str, component: str = "delta_rate") -> float:
    return telemetry.get(DROPPED, processor=component, reason=reason)


# -- six-node data: the normal path -----------------------------------------


def test_first_scrape_has_no_deltas():
    processor, _ = make_processor()
    out = processor.process(scrape(T0), T0)
    counters = 0
    for rm, metric, i in points(out):
        if is_counter_name("otel_" + metric.name):
            counters += 1
            assert metric.deltas[i] is None
            assert metric.intervals[i] is None
        else:
            assert metric.deltas is None
    assert counters == sum(1 for s in promtext.parse(TEXT).samples if is_counter_name(s.name))
    assert processor.series_count == POINTS


def test_counter_advance_gives_known_deltas():
    processor, telemetry = make_processor()
    processor.process(scrape(T0), T0)
    out = processor.process(scrape(T0 + STEP_NS, advanced(1)), T0 + STEP_NS)

    expected = expected_by_series(lambda i, s: increment(i) if is_counter_name(s.name) else None)
    checked = 0
    for rm, metric, i in points(out):
        want = expected[series_key(rm, metric.name, metric.attrs[i])]
        if want is None:
            assert metric.deltas is None
            continue
        assert metric.deltas[i] == pytest.approx(want, abs=1e-6)
        assert metric.intervals[i] == 15.0
        checked += 1
    assert checked > 1000
    assert resets(telemetry, "value_decrease") == 0
    assert resets(telemetry, "reboot") == 0


def test_desk_zero_idle_cpu_delta():
    # One series checked by hand: desk-zero cpu 0 idle, grown by 12.5 s.
    def change(index, sample):
        labels = sample.labels
        if (
            sample.name == "otel_node_cpu_seconds_total"
            and labels["instance"] == DESK_ZERO
            and labels["cpu"] == "0"
            and labels["mode"] == "idle"
        ):
            return sample.value + 12.5
        return sample.value

    processor, _ = make_processor()
    processor.process(scrape(T0), T0)
    out = processor.process(scrape(T0 + STEP_NS, change), T0 + STEP_NS)
    metric, i = find(out, DESK_ZERO, "node_cpu_seconds_total", cpu="0", mode="idle")
    assert metric.deltas[i] == pytest.approx(12.5, abs=1e-6)
    metric, i = find(out, DESK_ZERO, "node_cpu_seconds_total", cpu="0", mode="user")
    assert metric.deltas[i] == 0.0


def test_vmstat_gauges_are_counters():
    processor, _ = make_processor()
    processor.process(scrape(T0), T0)
    out = processor.process(scrape(T0 + STEP_NS, advanced(1)), T0 + STEP_NS)
    expected = expected_by_series(lambda i, s: increment(i))
    metric, i = find(out, RASPI_ZERO, "node_vmstat_pgfault")
    assert metric.kind is MetricKind.GAUGE
    assert metric.deltas[i] == pytest.approx(expected[(RASPI_ZERO, "node_vmstat_pgfault", frozenset())])
    assert metric.intervals[i] == 15.0
    load, _ = find(out, RASPI_ZERO, "node_load1")
    assert load.deltas is None
    assert load.intervals is None
    # node_netstat_* is untyped too, but not in the default list.
    estab, _ = find(out, RASPI_ZERO, "node_netstat_Tcp_CurrEstab")
    assert estab.deltas is None


def test_prom_type_counter_gauge_is_counter():
    # Invented: a Gauge whose metadata records that it was a Prometheus counter.
    processor, _ = make_processor()
    first = [one_series_rm("node_forks_total", 100.0, T0, prom_type="counter")]
    processor.process(first, T0)
    out = processor.process([one_series_rm("node_forks_total", 130.0, T0 + STEP_NS, prom_type="counter")], T0)
    assert out[0].metrics[0].deltas == [30.0]


def test_new_cpu_in_second_scrape_has_no_delta():
    # Invented: desk-zero gains cpu 8 in the second scrape (a CPU brought online).
    extra = "".join(
        f'otel_node_cpu_seconds_total{{cpu="8",instance="{DESK_ZERO}",job="node-exporter",'
        f'mode="{mode}"}} 5000\n'
        for mode in ("idle", "user")
    )
    processor, _ = make_processor()
    processor.process(scrape(T0), T0)
    out = processor.process(scrape(T0 + STEP_NS, advanced(1), extra=extra), T0 + STEP_NS)
    for mode in ("idle", "user"):
        metric, i = find(out, DESK_ZERO, "node_cpu_seconds_total", cpu="8", mode=mode)
        assert metric.deltas[i] is None
        assert metric.intervals[i] is None
    metric, i = find(out, DESK_ZERO, "node_cpu_seconds_total", cpu="7", mode="idle")
    assert metric.deltas[i] is not None
    assert metric.intervals[i] == 15.0


# -- duplicates and order -------------------------------------------------------


def test_retried_scrape_leaves_nothing():
    processor, telemetry = make_processor()
    processor.process(scrape(T0), T0)
    out = processor.process(scrape(T0), T0 + 5 * S)
    assert out == []
    assert dropped(telemetry, "duplicate") == POINTS
    assert dropped(telemetry, "out_of_order") == 0


def test_retried_split_scrape_leaves_nothing():
    # One scrape split over two Export calls, each delivered twice.
    batch = scrape(T0)
    first, second = batch[:3], batch[3:]
    processor, telemetry = make_processor()
    assert processor.process(scrape(T0)[:3], T0) != []
    assert processor.process(first, T0) == []
    assert processor.process(scrape(T0)[3:], T0) != []
    assert processor.process(second, T0) == []
    assert dropped(telemetry, "duplicate") == POINTS


def test_out_of_order_scrape_dropped():
    processor, telemetry = make_processor()
    processor.process(scrape(T0 + STEP_NS), T0)
    out = processor.process(scrape(T0), T0 + STEP_NS)
    assert out == []
    assert dropped(telemetry, "out_of_order") == POINTS
    assert dropped(telemetry, "duplicate") == 0


def test_partial_duplicate_keeps_the_rest():
    # Invented: a request carrying an old point and a new one of one series.
    processor, telemetry = make_processor()
    processor.process([one_series_rm("node_forks_total", 100.0, T0)], T0)
    metric = counter_metric("node_forks_total", [{}, {}], [T0, T0 + STEP_NS], [100.0, 110.0])
    out = processor.process([node_rm([metric])], T0)
    assert out[0].metrics[0].times == [T0 + STEP_NS]
    assert out[0].metrics[0].values == [110.0]
    assert out[0].metrics[0].deltas == [10.0]
    assert out[0].metrics[0].intervals == [15.0]
    assert dropped(telemetry, "duplicate") == 1


# -- resets and jitter (values of one real series changed) ---------------------


def desk_zero_idle(value):
    """A change function setting desk-zero cpu 0 idle to ``value(old)``."""

    def change(index, sample):
        labels = sample.labels
        if (
            sample.name == "otel_node_cpu_seconds_total"
            and labels["instance"] == DESK_ZERO
            and labels["cpu"] == "0"
            and labels["mode"] == "idle"
        ):
            return value(sample.value)
        return sample.value

    return change


def idle_value() -> float:
    metric, i = find(scrape(T0), DESK_ZERO, "node_cpu_seconds_total", cpu="0", mode="idle")
    return metric.values[i]


def test_value_drop_is_restart():
    processor, telemetry = make_processor()
    processor.process(scrape(T0), T0)
    out = processor.process(scrape(T0 + STEP_NS, desk_zero_idle(lambda v: 5.0)), T0)
    metric, i = find(out, DESK_ZERO, "node_cpu_seconds_total", cpu="0", mode="idle")
    assert metric.deltas[i] == 5.0
    assert metric.intervals[i] == 15.0
    assert resets(telemetry, "value_decrease") == 1


def test_small_dip_is_jitter_and_new_base():
    v0 = idle_value()
    dipped = v0 * 0.995  # 0.5 % below: under the 1 % limit
    processor, telemetry = make_processor()
    processor.process(scrape(T0), T0)
    out = processor.process(scrape(T0 + STEP_NS, desk_zero_idle(lambda v: dipped)), T0)
    metric, i = find(out, DESK_ZERO, "node_cpu_seconds_total", cpu="0", mode="idle")
    assert metric.deltas[i] == 0.0
    assert telemetry.get("otelsnap_delta_rate_jitter_points", processor="delta_rate") == 1
    assert resets(telemetry, "value_decrease") == 0

    # The dipped value is the new base: the next scrape's delta starts from it.
    out = processor.process(scrape(T0 + 2 * STEP_NS, desk_zero_idle(lambda v: dipped + 3.0)), T0)
    metric, i = find(out, DESK_ZERO, "node_cpu_seconds_total", cpu="0", mode="idle")
    assert metric.deltas[i] == pytest.approx(3.0, abs=1e-6)


def test_dip_over_limit_is_restart():
    v0 = idle_value()
    processor, telemetry = make_processor()
    processor.process(scrape(T0), T0)
    out = processor.process(scrape(T0 + STEP_NS, desk_zero_idle(lambda v: v0 * 0.98)), T0)
    metric, i = find(out, DESK_ZERO, "node_cpu_seconds_total", cpu="0", mode="idle")
    assert metric.deltas[i] == v0 * 0.98
    assert resets(telemetry, "value_decrease") == 1


def test_jitter_ratio_is_configurable():
    v0 = idle_value()
    processor, _ = make_processor(DeltaRateConfig(jitter_max_ratio=0.05))
    processor.process(scrape(T0), T0)
    out = processor.process(scrape(T0 + STEP_NS, desk_zero_idle(lambda v: v0 * 0.98)), T0)
    metric, i = find(out, DESK_ZERO, "node_cpu_seconds_total", cpu="0", mode="idle")
    assert metric.deltas[i] == 0.0


# -- start times (through the decoder) -------------------------------------------


def request_with_start(time_ns: int, start_ns: int, change=None) -> ExportMetricsServiceRequest:
    exposition = promtext.parse(TEXT)
    if change is not None:
        for index, sample in enumerate(exposition.samples):
            sample.value = change(index, sample)
    request = convert.exposition_to_request(
        exposition, time_ns, convert.ConvertOptions(strip_prefix="otel_")
    )
    for rm in request.resource_metrics:
        for metric in rm.scope_metrics[0].metrics:
            if metric.WhichOneof("data") == "sum":
                for dp in metric.sum.data_points:
                    dp.start_time_unix_nano = start_ns
    return request


def test_changed_start_time_is_not_reset():
    # The start time moves forward (a collector restart) while values grow.
    processor, telemetry = make_processor()
    first = request_with_start(T0, T0 - 3600 * S)
    second = request_with_start(T0 + STEP_NS, T0 + STEP_NS - 2 * S, advanced(1))
    processor.process(decode.decode_bytes(first.SerializeToString()).batch, T0)
    out = processor.process(decode.decode_bytes(second.SerializeToString()).batch, T0)
    expected = expected_by_series(lambda i, s: increment(i))
    metric, i = find(out, DESK_ZERO, "node_cpu_seconds_total", cpu="3", mode="system")
    key = (DESK_ZERO, "node_cpu_seconds_total", frozenset({"cpu": "3", "mode": "system"}.items()))
    assert metric.deltas[i] == pytest.approx(expected[key], abs=1e-6)
    assert resets(telemetry, "value_decrease") == 0
    assert resets(telemetry, "reboot") == 0


# -- points that are not samples (invented points in OTLP) ----------------------


def number_request(name: str, time_ns: int, value, flags: int = 0) -> bytes:
    """One monotonic Sum point; ``value`` None leaves the value oneof unset."""
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.add(key="service.name", value={"string_value": "node-exporter"})
    rm.resource.attributes.add(key="service.instance.id", value={"string_value": "10.0.0.9:9100"})
    metric = rm.scope_metrics.add().metrics.add()
    metric.name = name
    metric.sum.is_monotonic = True
    metric.sum.aggregation_temporality = 2  # CUMULATIVE
    dp = metric.sum.data_points.add()
    dp.attributes.add(key="device", value={"string_value": "eth0"})
    dp.time_unix_nano = time_ns
    dp.flags = flags
    if value is not None:
        dp.as_double = value
    return request.SerializeToString()


def test_non_samples_skipped_and_kept():
    name = "node_network_receive_bytes_total"
    sequence = [
        (number_request(name, T0, 1000.0), None),
        (number_request(name, T0 + 1 * STEP_NS, math.nan), None),
        (number_request(name, T0 + 2 * STEP_NS, None, flags=1), None),  # staleness marker
        (number_request(name, T0 + 3 * STEP_NS, None), None),  # unset value
        (number_request(name, T0 + 4 * STEP_NS, math.inf), None),
        (number_request(name, T0 + 5 * STEP_NS, -math.inf), None),
        (number_request(name, T0 + 6 * STEP_NS, 1600.0), 600.0),
    ]
    processor, telemetry = make_processor()
    for step, (body, want) in enumerate(sequence):
        out = processor.process(decode.decode_bytes(body).batch, T0)
        assert len(out) == 1  # the point stays in the output
        metric = out[0].metrics[0]
        assert metric.deltas == [want]
        if want is None:
            assert metric.intervals == [None]
        else:
            # Paired with the last good sample, 6 scrapes back.
            assert metric.intervals == [90.0]
    assert dropped(telemetry, "duplicate") == 0


def test_duplicate_staleness_marker_dropped():
    name = "node_network_receive_bytes_total"
    processor, telemetry = make_processor()
    processor.process(decode.decode_bytes(number_request(name, T0, None, flags=1)).batch, T0)
    out = processor.process(decode.decode_bytes(number_request(name, T0, None, flags=1)).batch, T0)
    assert out == []
    assert dropped(telemetry, "duplicate") == 1


# -- reboots -----------------------------------------------------------------------


def rebooted(boot_shift_s: float, instance: str = DESK_ZERO):
    """Counters grown as in advanced(1); ``instance``'s boot time moved by ``boot_shift_s``."""
    grow = advanced(1)

    def change(index, sample):
        if sample.name == "otel_node_boot_time_seconds" and sample.labels["instance"] == instance:
            return sample.value + boot_shift_s
        return grow(index, sample)

    return change


def counter_points_of(instance: str) -> int:
    return sum(
        1
        for s in promtext.parse(TEXT).samples
        if is_counter_name(s.name) and s.labels["instance"] == instance
    )


def test_reboot_restarts_every_counter_of_node(caplog):
    processor, telemetry = make_processor()
    processor.process(scrape(T0), T0)
    with caplog.at_level(logging.INFO, logger="otelsnap"):
        out = processor.process(scrape(T0 + STEP_NS, rebooted(3600)), T0)
    reboots = [r for r in caplog.records if r.getMessage() == "node_reboot_detected"]
    assert len(reboots) == 1
    assert reboots[0].event_fields["resource"] == (
        f"service.name=node-exporter,service.instance.id={DESK_ZERO}"
    )
    assert reboots[0].event_fields["boot_time_s"] - reboots[0].event_fields["previous_boot_time_s"] == 3600

    grown = expected_by_series(lambda i, s: s.value + increment(i))
    steps = expected_by_series(lambda i, s: increment(i))
    for rm, metric, i in points(out):
        if metric.deltas is None:
            continue
        key = series_key(rm, metric.name, metric.attrs[i])
        if rm.attrs["service.instance.id"] == DESK_ZERO:
            assert metric.deltas[i] == grown[key]  # delta = the new value
        else:
            assert metric.deltas[i] == pytest.approx(steps[key], abs=1e-6)
    assert resets(telemetry, "reboot") == counter_points_of(DESK_ZERO)
    assert telemetry.get("otelsnap_delta_rate_reboots_detected", processor="delta_rate") == 1


def test_boot_time_wobble_is_not_reboot():
    processor, telemetry = make_processor()
    processor.process(scrape(T0), T0)
    out = processor.process(scrape(T0 + STEP_NS, rebooted(30)), T0)
    steps = expected_by_series(lambda i, s: increment(i))
    metric, i = find(out, DESK_ZERO, "node_cpu_seconds_total", cpu="0", mode="idle")
    key = (DESK_ZERO, "node_cpu_seconds_total", frozenset({"cpu": "0", "mode": "idle"}.items()))
    assert metric.deltas[i] == pytest.approx(steps[key], abs=1e-6)
    assert resets(telemetry, "reboot") == 0


def test_reboot_only_for_pairs_spanning_it():
    processor, telemetry = make_processor()
    processor.process(scrape(T0), T0)
    processor.process(scrape(T0 + STEP_NS, rebooted(3600)), T0)
    # The next scrape pairs (T0+15s, T0+30s]: after the reboot, so a plain delta.
    third = scrape(T0 + 2 * STEP_NS, lambda i, s: rebooted(3600)(i, s) + (increment(i) if is_counter_name(s.name) else 0.0))
    out = processor.process(third, T0)
    steps = expected_by_series(lambda i, s: increment(i))
    metric, i = find(out, DESK_ZERO, "node_cpu_seconds_total", cpu="1", mode="user")
    key = (DESK_ZERO, "node_cpu_seconds_total", frozenset({"cpu": "1", "mode": "user"}.items()))
    assert metric.deltas[i] == pytest.approx(steps[key], abs=1e-6)
    assert resets(telemetry, "reboot") == counter_points_of(DESK_ZERO)


def split_by_boot_time(batch):
    """Split each resource into (boot-time-only, everything else) ResourceMetrics."""
    boot, rest = [], []
    for rm in batch:
        b = [m for m in rm.metrics if m.name == "node_boot_time_seconds"]
        r = [m for m in rm.metrics if m.name != "node_boot_time_seconds"]
        boot.append(ResourceMetrics(attrs=rm.attrs, metrics=b))
        rest.append(ResourceMetrics(attrs=rm.attrs, metrics=r))
    return boot, rest


def test_reboot_from_earlier_export():
    # The scrape is split: the boot time arrives one Export call before the counters.
    processor, telemetry = make_processor()
    processor.process(scrape(T0), T0)
    boot, rest = split_by_boot_time(scrape(T0 + STEP_NS, rebooted(3600)))
    processor.process(boot, T0)
    out = processor.process(rest, T0)
    metric, i = find(out, DESK_ZERO, "node_network_receive_bytes_total", device="eno1")
    assert metric.deltas[i] == metric.values[i]
    assert resets(telemetry, "reboot") == counter_points_of(DESK_ZERO)


def test_boot_time_later_in_same_batch():
    processor, telemetry = make_processor()
    processor.process(scrape(T0), T0)
    boot, rest = split_by_boot_time(scrape(T0 + STEP_NS, rebooted(3600)))
    out = processor.process(rest + boot, T0)
    metric, i = find(out, DESK_ZERO, "node_disk_read_bytes_total", device="sda")
    assert metric.deltas[i] == metric.values[i]
    assert resets(telemetry, "reboot") == counter_points_of(DESK_ZERO)


# -- invented series: helpers -------------------------------------------------------


def counter_metric(name, attrs, times, values, kind=MetricKind.SUM, prom_type="") -> Metric:
    return Metric(
        name=name,
        kind=kind,
        attrs=attrs,
        times=times,
        values=values,
        monotonic=kind is MetricKind.SUM,
        prom_type=prom_type,
    )


def node_rm(metrics, instance: str = "10.0.0.9:9100") -> ResourceMetrics:
    return ResourceMetrics(
        attrs={"service.name": "node-exporter", "service.instance.id": instance}, metrics=metrics
    )


def one_series_rm(name, value, time_ns, prom_type="", instance="10.0.0.9:9100") -> ResourceMetrics:
    kind = MetricKind.GAUGE if prom_type else MetricKind.SUM
    return node_rm([counter_metric(name, [{}], [time_ns], [value], kind, prom_type)], instance)


def test_attribute_order_does_not_split_series():
    processor, _ = make_processor()
    first = counter_metric("node_cpu_seconds_total", [{"cpu": "0", "mode": "idle"}], [T0], [10.0])
    second = counter_metric(
        "node_cpu_seconds_total", [{"mode": "idle", "cpu": "0"}], [T0 + STEP_NS], [14.0]
    )
    processor.process([node_rm([first])], T0)
    out = processor.process([node_rm([second])], T0)
    assert out[0].metrics[0].deltas == [4.0]
    assert processor.series_count == 1


def test_same_labels_other_resource_is_other_series():
    processor, _ = make_processor()
    processor.process([one_series_rm("node_forks_total", 10.0, T0, instance="10.0.0.1:9100")], T0)
    out = processor.process(
        [one_series_rm("node_forks_total", 50.0, T0 + STEP_NS, instance="10.0.0.2:9100")], T0
    )
    assert out[0].metrics[0].deltas == [None]


def test_interval_from_point_timestamps():
    processor, _ = make_processor()
    processor.process([one_series_rm("node_forks_total", 10.0, T0)], T0)
    out = processor.process([one_series_rm("node_forks_total", 12.0, T0 + 14_250_000_000)], T0 + 99 * S)
    assert out[0].metrics[0].intervals == [14.25]


def test_input_columns_and_attrs_unchanged():
    batch = scrape(T0)
    processor, _ = make_processor()
    processor.process(batch, T0)
    retry = scrape(T0)
    columns = [(c, list(c)) for rm in retry for m in rm.metrics for c in (m.attrs, m.times, m.values)]
    attrs = [(a, dict(a)) for rm in retry for m in rm.metrics for a in m.attrs]
    metric_lists = [(rm.metrics, list(rm.metrics)) for rm in retry]
    assert processor.process(retry, T0) == []
    assert all(c == copy for c, copy in columns)
    assert all(a == copy for a, copy in attrs)
    assert all(m == copy for m, copy in metric_lists)


def test_snapshots_pass_through():
    snapshot = Snapshot(kind="node", key="desk-zero", time_ns=T0, body={})
    processor, _ = make_processor()
    assert processor.process([snapshot], T0) == [snapshot]


# -- staleness and the series limit ------------------------------------------------


def test_stale_series_evicted_after_max_staleness():
    processor, telemetry = make_processor(DeltaRateConfig(max_staleness_s=300))
    now = T0
    processor.process([one_series_rm("node_forks_total", 10.0, T0, instance="10.0.0.1:9100")], now)
    processor.process(
        [one_series_rm("node_forks_total", 10.0, T0, instance="10.0.0.2:9100")], now + 200 * S
    )
    assert processor.series_count == 2

    processor.flush(now + 299 * S)
    assert processor.series_count == 2
    processor.flush(now + 301 * S)  # the first series was last seen 301 s ago
    assert processor.series_count == 1
    assert telemetry.get("otelsnap_delta_rate_series", processor="delta_rate") == 1
    processor.flush(now + 501 * S)
    assert processor.series_count == 0
    assert telemetry.get("otelsnap_delta_rate_series_evicted", processor="delta_rate") == 2

    # A series seen again after eviction starts over: no delta, no spike.
    out = processor.process(
        [one_series_rm("node_forks_total", 99.0, T0 + STEP_NS, instance="10.0.0.1:9100")],
        now + 600 * S,
    )
    assert out[0].metrics[0].deltas == [None]


def test_eviction_inside_a_kept_metric():
    # Invented: series "a" only repeats a duplicate after its first point, so
    # it goes stale while series "b" of the same metric stays fresh.
    processor, _ = make_processor(DeltaRateConfig(max_staleness_s=300))

    def request(times, values):
        metric = counter_metric(
            "node_forks_total", [{"cpu": "a"}, {"cpu": "b"}], times, values
        )
        return [node_rm([metric])]

    processor.process(request([T0, T0], [1.0, 1.0]), T0)
    processor.process(request([T0, T0 + STEP_NS], [1.0, 2.0]), T0 + 200 * S)
    processor.flush(T0 + 301 * S)
    assert processor.series_count == 1

    out = processor.process(request([T0 + 2 * STEP_NS] * 2, [5.0, 7.0]), T0 + 302 * S)
    assert out[0].metrics[0].deltas == [None, 5.0]
    assert processor.series_count == 2


def test_seen_series_not_evicted():
    processor, _ = make_processor(DeltaRateConfig(max_staleness_s=300))
    for k in range(30):
        now = T0 + k * STEP_NS
        processor.process([one_series_rm("node_forks_total", 10.0 + k, now)], now)
        processor.flush(now)
    assert processor.series_count == 1


def test_series_limit_drops_and_counts(caplog):
    processor, telemetry = make_processor(DeltaRateConfig(max_series=10), component_id="delta_rate/limit")
    with caplog.at_level(logging.WARNING, logger="otelsnap"):
        first = processor.process(scrape(T0), T0)
        second = processor.process(scrape(T0 + STEP_NS, advanced(1)), T0 + STEP_NS)
    assert processor.series_count == 10
    assert sum(len(m.values) for rm in first for m in rm.metrics) == 10
    assert sum(len(m.values) for rm in second for m in rm.metrics) == 10
    assert dropped(telemetry, "series_limit", "delta_rate/limit") == 2 * (POINTS - 10)
    warnings = [r for r in caplog.records if "series_limit_reached" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited
    assert telemetry.get("otelsnap_delta_rate_series", processor="delta_rate/limit") == 10


def test_series_limit_frees_after_eviction():
    processor, telemetry = make_processor(DeltaRateConfig(max_series=1, max_staleness_s=60))
    processor.process([one_series_rm("node_forks_total", 1.0, T0, instance="10.0.0.1:9100")], T0)
    out = processor.process([one_series_rm("node_forks_total", 1.0, T0, instance="10.0.0.2:9100")], T0)
    assert out == []
    processor.flush(T0 + 61 * S)
    out = processor.process(
        [one_series_rm("node_forks_total", 1.0, T0, instance="10.0.0.2:9100")], T0 + 61 * S
    )
    assert len(out) == 1
    assert dropped(telemetry, "series_limit") == 1


# -- config -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "path"),
    [
        (DeltaRateConfig(jitter_max_ratio=1.0), "jitter_max_ratio"),
        (DeltaRateConfig(jitter_max_ratio=-0.1), "jitter_max_ratio"),
        (DeltaRateConfig(boot_time_tolerance_s=-1), "boot_time_tolerance_s"),
        (DeltaRateConfig(max_staleness_s=0), "max_staleness_s"),
        (DeltaRateConfig(max_series=0), "max_series"),
        (DeltaRateConfig(gauges_as_counters=[""]), "gauges_as_counters[0]"),
        (DeltaRateConfig(name_prefixes="otel_"), "name_prefixes"),
    ],
)
def test_invalid_config_names_key(config, path):
    with pytest.raises(ConfigError) as err:
        config.validate()
    assert err.value.path == path


def test_gauges_as_counters_configurable():
    processor, _ = make_processor(DeltaRateConfig(gauges_as_counters=["node_netstat_*"]))
    processor.process(scrape(T0), T0)
    out = processor.process(scrape(T0 + STEP_NS, advanced(1)), T0 + STEP_NS)
    estab, _ = find(out, RASPI_ZERO, "node_netstat_Tcp_CurrEstab")
    assert estab.deltas == [0.0]  # not grown by advanced(): not a _total name
    vmstat, _ = find(out, RASPI_ZERO, "node_vmstat_pgfault")
    assert vmstat.deltas is None
