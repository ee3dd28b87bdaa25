"""The ``temperature`` section of a node snapshot.

node_exporter's ``chip`` label is a device path (``platform_coretemp_0``,
``pci0000:00_0000:00:18_3``, ``thermal_thermal_zone0``); the driver name
(``coretemp``, ``k10temp``, ``zenpower``, ``cpu_thermal``) is the
``chip_name`` label of ``node_hwmon_chip_names``. Chips are recognised by
either.

``cpu_temp`` is chosen in this order:
1. Intel ``coretemp``: the package sensor (temp1), the hottest package on a
   multi-socket machine;
2. AMD ``k10temp`` / ``zenpower``: the sensor labelled ``Tdie``, else
   ``Tctl``, else temp1 (labels compared case-insensitively), the hottest
   such chip;
3. the hottest ``cpu_thermal`` / ``thermal_zone`` sensor;
4. the hottest SoC ``adc`` sensor. It comes last because on a Raspberry Pi 5
   the ADC belongs to the RP1 I/O chip, not to the CPU.
"""

from __future__ import annotations

import functools
import re

from processors.node_sources import ATTRS, HWMON, HWMON_CHIP, VALUE, Sample, Tables

_DIGITS = re.compile(r"(\d+)")


@functools.lru_cache(maxsize=4096)
def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers numerically (temp2 before temp10)."""
    return tuple(int(part) if part.isdigit() else part for part in _DIGITS.split(text))


def build_temperature(tables: Tables, missing: list[str]) -> dict:
    sensors = tables.get(HWMON, {})
    chip_names = _chip_names(tables)
    readings = []
    lacks_max = lacks_critical = False
    for chip, sensor in sorted(
        (key for key, fields in sensors.items() if "current" in fields),
        key=lambda key: (key[0], natural_key(key[1])),
    ):
        fields = sensors[(chip, sensor)]
        label = fields.get("label")
        lacks_max = lacks_max or "max" not in fields
        lacks_critical = lacks_critical or "critical" not in fields
        readings.append(
            {
                "name": chip,
                "label": label[ATTRS].get("label", sensor) if label is not None else sensor,
                "current": float(fields["current"][VALUE]),
                "max": _value(fields.get("max")),
                "critical": _value(fields.get("critical")),
            }
        )
    if readings and lacks_max:
        missing.append("temperature.max")
    if readings and lacks_critical:
        missing.append("temperature.critical")

    chosen = choose_cpu_sensor(sensors, chip_names)
    if chosen is None:
        if readings:
            missing.append("temperature.cpu_temp")
        cpu_temp = cpu_temp_max = 0.0
    else:
        cpu_temp = float(chosen["current"][VALUE])
        limit = chosen.get("max") or chosen.get("critical")
        cpu_temp_max = float(limit[VALUE]) if limit is not None else 0.0
    return {"cpu_temp": cpu_temp, "cpu_temp_max": cpu_temp_max, "sensors": readings}


def choose_cpu_sensor(
    sensors: dict[tuple[str, str], dict[str, Sample]], chip_names: dict[str, set[str]]
) -> dict[str, Sample] | None:
    """Return the fields of the sensor that stands for the CPU, or None."""
    # Sorted, so that among equally hot sensors the choice is stable.
    by_chip: dict[str, dict[str, dict[str, Sample]]] = {}
    for (chip, sensor), fields in sorted(sensors.items(), key=lambda item: item[0]):
        if "current" in fields:
            by_chip.setdefault(chip, {})[sensor] = fields

    def drivers(chip: str) -> set[str]:
        return chip_names.get(chip, set())

    intel = [
        chip_sensors["temp1"]
        for chip, chip_sensors in by_chip.items()
        if "temp1" in chip_sensors and ("coretemp" in chip or "coretemp" in drivers(chip))
    ]
    if intel:
        return _hottest(intel)

    amd = []
    for chip, chip_sensors in by_chip.items():
        if _is_amd(chip, drivers(chip)):
            found = _amd_sensor(chip_sensors)
            if found is not None:
                amd.append(found)
    if amd:
        return _hottest(amd)

    thermal = [
        fields
        for chip, chip_sensors in by_chip.items()
        if _is_thermal(chip, drivers(chip))
        for fields in chip_sensors.values()
    ]
    if thermal:
        return _hottest(thermal)

    adc = [
        fields
        for chip, chip_sensors in by_chip.items()
        if _is_adc(chip, drivers(chip))
        for fields in chip_sensors.values()
    ]
    if adc:
        return _hottest(adc)
    return None


def _chip_names(tables: Tables) -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for chip, fields in tables.get(HWMON_CHIP, {}).items():
        sample = fields.get("names")
        if sample is not None:
            names.setdefault(chip, set()).add(sample[ATTRS].get("chip_name", ""))
    return names


def _is_amd(chip: str, drivers: set[str]) -> bool:
    return any(name in chip or name in drivers for name in ("k10temp", "zenpower"))


def _is_thermal(chip: str, drivers: set[str]) -> bool:
    names = (chip, *drivers)
    return any("thermal_zone" in name or "cpu_thermal" in name for name in names)


def _is_adc(chip: str, drivers: set[str]) -> bool:
    # "1000120000_pcie_1f000c8000_adc" (device path), "rp1_adc" (driver).
    return any("adc" in name.split("_") for name in (chip, *drivers))


def _amd_sensor(chip_sensors: dict[str, dict[str, Sample]]) -> dict[str, Sample] | None:
    by_label = {}
    for sensor, fields in chip_sensors.items():
        label = fields.get("label")
        if label is not None:
            by_label.setdefault(label[ATTRS].get("label", "").lower(), fields)
    return by_label.get("tdie") or by_label.get("tctl") or chip_sensors.get("temp1")


def _hottest(candidates: list[dict[str, Sample]]) -> dict[str, Sample]:
    return max(candidates, key=lambda fields: fields["current"][VALUE])


def _value(sample: Sample | None) -> float:
    return float(sample[VALUE]) if sample is not None else 0.0
