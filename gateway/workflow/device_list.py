"""A patient's device list (hjälpmedelsförteckning, issue 19): every device at home and what is needed to
show it, gathered as the gateway (`devices_at_home`) and then cut to what the reader may see.

The items are the Devices at home and the DeviceRequests of accessory orders (`tillbehor`) without a unit
of their own. Beside them: the requests and use statements of those devices (and orders under way), the
owners, the prescribers (PractitionerRole, Practitioner, their unit), the units' services and locations
(who to call and when: `telecom`, `availableTime`, `hoursOfOperation`), the parents of those units, the
self-care assessments the requests name (`supportingInfo`), the patient's open Tasks and active Flags.
Each is kept only when the reader may read it (the policy's visibility), but the self-care assessments
named by a listed request, and the next follow-up and next control and cleaning of each item, dates only
(set by the operation as the scheduler plans them: `next_follow_ups`, `next_controls`), which the list
shows to every reader who sees the list: the named exception "the device list" (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Connection, select
from sqlalchemy import false as sql_false

from gateway.model.types import Json
from gateway.store.repository import Repository, Stored
from gateway.store.tables import Resource, TokenIndex
from gateway.store.visibility import Visibility, visible_keys
from gateway.workflow.at_home import (
    ACCESSORIES,
    assigned_unit,
    devices_at_home,
    identifiers,
    local_id,
    order_type,
    referring,
    request_of_use,
)

BASE = "https://fhir.home-device-gateway.se"
SELF_CARE = f"{BASE}/CodeSystem/self-care"
FLAG_DETAIL = "http://hl7.org/fhir/StructureDefinition/flag-detail"
OPEN_TASKS = frozenset({"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"})
MASTER = ("Organization", "HealthcareService", "Location", "PractitionerRole", "Practitioner")
# What each master type points at that the list shows (a unit's parent, a role's person and unit).
MASTER_LINKS = {
    "Organization": ("partOf",),
    "HealthcareService": ("providedBy", "location"),
    "Location": ("managingOrganization",),
    "PractitionerRole": ("practitioner", "organization", "location", "healthcareService"),
    "Practitioner": (),
}
TOKEN = TokenIndex.__table__
RES = Resource.__table__


@dataclass
class Gathered:
    """What the list is made of, each resource once, in the order found."""

    patient: Stored
    patient_json: Json = field(default_factory=dict)  # as the reader may see it
    items: list[Stored] = field(default_factory=list)
    by_key: dict[str, Json] = field(default_factory=dict)  # "Type/id" → resource, the reader may see
    included: list[str] = field(default_factory=list)  # "Type/id" of the included entries, in order
    disclosed: list[str] = field(default_factory=list)  # shown under the named exception
    requests_of: dict[str, list[str]] = field(default_factory=dict)  # item → its DeviceRequests
    uses_of: dict[str, list[str]] = field(default_factory=dict)  # Device → its DeviceUseStatements
    # set by the operation as the scheduler plans them (gateway/fhir/device_list.py, named exception):
    follow_up_of: dict[str, str] = field(default_factory=dict)  # item → next follow-up date
    control_of: dict[str, str] = field(default_factory=dict)  # Device → next control and cleaning date
    tasks: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    flag_details: dict[str, Json] = field(default_factory=dict)  # Flag → its RiskAssessment, if readable

    def get(self, reference: object) -> Json | None:
        """The resource a Reference (relative, or by identifier to a known one) points at, if shown."""
        if not isinstance(reference, dict):
            return None
        target = reference.get("reference")
        if isinstance(target, str):
            parts = [p for p in target.split("/") if p]
            if len(parts) >= 4 and parts[-2] == "_history":
                parts = parts[:-2]
            return self.by_key.get("/".join(parts[-2:])) if len(parts) >= 2 else None
        identifier = reference.get("identifier")
        if isinstance(identifier, dict):
            wanted = (identifier.get("system"), identifier.get("value"))
            for resource in self.by_key.values():
                if wanted in identifiers(resource) and resource.get("resourceType") in MASTER:
                    return resource
        return None

    def of_type(self, res_type: str) -> list[Json]:
        return [r for key, r in self.by_key.items() if key.startswith(f"{res_type}/")]


def _key(stored: Stored) -> str:
    return f"{stored.res_type}/{stored.res_id}"


def _target(reference: object) -> tuple[str, str] | None:
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    parts = [p for p in str(reference["reference"]).split("/") if p]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return (parts[-2], parts[-1]) if len(parts) >= 2 else None


def _references(resource: Json, elements: Iterable[str]) -> list[object]:
    found: list[object] = []
    for element in elements:
        value = resource.get(element)
        found.extend(value if isinstance(value, list) else [value] if value is not None else [])
    return found


def by_identifier(connection: Connection, res_type: str, system: str, value: str) -> Stored | None:
    """The current resource of `res_type` with this identifier (the first stored, when several)."""
    statement = (
        select(TOKEN.c.rid)
        .join(RES, RES.c.rid == TOKEN.c.rid)
        .where(
            TOKEN.c.res_type == res_type,
            TOKEN.c.param == "identifier",
            TOKEN.c.system == system,
            TOKEN.c.code == value,
            RES.c.deleted == sql_false(),
        )
        .order_by(TOKEN.c.rid)
        .limit(1)
    )
    rids = [int(row[0]) for row in connection.execute(statement)]
    found = Repository(connection).current_many(rids)
    return found[0] if found else None


class Gatherer:
    def __init__(
        self, connection: Connection, visibility: Visibility, patient: Stored, disclose: bool = True
    ) -> None:
        self.connection = connection
        self.disclose = disclose
        self.visibility = visibility
        self.found = Gathered(patient, patient.json())
        self.pending: dict[str, Stored] = {}

    def visible(self, stored: Iterable[Stored]) -> list[Stored]:
        candidates = [s for s in stored if not s.deleted]
        if self.visibility.everything or not candidates:
            return candidates
        keys = visible_keys(self.connection, self.visibility, [(s.res_type, s.res_id) for s in candidates])
        return [s for s in candidates if (s.res_type, s.res_id) in keys]

    def add(self, stored: Iterable[Stored], disclosed: bool = False) -> None:
        chosen = [s for s in stored if not s.deleted] if disclosed else self.visible(stored)
        for s in chosen:
            key = _key(s)
            if key in self.found.by_key:
                continue
            self.found.by_key[key] = s.json()
            self.found.included.append(key)
            if disclosed:
                self.found.disclosed.append(key)

    def load(self, targets: Iterable[tuple[str, str]]) -> list[Stored]:
        wanted = sorted({t for t in targets if f"{t[0]}/{t[1]}" not in self.found.by_key})
        found = Repository(self.connection).current_of(wanted)
        return [s for _, s in sorted(found.items()) if not s.deleted]

    def gather(self) -> Gathered:
        patient_id = self.found.patient.res_id
        home = devices_at_home(self.connection, patient_id)
        self._items(home.devices, home.uses, home.requests)
        target = ("Patient", patient_id)
        tasks = [s for s in referring(self.connection, "Task", "patient", target, OPEN_TASKS)]
        tasks = [s for s in self.visible(tasks) if s.json().get("status") in OPEN_TASKS]
        self.add(tasks)
        self.found.tasks = [_key(s) for s in tasks]
        self._masters()  # after the Tasks: their owners are shown with them
        flags = [s for s in referring(self.connection, "Flag", "patient", target)]
        flags = [s for s in self.visible(flags) if s.json().get("status") == "active"]
        self.add(flags)
        self.found.flags = [_key(s) for s in flags]
        self._flag_details(flags)
        return self.found

    def _flag_details(self, flags: list[Stored]) -> None:
        """The RiskAssessment each Flag points at (`flag-detail`), for the fired rules' explanations, when
        the reader may read it (shown in the narrative only, not included: its `basis` is per reader)."""
        detail_of: dict[str, tuple[str, str]] = {}
        for flag in flags:
            for extension in flag.json().get("extension") or []:
                if isinstance(extension, dict) and extension.get("url") == FLAG_DETAIL:
                    target = _target(extension.get("valueReference"))
                    if target is not None and target[0] == "RiskAssessment":
                        detail_of[_key(flag)] = target
        found = Repository(self.connection).current_of(sorted(set(detail_of.values())))
        readable = {(s.res_type, s.res_id): s for s in self.visible(found.values())}
        for flag_key, target in detail_of.items():
            if target in readable:
                self.found.flag_details[flag_key] = readable[target].json()

    def _items(self, devices: list[Stored], uses: list[Stored], requests: list[Stored]) -> None:
        found = self.found
        devices, uses, requests = self.visible(devices), self.visible(uses), self.visible(requests)
        units = {_key(d): identifiers(d.json()) for d in devices}
        for use in uses:
            device = local_id((use.json().get("device") or {}).get("reference"), "Device")
            if device is not None:
                found.uses_of.setdefault(f"Device/{device}", []).append(_key(use))
                line = request_of_use(use.json())
                if line is not None and any(_key(r) == f"DeviceRequest/{line}" for r in requests):
                    found.requests_of.setdefault(f"Device/{device}", []).append(f"DeviceRequest/{line}")
        linked: set[str] = {r for rs in found.requests_of.values() for r in rs}
        for request in requests:
            unit = assigned_unit(request.json())
            for device_key, ids in units.items():
                if unit is not None and unit in ids:
                    mine = found.requests_of.setdefault(device_key, [])
                    if _key(request) not in mine:
                        mine.append(_key(request))
                    linked.add(_key(request))
        found.items = [*devices]
        for request in requests:
            if _key(request) not in linked and order_type(request.json()) == ACCESSORIES:
                found.items.append(request)
                found.requests_of[_key(request)] = [_key(request)]
        self.add(devices)
        self.add(requests)
        self.add(uses)
        # The self-care assessments the listed requests name: shown with the list (named exception).
        named = [
            t
            for r in requests
            for ref in r.json().get("supportingInfo") or []
            if (t := _target(ref)) is not None and t[0] == "Observation"
        ]
        assessments = [s for s in self.load(named) if _is_self_care(s.json())]
        self.add(self.visible(assessments))
        if self.disclose:
            self.add(assessments, disclosed=True)

    def _masters(self) -> None:
        """The master data the items name, and what that names (a role's person and unit, a unit's
        parent), and each unit's services and locations (who to call, when): public, so all shown."""
        elements = {
            "Device": ("owner", "location"),
            "DeviceRequest": ("requester", "performer"),
            "DeviceUseStatement": (),
            "Observation": ("performer",),
            "Task": ("owner",),
        }
        sources = [(key.split("/")[0], r) for key, r in self.found.by_key.items()]
        refs = [ref for t, r in sources for ref in _references(r, elements.get(t, ()))]
        for _ in range(4):  # role → unit → parent: a few levels at most
            targets = [t for ref in refs if (t := _target(ref)) is not None and t[0] in MASTER]
            logical = [self._by_identifier(ref) for ref in refs if _target(ref) is None]
            loaded = [*self.load(targets), *[s for s in logical if s is not None]]
            fresh = [s for s in self.visible(loaded) if _key(s) not in self.found.by_key]
            if not fresh:
                break
            self.add(fresh)
            refs = [ref for s in fresh for ref in _references(s.json(), MASTER_LINKS[s.res_type])]
        units = [key for key in self.found.by_key if key.startswith("Organization/")]
        for unit in units:
            target = ("Organization", unit.split("/")[1])
            self.add(referring(self.connection, "HealthcareService", "organization", target))
            self.add(referring(self.connection, "Location", "organization", target))

    def _by_identifier(self, reference: object) -> Stored | None:
        identifier = reference.get("identifier") if isinstance(reference, dict) else None
        kind = reference.get("type") if isinstance(reference, dict) else None
        if not isinstance(identifier, dict) or not identifier.get("system") or not identifier.get("value"):
            return None
        res_type = kind if isinstance(kind, str) and kind in MASTER else "Organization"
        return by_identifier(self.connection, res_type, str(identifier["system"]), str(identifier["value"]))


def _is_self_care(resource: Json) -> bool:
    codings = (resource.get("code") or {}).get("coding") or []
    return any(c.get("system") == SELF_CARE and c.get("code") == "assessment" for c in codings)


def gather(
    connection: Connection, visibility: Visibility, patient: Stored, disclose: bool = True
) -> Gathered:
    """The device list of `patient` as a reader with `visibility` is shown it; with `disclose` (its
    scopes let it read Observations), the self-care assessments of the named exception too."""
    return Gatherer(connection, visibility, patient, disclose).gather()
