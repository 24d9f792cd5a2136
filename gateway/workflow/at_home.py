"""The devices a patient has at home, as the gateway knows them: the one query a handover's inputs (the
HL7 v2 adapter's, and those the gateway fills in a handover a unit opens itself), return reports and the
patient's device list start from.

At home are:
- Devices whose `patient` is the patient and whose `status` is `active`;
- the devices of the patient's active DeviceUseStatements (a unit in use), and the DeviceRequests they
  were delivered for (extension `device-request`), whatever the request's status: a delivered order's
  request is `completed`, the normal state of a device at home;
- the DeviceRequests a Device at home was delivered for (the request's `assigned-unit` names one of the
  Device's identifiers), whatever their status;
- the patient's DeviceRequests of `tillbehor` orders (accessories: no unit of their own) not revoked,
  and the patient's orders still under way (`active`): their devices are coming home.

Nothing is capped: every resource of the patient is read, in pages of `PAGE` by rid, so the answer is
whole however many the patient has. Reads are the gateway's own (no visibility): callers decide what a
client may learn of the result."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, exists, false, select

from gateway.model.types import Json
from gateway.store.repository import Repository, Stored
from gateway.store.tables import ReferenceIndex, Resource, TokenIndex

BASE = "https://fhir.home-device-gateway.se"
DEVICE_REQUEST_EXT = f"{BASE}/StructureDefinition/device-request"
ASSIGNED_UNIT_EXT = f"{BASE}/StructureDefinition/assigned-unit"
ORDER_TYPE_EXT = f"{BASE}/StructureDefinition/order-type"
ACCESSORIES = "tillbehor"
ENDED_REQUESTS = frozenset({"revoked", "entered-in-error"})
PAGE = 500

REF = cast(Table, ReferenceIndex.__table__)
TOKEN = cast(Table, TokenIndex.__table__)
RES = cast(Table, Resource.__table__)


@dataclass
class AtHome:
    """What a patient has at home, each list in the order stored (by rid), each resource once."""

    patient: str
    devices: list[Stored] = field(default_factory=list)
    uses: list[Stored] = field(default_factory=list)
    requests: list[Stored] = field(default_factory=list)

    def references(self, res_type: str) -> list[str]:
        found = {"Device": self.devices, "DeviceUseStatement": self.uses, "DeviceRequest": self.requests}
        return [f"{stored.res_type}/{stored.res_id}" for stored in found[res_type]]


def local_id(reference: Any, res_type: str) -> str | None:
    """The id of a relative (or versioned) reference to `res_type`, else None."""
    if not isinstance(reference, str):
        return None
    parts = [part for part in reference.split("/") if part]
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) == 2 and parts[0] == res_type and parts[1]:
        return parts[1]
    return None


def extension_reference(resource: Json, url: str) -> Json | None:
    """The valueReference of the resource's extension `url`, if it has one."""
    for extension in resource.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == url:
            value = extension.get("valueReference")
            return value if isinstance(value, dict) else None
    return None


def request_of_use(use: Json) -> str | None:
    """The id of the DeviceRequest a DeviceUseStatement's unit was delivered for."""
    reference = extension_reference(use, DEVICE_REQUEST_EXT) or {}
    return local_id(reference.get("reference"), "DeviceRequest")


def identifiers(device: Json) -> set[tuple[str, str]]:
    return {
        (str(i.get("system")), str(i.get("value")))
        for i in device.get("identifier") or []
        if isinstance(i, dict) and i.get("system") and i.get("value")
    }


def assigned_unit(request: Json) -> tuple[str, str] | None:
    """(system, value) of the unit a DeviceRequest line was delivered as (extension assigned-unit)."""
    identifier = (extension_reference(request, ASSIGNED_UNIT_EXT) or {}).get("identifier")
    if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
        return str(identifier["system"]), str(identifier["value"])
    return None


def order_type(request: Json) -> str | None:
    for extension in request.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == ORDER_TYPE_EXT:
            return str((extension.get("valueCoding") or {}).get("code") or "") or None
    return None


def referring(
    connection: Connection,
    res_type: str,
    param: str,
    target: tuple[str, str],
    status: Iterable[str] | None = None,
) -> Iterator[Stored]:
    """Every current resource of `res_type` whose reference parameter `param` names `target` here (with
    `status`, only those whose `status` token is one of these), in pages of PAGE by rid: nothing capped."""
    after = 0
    while True:
        statement = (
            select(REF.c.rid)
            .join(RES, RES.c.rid == REF.c.rid)
            .where(
                REF.c.res_type == res_type,
                REF.c.param == param,
                REF.c.target_type == target[0],
                REF.c.target_id == target[1],
                REF.c.url.is_(None),
                RES.c.deleted == false(),
                REF.c.rid > after,
            )
            .distinct()
            .order_by(REF.c.rid)
            .limit(PAGE)
        )
        if status is not None:
            token = TOKEN.alias()
            statement = statement.where(
                exists().where(
                    and_(
                        token.c.rid == REF.c.rid,
                        token.c.param == "status",
                        token.c.code.in_(sorted(status)),
                    )
                )
            )
        rids = [int(row[0]) for row in connection.execute(statement)]
        if not rids:
            return
        yield from Repository(connection).current_many(rids)
        if len(rids) < PAGE:
            return
        after = rids[-1]


def current(connection: Connection, res_type: str, ids: Iterable[str]) -> list[Stored]:
    """The current, not deleted, resources of these ids (absent ones left out), by id."""
    found = Repository(connection).current_of([(res_type, res_id) for res_id in ids])
    return [stored for _, stored in sorted(found.items()) if not stored.deleted]


def devices_at_home(connection: Connection, patient_id: str) -> AtHome:
    """What Patient/`patient_id` has at home (the module's docstring says what counts)."""
    patient = ("Patient", patient_id)
    home = AtHome(f"Patient/{patient_id}")
    devices = {s.res_id: s for s in referring(connection, "Device", "patient", patient, ["active"])}
    found = referring(connection, "DeviceUseStatement", "subject", patient)
    uses = [stored for stored in found if stored.json().get("status") == "active"]
    home.uses = uses
    used = {local_id((s.json().get("device") or {}).get("reference"), "Device") for s in uses} - {None}
    for stored in current(connection, "Device", sorted(str(i) for i in used if i not in devices)):
        if stored.json().get("status") == "active":
            devices[stored.res_id] = stored
    home.devices = sorted(devices.values(), key=lambda s: s.rid)

    ordered = [s for s in referring(connection, "DeviceRequest", "subject", patient)]
    units = set().union(*(identifiers(d.json()) for d in home.devices)) if home.devices else set()
    requests: dict[str, Stored] = {}
    for stored in ordered:
        request = stored.json()
        status = request.get("status")
        if status == "entered-in-error":
            continue
        delivered_as = assigned_unit(request)
        if (
            (delivered_as is not None and delivered_as in units)
            or (order_type(request) == ACCESSORIES and status not in ENDED_REQUESTS)
            or status == "active"
        ):
            requests[stored.res_id] = stored
    wanted = {request_of_use(s.json()) for s in uses} - {None} - set(requests)
    for stored in current(connection, "DeviceRequest", sorted(str(i) for i in wanted)):
        requests[stored.res_id] = stored
    home.requests = sorted(requests.values(), key=lambda s: s.rid)
    return home
