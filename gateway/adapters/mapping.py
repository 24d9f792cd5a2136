"""The adapters' mapping engine: reads the source-to-FHIR tables under mappings/<source>/ (fields.yaml:
what each source field must be and where it goes; codes.yaml: code maps), checks a source record against
them with errors named by the record's own paths (`patient.personnummer`, `rader[0].antal`), and holds what
every adapter shares: identifier systems, Swedish personal identity numbers, and the bundle builder
whose master data (Patient, Organization, Practitioner) is merged field by field (master_data.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from functools import cache
from typing import Any

import yaml

from gateway import resources
from gateway.adapters import master_data
from gateway.adapters.ids import SourceIds
from gateway.adapters.master_data import parse_datetime
from gateway.errors import Issue
from gateway.model.types import Json

BASE = "https://fhir.home-device-gateway.se"

# Identifier systems (HL7 Sweden base profiles, and this gateway's own under BASE)
PERSONNUMMER = "http://electronichealth.se/identifier/personnummer"
SAMORDNINGSNUMMER = "http://electronichealth.se/identifier/samordningsnummer"
HSA = "urn:oid:1.2.752.29.4.19"
FORSKRIVARKOD = "urn:oid:1.2.752.116.3.1.2"
HOSP_YRKE = "urn:oid:1.2.752.116.3.1.3"
ORDER = f"{BASE}/identifier/bestallningsportalen-order"
ORDER_LINE = f"{BASE}/identifier/bestallningsportalen-orderrad"
PRACTITIONER_ROLE = f"{BASE}/identifier/practitioner-role"
ISO9999 = f"{BASE}/CodeSystem/iso9999"
ARTICLE = f"{BASE}/CodeSystem/hjalpmedel-artikel"
KOMMUNKOD = f"{BASE}/CodeSystem/kommunkod"
TAGS = f"{BASE}/CodeSystem/adapter-tags"
TASK_CODES = f"{BASE}/CodeSystem/task-code"
ORDER_CODES = f"{BASE}/CodeSystem/bestallningsportalen"
REGISTER_STATUS = f"{BASE}/CodeSystem/register-status"
CAREPLAN_CATEGORY = f"{BASE}/CodeSystem/careplan-category"
SELF_CARE = f"{BASE}/CodeSystem/self-care"
EXT = f"{BASE}/StructureDefinition"
PROFILE = "http://hl7.se/fhir/ig/base/StructureDefinition/"
V3_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
RAW_TAG = {"system": TAGS, "code": "source-record", "display": "A source record kept verbatim"}
OPEN_TASK = ("draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold")


def unit_system(register: str) -> str:
    """The identifier system of a register's asset numbers (individnummer), e.g. …/individnummer/sesam."""
    return f"{BASE}/identifier/individnummer/{register.strip().lower()}"


# -- the tables ---------------------------------------------------------------------------------------


@cache
def tables(source: str) -> dict[str, Any]:
    """Every YAML file of mappings/<source>/ (GATEWAY_MAPPINGS_DIR, else the packaged tables), merged by
    top-level key."""
    merged: dict[str, Any] = {}
    for path in sorted((resources.mappings_dir() / source).glob("*.yaml")):
        merged.update(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    return merged


def code_map(source: str, name: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = tables(source)[name]
    return found


# -- personal identity numbers --------------------------------------------------------------------------

_PNR = re.compile(r"^(\d{8})-?(\d{4})$")


def luhn_ok(ten: str) -> bool:
    total = 0
    for i, char in enumerate(ten):
        digit = int(char) * (2 if i % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return total % 10 == 0


def luhn_digit(nine: str) -> str:
    """The check digit that makes `nine` + digit pass Luhn (for generating fictitious numbers)."""
    return next(str(d) for d in range(10) if luhn_ok(nine + str(d)))


def person_number(value: Any, coordination: bool = False) -> str | None:
    """The 12-digit form of a personnummer (or samordningsnummer: day + 60), or None when invalid."""
    if not isinstance(value, str):
        return None
    match = _PNR.match(value.strip())
    if not match:
        return None
    digits = match.group(1) + match.group(2)
    day = int(digits[6:8]) - (60 if coordination else 0)
    try:
        date(int(digits[:4]), int(digits[4:6]), day)
    except ValueError:
        return None
    return digits if luhn_ok(digits[2:]) else None


def person_identifier(value: Any) -> tuple[str, str] | None:
    """(identifier system, 12 digits) of a personnummer or a samordningsnummer, told apart by the day
    (a samordningsnummer's is the birth day + 60, so the two never overlap), or None when it is neither."""
    for system, coordination in ((PERSONNUMMER, False), (SAMORDNINGSNUMMER, True)):
        number = person_number(value, coordination)
        if number is not None:
            return system, number
    return None


# -- checking a source record against fields.yaml -------------------------------------------------------

_HSA = re.compile(r"^SE\d{10}-[A-Za-z0-9]{1,31}$")


def _values(node: Any, parts: list[str], path: str) -> Iterator[tuple[str, Any, bool]]:
    """(path, value, present) for each place `parts` names below `node`; `x[]` walks a list's items."""
    if not parts:
        yield path, node, True
        return
    head, rest = parts[0], parts[1:]
    if not isinstance(node, dict):
        return
    if head.endswith("[]"):
        key = head[:-2]
        items = node.get(key)
        if isinstance(items, list):
            for i, item in enumerate(items):
                yield from _values(item, rest, f"{path}{'.' if path else ''}{key}[{i}]")
        return
    where = f"{path}{'.' if path else ''}{head}"
    if head in node:
        yield from _values(node[head], rest, where)
    elif not rest:
        yield where, None, False


@cache
def _parts(name: str) -> list[str]:
    return name.split(".")


def _type_problem(spec: dict[str, Any], value: Any, codes: dict[str, Any] | None) -> str | None:
    kind = spec.get("type", "string")
    if kind == "string":
        if not isinstance(value, str) or not value.strip():
            return "must be a non-empty string"
    elif kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        return _range_problem(spec, value)
    elif kind == "decimal":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "must be a number"
        return _range_problem(spec, value)
    elif kind == "object":
        if not isinstance(value, dict):
            return "must be an object"
    elif kind == "array":
        if not isinstance(value, list):
            return "must be a list"
        if len(value) < spec.get("min_items", 0):
            return f"must have at least {spec['min_items']} item(s)"
        if "max_items" in spec and len(value) > spec["max_items"]:
            return f"must have at most {spec['max_items']} items"
    elif kind == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return "must be a list of strings"
        unknown = [v for v in value if codes is not None and v not in codes]
        if unknown:
            return f"has unknown value(s) {', '.join(map(repr, unknown))}; known: {', '.join(codes or {})}"
    elif kind == "code":
        if not isinstance(value, str) or codes is None or value not in codes:
            return f"must be one of {', '.join(codes or {})}, not {value!r}"
    elif kind == "date":
        try:
            date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else _raise()
        except (ValueError, TypeError):
            return f"must be a date YYYY-MM-DD, not {value!r}"
    elif kind == "datetime":
        parsed = parse_datetime(value)
        if parsed is None:
            return f"must be a date-time with offset (2026-11-20T09:14:00+01:00), not {value!r}"
    elif (
        kind in ("personnummer", "samordningsnummer")
        and person_number(value, kind == "samordningsnummer") is None
    ):
        return f"is not a valid {kind} (12 digits, valid date, Luhn check digit): {value!r}"
    elif kind == "person-id" and person_identifier(value) is None:
        return (
            "is neither a valid personnummer nor a valid samordningsnummer (12 digits, a valid date with "
            f"day + 60 for a samordningsnummer, Luhn check digit): {value!r}"
        )
    elif kind == "hsaid" and (not isinstance(value, str) or not _HSA.match(value)):
        return f"is not an HSA-id (SE + 10 digits + '-' + letters or digits): {value!r}"
    if isinstance(value, str) and "pattern" in spec and not re.match(spec["pattern"], value):
        return f"does not have the expected form {spec['pattern']}: {value!r}"
    return None


def _range_problem(spec: dict[str, Any], value: float) -> str | None:
    if "min" in spec and value < spec["min"]:
        return f"must be at least {spec['min']}"
    if "max" in spec and value > spec["max"]:
        return f"must be at most {spec['max']}"
    return None


def _raise() -> None:
    raise ValueError


def check(record: Any, source: str, label: str = "record") -> list[Issue]:
    """Every problem of `record` against mappings/<source>/fields.yaml, named by its path."""
    if not isinstance(record, dict):
        return [Issue("error", "structure", f"The {label} must be a JSON object", ("$",))]
    fields: dict[str, dict[str, Any]] = tables(source)["fields"]
    issues: list[Issue] = []
    bad: set[str] = set()
    for name, spec in fields.items():
        codes = code_map(source, spec["codes"]) if "codes" in spec else None
        # For a field name (`rader[].antal`), each concrete path (`rader[0].antal`) and its value.
        for path, value, present in _values(record, _parts(name), ""):
            if bad and any(path.startswith(f"{b}.") or path.startswith(f"{b}[") for b in bad):
                continue
            required = bool(spec.get("required"))
            when = spec.get("required_when")
            if when:
                required = all(_matches(record.get(k), v) for k, v in when.items())
            if not present or value is None:
                if required:
                    issues.append(Issue("error", "required", f"{path} is required", (path,)))
                    bad.add(path)
                elif "one_of" in spec and not _any_present(record, path, spec["one_of"]):
                    options = " or ".join(spec["one_of"])
                    issues.append(Issue("error", "required", f"{options} is required", (path,)))
                continue
            problem = _type_problem(spec, value, codes)
            if problem:
                code = "code-invalid" if spec.get("type") in ("code", "list") else "value"
                issues.append(Issue("error", code, f"{path} {problem}", (path,)))
                bad.add(path)
    return issues


def _matches(value: Any, wanted: Any) -> bool:
    """`required_when` names one value, or a list of values any of which makes the field required."""
    return value in wanted if isinstance(wanted, list) else bool(value == wanted)


def _any_present(record: Json, path: str, names: list[str]) -> bool:
    prefix = path.rsplit(".", 1)[0] + "." if "." in path else ""
    return any(_lookup(record, prefix + name.rsplit(".", 1)[-1]) is not None for name in names)


def _lookup(record: Any, path: str) -> Any:
    node = record
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if part.startswith("["):
            index = int(part[1:-1])
            node = node[index] if isinstance(node, list) and index < len(node) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


# -- references ---------------------------------------------------------------------------------------


def identifier_query(system: str, value: str) -> str:
    return f"identifier={system}|{value}"


def ref(reference: str, display: str | None = None) -> Json:
    """A Reference, with its display when there is one."""
    return {"reference": reference, "display": display} if display else {"reference": reference}


def agent(role: str, who: Json, **more: Json) -> Json:
    """A Provenance agent whose type is a provenance-participant-type code (author, enterer, assembler)."""
    coding = {"system": PARTICIPANT, "code": role, "display": role.capitalize()}
    return {"type": {"coding": [coding]}, "who": who, **more}


# -- master data that several sources feed (merged field by field: gateway/adapters/master_data.py) -----


def organization(hsaid: str, name: str | None = None) -> Json:
    """An Organization (HL7 Sweden SEBaseOrganization) by its HSA-id, as a source names it."""
    resource: Json = {
        "resourceType": "Organization",
        "meta": {"profile": [f"{PROFILE}SEBaseOrganization"]},
        "identifier": [{"system": HSA, "value": hsaid}],
        "active": True,
    }
    if name:
        resource["name"] = name
    return resource


def patient(system: str, number: str) -> Json:
    """A Patient (HL7 Sweden SEBasePatient) by its personnummer or samordningsnummer; a source adds what
    else it knows."""
    return {
        "resourceType": "Patient",
        "meta": {"profile": [f"{PROFILE}SEBasePatient"]},
        "identifier": [{"system": system, "value": number}],
    }


@dataclass(frozen=True)
class Found:
    """A resource read before building a Bundle: its id, version and content."""

    res_id: str
    version: int
    resource: Json


class BundleBuilder:
    """Collects one source record's transaction entries; `event` is the source event's time (None for a
    source that has none), which decides whose fields win when master data (Patient, Organization, …) is
    merged field by field (master_data.py); `ids` make the entries' ids and fullUrls (gateway/adapters/
    ids.py)."""

    def __init__(self, event: str | None, ids: SourceIds) -> None:
        self.event = event
        self.ids = ids
        self.entries: list[Json] = []
        self.targets: list[str] = []

    def entry(self, full_url: str, resource: Json, request: Json, target: bool = True) -> str:
        self.entries.append({"fullUrl": full_url, "resource": resource, "request": request})
        if target:
            self.targets.append(full_url)
        return full_url

    def master(self, resource: Json, system: str, value: str, found: Found | None) -> str:
        """Upsert master data on its identifier: merged with what is held field by field (a source lacking
        a field never erases it, master_data.py), or a conditional create; nothing when the merge changes
        nothing."""
        res_type = resource["resourceType"]
        full_url = self.ids.urn(res_type, system, value)
        if found is None:
            request = {"method": "POST", "url": res_type, "ifNoneExist": identifier_query(system, value)}
            return self.entry(full_url, master_data.new_master(resource, self.event), request)
        merged = master_data.merge(found.resource, resource, self.event)
        if merged is found.resource:
            return f"{res_type}/{found.res_id}"
        request = {"method": "PUT", "url": f"{res_type}/{found.res_id}", "ifMatch": f'W/"{found.version}"'}
        return self.entry(full_url, {**merged, "id": found.res_id}, request)
