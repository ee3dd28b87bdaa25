"""The ``cpu`` section of a node snapshot.

Usage comes from the deltas of ``node_cpu_seconds_total{cpu,mode}`` over
the eight modes below (guest time is a separate metric and already counted
in user and nice). A CPU with a first sample in any mode has no delta yet,
as for a CPU that just appeared. Its ``per_core`` entry is 0 and it is left
out of the node's totals, so a new CPU never causes a spike.
"""

from __future__ import annotations

import functools

from processors.node_sources import (
    CPU,
    CPU_FREQUENCY,
    CPU_INFO,
    DELTA,
    NODE,
    VALUE,
    Tables,
    float_of,
    percent,
)

CPU_MODES = ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user")
LOAD_FIELDS = (("load1", "load_1"), ("load5", "load_5"), ("load15", "load_15"))


@functools.lru_cache(maxsize=4096)
def cpu_sort_key(cpu_id: object) -> tuple:
    """Order CPU ids numerically ("2" before "10"); ids that are not numbers go last."""
    text = str(cpu_id)
    if text.isdigit():
        return (0, int(text), "")
    return (1, 0, text)


def build_cpu(tables: Tables, missing: list[str]) -> dict:
    cpus = tables.get(CPU, {})
    node = tables.get(NODE, {}).get(None, {})
    cpu_ids = sorted(cpus, key=cpu_sort_key)

    total = idle = user = system = iowait = 0.0
    per_core: list[float] = []
    for cpu_id in cpu_ids:
        deltas = _mode_deltas(cpus[cpu_id])
        if deltas is None:
            per_core.append(0.0)
            continue
        core_total = sum(deltas.values())
        core_idle = deltas.get("idle", 0.0)
        per_core.append(percent(core_total - core_idle, core_total))
        total += core_total
        idle += core_idle
        user += deltas.get("user", 0.0)
        system += deltas.get("system", 0.0)
        iowait += deltas.get("iowait", 0.0)
    if not cpus:
        missing.append("cpu.usage_percent")

    for source, field in LOAD_FIELDS:
        if source not in node:
            missing.append(f"cpu.{field}")

    return {
        "usage_percent": percent(total - idle, total),
        "user_percent": percent(user, total),
        "system_percent": percent(system, total),
        "idle_percent": percent(idle, total),
        "iowait_percent": percent(iowait, total),
        "per_core": per_core,
        "load_1": float_of(node, "load1"),
        "load_5": float_of(node, "load5"),
        "load_15": float_of(node, "load15"),
        "model": _model(tables, missing),
        "cores": len(cpu_ids),
        "threads": len(cpu_ids),
        "frequency": _frequency_mhz(tables, missing),
    }


def _mode_deltas(modes: dict) -> dict[str, float] | None:
    """Return the non-negative delta of each mode, or None when one has no delta."""
    deltas: dict[str, float] = {}
    for mode in CPU_MODES:
        sample = modes.get(mode)
        if sample is None:
            continue
        delta = sample[DELTA]
        if delta is None:
            return None
        deltas[mode] = delta if delta > 0 else 0.0
    return deltas


def _frequency_mhz(tables: Tables, missing: list[str]) -> float:
    frequencies = [
        fields["hertz"][VALUE]
        for fields in tables.get(CPU_FREQUENCY, {}).values()
        if "hertz" in fields
    ]
    if not frequencies:
        missing.append("cpu.frequency")
        return 0.0
    return sum(frequencies) / len(frequencies) / 1e6


def _model(tables: Tables, missing: list[str]) -> str:
    infos = tables.get(CPU_INFO, {})
    for cpu_id in sorted(infos, key=cpu_sort_key):
        sample = infos[cpu_id].get("info")
        if sample is not None:
            name = sample[3].get("model_name", "")
            if name:
                return name
    missing.append("cpu.model")
    return ""
