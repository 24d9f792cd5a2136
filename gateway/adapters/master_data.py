"""Master data that several sources feed (Patient, Organization, Practitioner, PractitionerRole), merged
field by field, each field by the time of the source event that gave its value (docs/adapters/
master-data.md).

A field is a top-level element (`name`, `telecom`, `address`, `birthDate`, `active`, …, and each
resource-level extension by its url), except that the municipality code of the home address (extension
municipality-code on `address[0]`) is a field of its own: a record carrying a street but no code, or a
code but no street, never erases the other. For each field the resource keeps the event time of the source
record that gave its value (extension field-event-time, one per event time, listing its fields: the
order's `skapad`, the HL7 message's EVN-2). A record's value for a field replaces the held one when no time
is held for the field or the record's event is as new or newer (a value equal to the held one moves a
Patient field's time to the newer event, and changes nothing of another type: `CONFIRMED`); a source
without event times (a register row) only fills fields without a value. A field the record carries no
value for is left alone and its time stays, so a record without demographics (a register row, a message
without PID-11) never blocks a later one that has them. Identifiers and profiles are united, never
replaced.

Stored resources from before (one resource-level extension source-event-time, and the address's
municipality code under the url …/StructureDefinition/kommunkod that the HL7 v2 mapping used) are read
as such: the old time counts for every field that has a value, and the old url as the municipality code
(if both urls are on an address, the old one's value: it was written last). `normalized` gives a resource
in the current form (`gateway master-data normalize`, docs/operations.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.model.types import Json

BASE = "https://fhir.home-device-gateway.se"
EXT = f"{BASE}/StructureDefinition"
FIELD_TIME = f"{EXT}/field-event-time"
OLD_EVENT_TIME = f"{EXT}/source-event-time"
MUNICIPALITY_CODE = f"{EXT}/municipality-code"
OLD_MUNICIPALITY_CODE = f"{EXT}/kommunkod"
MUNICIPALITY = "address.municipality-code"  # the field of the home address's municipality code
NOT_FIELDS = ("resourceType", "id", "meta", "text", "identifier", "extension")
# A Patient's field keeps the time of the newest event that gave its value, also when that event repeated
# the held value (so the result does not depend on the order records arrive in); the other types keep the
# time of the event that changed it: every order names the device unit, which would otherwise get a new
# version with every newer order.
CONFIRMED = ("Patient",)
BOOKKEEPING = (FIELD_TIME, OLD_EVENT_TIME)  # resource-level extensions that are not fields


def parse_datetime(value: Any) -> datetime | None:
    """An ISO date-time with an explicit offset, or None."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


# -- a resource as fields ------------------------------------------------------------------------------


def _has_value(value: Any) -> bool:
    return value not in (None, "", [], {})


def _is_code(extension: Any) -> bool:
    return isinstance(extension, dict) and extension.get("url") in (MUNICIPALITY_CODE, OLD_MUNICIPALITY_CODE)


def _municipality(address: Json) -> Json | None:
    """The address's municipality code (its valueCoding); the old url wins when both are there."""
    codes = [
        e for e in address.get("extension", []) if _is_code(e) and isinstance(e.get("valueCoding"), dict)
    ]
    codes.sort(key=lambda e: e.get("url") == OLD_MUNICIPALITY_CODE)
    return dict(codes[-1]["valueCoding"]) if codes else None


def _without_code(address: Json) -> Json | None:
    """The address without its municipality code; None when nothing but its use and type is left."""
    rest = {k: v for k, v in address.items() if k != "extension"}
    others = [e for e in address.get("extension", []) if not _is_code(e)]
    if others:
        rest["extension"] = others
    return rest if any(_has_value(v) for k, v in rest.items() if k not in ("use", "type")) else None


def fields(resource: Json) -> dict[str, Any]:
    """The resource's fields that have a value (see the module's docstring)."""
    found: dict[str, Any] = {k: v for k, v in resource.items() if k not in NOT_FIELDS and _has_value(v)}
    addresses = resource.get("address")
    if resource.get("resourceType") == "Patient" and isinstance(addresses, list) and addresses:
        home = addresses[0] if isinstance(addresses[0], dict) else {}
        code = _municipality(home)
        kept = [_without_code(home), *addresses[1:]]
        found.pop("address", None)
        if any(a is not None for a in kept):
            found["address"] = [a if a is not None else {} for a in kept]
        if code is not None:
            found[MUNICIPALITY] = code
    for extension in resource.get("extension", []):
        url = extension.get("url") if isinstance(extension, dict) else None
        if url and url not in BOOKKEEPING:
            found[f"extension:{url}"] = extension
    return found


def _assemble(base: Json, values: dict[str, Any]) -> Json:
    """`base` (its identifiers, meta) with exactly these fields."""
    result: Json = {k: v for k, v in base.items() if k in NOT_FIELDS and k != "extension"}
    for name, value in values.items():
        if name != MUNICIPALITY and not name.startswith("extension:"):
            result[name] = value
    code = values.get(MUNICIPALITY)
    if code is not None:
        addresses = [dict(a) for a in result.get("address") or [{}]]
        home = addresses[0] or {"use": "home"}
        extension = {"url": MUNICIPALITY_CODE, "valueCoding": code}
        addresses[0] = {**home, "extension": [*home.get("extension", []), extension]}
        result["address"] = addresses
    elif isinstance(result.get("address"), list):  # a Location's one address is left as it is
        kept = [a for a in result["address"] if a]
        if kept:
            result["address"] = kept
        else:
            del result["address"]
    extensions = [v for name, v in values.items() if name.startswith("extension:")]
    if extensions:
        result["extension"] = extensions
    return result


# -- when each field's value was given -------------------------------------------------------------


def event_times(resource: Json) -> dict[str, str]:
    """Each field's event time as the resource records it; a field with a value but none recorded gets
    the old resource-level event time, if the resource has one."""
    found: dict[str, str] = {}
    old: str | None = None
    for extension in resource.get("extension", []):
        if extension.get("url") == OLD_EVENT_TIME and isinstance(extension.get("valueDateTime"), str):
            old = extension["valueDateTime"]
        if extension.get("url") != FIELD_TIME:
            continue
        parts = extension.get("extension", [])
        time = next((p.get("valueDateTime") for p in parts if p.get("url") == "eventTime"), None)
        if isinstance(time, str):
            for part in parts:
                if part.get("url") == "field" and isinstance(part.get("valueString"), str):
                    found[part["valueString"]] = time
    if old is not None:
        for name in fields(resource):
            found.setdefault(name, old)
    return found


def _recorded(values: dict[str, Any], times: dict[str, str]) -> list[Json]:
    """The field-event-time extensions for the fields that have a value: one per event time."""
    groups: dict[str, list[str]] = {}
    for name in values:
        if name in times:
            groups.setdefault(times[name], []).append(name)
    recorded = []
    for time, names in sorted(groups.items(), key=lambda item: (parse_datetime(item[0]) is None, item[0])):
        parts: list[Json] = [{"url": "eventTime", "valueDateTime": time}]
        parts += [{"url": "field", "valueString": name} for name in sorted(names)]
        recorded.append({"url": FIELD_TIME, "extension": parts})
    return recorded


def _build(base: Json, values: dict[str, Any], times: dict[str, str]) -> Json:
    result = _assemble(base, values)
    recorded = _recorded(values, times)
    if recorded:
        result["extension"] = [*result.get("extension", []), *recorded]
    return result


# -- merging ------------------------------------------------------------------------------------------


def new_master(resource: Json, event_time: str | None) -> Json:
    """A master-data resource a source creates: each of its fields given by this event (a source without
    event times records none)."""
    values = fields(resource)
    return _build(resource, values, dict.fromkeys(values, event_time) if event_time else {})


def merge(current: Json, incoming: Json, event_time: str | None) -> Json:
    """`current` with the fields of a source's record (`incoming`, whose event happened at `event_time`;
    None for a source without event times, whose values only fill fields without one) whose held values
    are from no newer event (see the module's docstring). Gives `current` itself when nothing would
    change."""
    held, times = fields(current), event_times(current)
    when = parse_datetime(event_time)
    confirms = current.get("resourceType") in CONFIRMED
    values, changed = dict(held), False
    for name, value in fields(incoming).items():
        before = parse_datetime(times.get(name))
        if name in held and (event_time is None or (before is not None and (when is None or when < before))):
            continue  # the held value is from a newer event (or the record's time is not an event's)
        newer = when is not None and before is not None and when > before
        if name in held and held[name] == value and not (confirms and newer):
            continue  # the value held, from an event no older (another type: whatever the event)
        values[name] = value
        if event_time is None:
            times.pop(name, None)
        else:
            times[name] = event_time
        changed = True
    base = dict(current)
    identifiers = list(current.get("identifier", []))
    have = {(i.get("system"), i.get("value")) for i in identifiers}
    extra = [i for i in incoming.get("identifier", []) if (i.get("system"), i.get("value")) not in have]
    if extra:
        base["identifier"] = [*identifiers, *extra]
    profiles = list((current.get("meta") or {}).get("profile", []))
    more = [p for p in (incoming.get("meta") or {}).get("profile", []) if p not in profiles]
    if more:
        base["meta"] = {**(current.get("meta") or {}), "profile": [*profiles, *more]}
    if not changed and not extra and not more:
        return current
    return _build(base, values, times)


def dated(resource: Json, time: str) -> Json:
    """`resource` with `time` as the event time of each field that has a value but records none (a
    client's write over FHIR records none: its fields date from when it was written). Used by the HSA
    directory import, so a later write by a region client wins over an older extract (docs/adapters/
    directory.md); `resource` itself when every field has a time."""
    values, times = fields(resource), event_times(resource)
    missing = [name for name in values if name not in times]
    if not missing:
        return resource
    return _build(resource, values, {**dict.fromkeys(missing, time), **times})


def retimed(resource: Json, times: dict[str, str]) -> Json:
    """`resource` with these fields' event times replaced (the others' kept)."""
    return _build(resource, fields(resource), {**event_times(resource), **times})


def normalized(resource: Json) -> Json:
    """The resource in the current form (each field's event time in field-event-time, one municipality
    code under its current url); `resource` itself when it is in that form already."""
    rebuilt = _build(resource, fields(resource), event_times(resource))
    rebuilt.update({k: v for k, v in resource.items() if k not in rebuilt and k not in NOT_FIELDS})
    return resource if rebuilt == resource else rebuilt
