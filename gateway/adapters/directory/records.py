"""An HSA catalogue extract, JSON lines: one unit per line, checked field by field (docs/adapters/
directory.md). A line that is not a unit is refused with the line number and the field; the others go on."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.adapters.master_data import parse_datetime
from gateway.model.types import Json, loads

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
TELECOM_SYSTEMS = ("phone", "email", "url", "fax", "sms", "other")
TELECOM_USES = ("work", "temp", "old", "mobile")
HSA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{2,63}$")
CLOCK = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$")
MAX_TEXT = 500


class Invalid(ValueError):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


@dataclass(frozen=True)
class Hours:
    days: tuple[str, ...]
    opens: str | None = None
    closes: str | None = None
    all_day: bool = False


@dataclass(frozen=True)
class Service:
    key: str
    name: str
    telecom: tuple[Json, ...] = ()
    hours: tuple[Hours, ...] = ()


@dataclass(frozen=True)
class Unit:
    line: int
    hsa_id: str
    name: str
    changed: str | None
    parent: str | None = None
    telecom: tuple[Json, ...] = ()
    hours: tuple[Hours, ...] = ()
    address: Json | None = None
    services: tuple[Service, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Refused:
    line: int
    message: str


def _text(value: Any, where: str, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise Invalid(where, "a non-empty string is required")
    if len(value) > MAX_TEXT:
        raise Invalid(where, f"at most {MAX_TEXT} characters")
    return value.strip()


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Invalid(where, "a list is required")
    return value


def _telecom(value: Any, where: str) -> tuple[Json, ...]:
    found = []
    for index, point in enumerate(_list(value, where)):
        here = f"{where}[{index}]"
        if not isinstance(point, dict):
            raise Invalid(here, "an object with system and value is required")
        system = point.get("system", "phone")
        if system not in TELECOM_SYSTEMS:
            raise Invalid(f"{here}.system", f"one of {', '.join(TELECOM_SYSTEMS)}")
        contact: Json = {"system": system, "value": _text(point.get("value"), f"{here}.value")}
        if point.get("use") is not None:
            if point["use"] not in TELECOM_USES:
                raise Invalid(f"{here}.use", f"one of {', '.join(TELECOM_USES)}")
            contact["use"] = point["use"]
        found.append(contact)
    return tuple(found)


def _hours(value: Any, where: str) -> tuple[Hours, ...]:
    found = []
    for index, item in enumerate(_list(value, where)):
        here = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise Invalid(here, "an object with days, from and to is required")
        days = _list(item.get("days"), f"{here}.days")
        if not days or any(d not in DAYS for d in days):
            raise Invalid(f"{here}.days", f"a list of {', '.join(DAYS)}")
        if item.get("allDay") is True:
            found.append(Hours(tuple(days), all_day=True))
            continue
        times = []
        for name in ("from", "to"):
            text = item.get(name)
            if not isinstance(text, str) or not CLOCK.match(text):
                raise Invalid(f"{here}.{name}", "a time hh:mm is required (or allDay: true)")
            times.append(text if len(text) == 8 else f"{text}:00")
        if times[0] >= times[1]:
            raise Invalid(f"{here}.to", "must be later than from")
        found.append(Hours(tuple(days), times[0], times[1]))
    return tuple(found)


def _address(value: Any, where: str) -> Json | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Invalid(where, "an object with line, postalCode, city is required")
    address: Json = {"use": "work", "type": "physical"}
    lines = [_text(v, f"{where}.line[{i}]") for i, v in enumerate(_list(value.get("line"), f"{where}.line"))]
    if lines:
        address["line"] = lines
    for key in ("postalCode", "city"):
        if value.get(key) is not None:
            address[key] = _text(value[key], f"{where}.{key}")
    return address


def _hsa(value: Any, where: str) -> str:
    text = _text(value, where) or ""
    if not HSA_ID.match(text):
        raise Invalid(where, "an HSA-id (letters, digits and hyphens) is required")
    return text


def unit(line: int, record: Any, default_changed: str | None) -> Unit:
    if not isinstance(record, dict):
        raise Invalid("line", "a JSON object is required")
    changed = record.get("changed", default_changed)
    if changed is not None and parse_datetime(changed) is None:
        raise Invalid("changed", "a date-time with a time zone offset is required")
    parent = record.get("parent")
    services = []
    for index, item in enumerate(_list(record.get("services"), "services")):
        here = f"services[{index}]"
        if not isinstance(item, dict):
            raise Invalid(here, "an object is required")
        name = _text(item.get("name"), f"{here}.name") or ""
        key = _text(item.get("id"), f"{here}.id", required=False) or name
        telecom, hours = (
            _telecom(item.get("telecom"), f"{here}.telecom"),
            _hours(item.get("openingHours"), f"{here}.openingHours"),
        )
        services.append(Service(key, name, telecom, hours))
    if len({s.key for s in services}) != len(services):
        raise Invalid("services", "each service needs its own id (or name)")
    return Unit(
        line,
        _hsa(record.get("hsaId"), "hsaId"),
        _text(record.get("name"), "name") or "",
        changed,
        _hsa(parent, "parent") if parent is not None else None,
        _telecom(record.get("telecom"), "telecom"),
        _hours(record.get("openingHours"), "openingHours"),
        _address(record.get("address"), "address"),
        tuple(services),
    )


def read(lines: Iterable[str], default_changed: str | None) -> Iterator[Unit | Refused]:
    """Each non-empty line as a Unit, or Refused naming the line and the field."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = loads(text)
        except ValueError as error:
            yield Refused(number, f"line {number}: not valid JSON ({error})")
            continue
        try:
            yield unit(number, record, default_changed)
        except Invalid as error:
            yield Refused(number, f"line {number}: {error}")


def parents_first(units: list[Unit]) -> list[Unit]:
    """The units ordered so a parent in the extract is written before its children (file order else)."""
    by_id = {u.hsa_id: u for u in units}

    def depth(u: Unit) -> int:
        seen, level, current = {u.hsa_id}, 0, u
        while current.parent in by_id and current.parent not in seen:
            seen.add(current.parent)
            current = by_id[current.parent]
            level += 1
        return level

    return sorted(units, key=depth)
