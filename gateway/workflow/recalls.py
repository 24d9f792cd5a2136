"""Reaction: a recall also informs the municipality that handles the unit (issue 18; docs/workflow.md).

The device register adapter makes a `recall-device` Task to the owner and a message to the prescriber
(gateway/adapters/device_register/to_fhir.py). When such a Task is created by a trusted writer (the
adapter, a region-wide client; the Task is read as stored, `writer` None), the units that handle the unit
at the patient get a Swedish Communication (category `device-register-task|recall-device`): the owners of
the patient's `handover` Tasks that carry the unit (an input naming the Device, its use or the request it
was delivered for) and were not rejected, cancelled or entered in error, the owners of Tasks with the
Device as focus of the kinds a municipality carries out (`control-cleaning`), and the units registered as
providing personal care for the patient (a completed `personal-care` Task's owner, a member of an
active `personal-care` CareTeam a region-wide client wrote: gateway/schedule/control_units.py); of these,
the municipal ones: an Organization (or the provider of a HealthcareService) whose HSA-id carries a
municipality's organisation number (`SE2120…`: Swedish municipalities' organisationsnummer begin 212000;
primary care that was handed the devices too is not told). Never the owner itself, and never a unit the
gateway stored no such Task or CareTeam for: a recall discloses nothing to anyone else."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.model.types import Json
from gateway.search.dates import to_instant
from gateway.workflow.at_home import request_of_use
from gateway.workflow.prescribers import Links, split

if TYPE_CHECKING:
    from gateway.pipeline import UnitOfWork, WritePath
    from gateway.store.repository import Stored

BASE = "https://fhir.home-device-gateway.se"
REGISTER_TASK = f"{BASE}/CodeSystem/device-register-task"
HANDOVER = (f"{BASE}/CodeSystem/care-transition-task", "handover")
MUNICIPAL_FOCUS = ((f"{BASE}/CodeSystem/task-code", "control-cleaning"),)
PERSONAL_CARE = (f"{BASE}/CodeSystem/task-code", "personal-care")
CARE_TEAM = (f"{BASE}/CodeSystem/careteam-category", "personal-care")
GONE = ("rejected", "cancelled", "entered-in-error", "failed")
LIMIT = 10_000
HSA = "urn:oid:1.2.752.29.4.19"
MUNICIPAL = re.compile(r"^SE2120\d{6}")  # HSA-id of a unit of a municipality (organisationsnummer 2120…)


def _coded(task: Json, system: str, code: str) -> bool:
    codings = (task.get("code") or {}).get("coding") or []
    return any(isinstance(c, dict) and c.get("system") == system and c.get("code") == code for c in codings)


def _unit_refs(links: Links, device_ref: str) -> set[str]:
    """The Device, its uses and the requests it was delivered for: what a handover's inputs may name."""
    key = split(device_ref)
    assert key is not None
    found = {device_ref}
    for use in links.referring("DeviceUseStatement", "device", key):
        found.add(f"DeviceUseStatement/{use.get('id')}")
        request = request_of_use(use)
        if request:
            found.add(f"DeviceRequest/{request}")
    return found


def handlers(uow: UnitOfWork, write_path: WritePath, device_ref: str, patient: str) -> list[Json]:
    """The units that handle `device_ref` at `patient` (module docstring), as References, in order."""
    links = Links(uow)
    device = links.get(device_ref)
    if device is None:
        return []
    owner = (device.get("owner") or {}).get("reference")
    units = _unit_refs(links, device_ref)
    found: dict[str, Json] = {}
    query = f"patient={patient}&code={HANDOVER[0]}|{HANDOVER[1]}"
    for stored in write_path.searcher.match(uow.connection, "Task", query, limit=LIMIT):
        task = stored.json()
        inputs = {str((i.get("valueReference") or {}).get("reference")) for i in task.get("input") or []}
        if task.get("status") not in GONE and inputs & units:
            _add(links, found, task.get("owner"), owner)
    for task in links.referring("Task", "focus", split(device_ref)):  # type: ignore[arg-type]
        if task.get("status") not in GONE and any(_coded(task, *code) for code in MUNICIPAL_FOCUS):
            _add(links, found, task.get("owner"), owner)
    # the units registered as providing personal care for the patient (they handle what is at home)
    query = f"patient={patient}&code={PERSONAL_CARE[0]}|{PERSONAL_CARE[1]}&status=completed"
    for stored in write_path.searcher.match(uow.connection, "Task", query, limit=LIMIT):
        _add(links, found, stored.json().get("owner"), owner)
    query = f"subject={patient}&category={CARE_TEAM[0]}|{CARE_TEAM[1]}&status=active"
    for stored in write_path.searcher.match(uow.connection, "CareTeam", query, limit=LIMIT):
        if stored.writer is None:  # a region-wide client's (a trusted writer's) CareTeam only
            for participant in stored.json().get("participant") or []:
                _add(links, found, (participant or {}).get("member"), owner)
    return list(found.values())


def municipal(get: Callable[[object], Json | None], node: object, depth: int = 0) -> bool:
    """Whether `node` references a municipality's unit (module docstring); `get` reads a reference's
    target as the caller may (a reaction's Links, the scheduler's repository)."""
    if not isinstance(node, dict):
        return False
    identifiers = [node.get("identifier")]
    if node.get("reference"):  # the unit referenced decides, never an identifier written beside it
        target = get(node.get("reference"))
        if target is not None and target.get("resourceType") == "HealthcareService" and depth == 0:
            return municipal(get, target.get("providedBy"), 1)
        is_unit = target is not None and target.get("resourceType") == "Organization"
        identifiers = list((target or {}).get("identifier") or []) if is_unit else []
    return any(
        isinstance(i, dict) and i.get("system") == HSA and MUNICIPAL.match(str(i.get("value") or ""))
        for i in identifiers
    )


def _add(links: Links, found: dict[str, Json], node: object, owner: object) -> None:
    reference = node.get("reference") if isinstance(node, dict) else None
    if not isinstance(reference, str) or not reference or reference == owner or reference in found:
        return
    if municipal(links.get, node):
        found[reference] = {"reference": reference}


def recall_informs_handlers(
    uow: UnitOfWork, write_path: WritePath, stored: Stored, previous: Json | None
) -> None:
    if stored.res_type != "Task" or stored.deleted or previous is not None or stored.writer is not None:
        return
    task = stored.json()
    if not _coded(task, REGISTER_TASK, "recall-device"):
        return
    device_ref = str((task.get("focus") or {}).get("reference") or "")
    patient = str((task.get("for") or {}).get("reference") or "")
    if not device_ref.startswith("Device/") or not patient.startswith("Patient/"):
        return
    recipients = handlers(uow, write_path, device_ref, patient)
    if not recipients:
        return
    device = Links(uow).get(device_ref) or {}
    names = [n.get("name") for n in device.get("deviceName") or [] if isinstance(n, dict) and n.get("name")]
    what = str(names[0]) if names else "ett hjälpmedel"
    category = {"system": REGISTER_TASK, "code": "recall-device", "display": "Återkallad enhet"}
    message: Json = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [category]}],
        "priority": "urgent",
        "subject": {"reference": patient},
        "about": [{"reference": device_ref}],
        "sent": to_instant(uow.now),
        "recipient": recipients,
        "payload": [
            {
                "contentString": f"Tillverkaren har återkallat {what}, som finns hos en patient ni har "
                "ansvar för. Den ägande hjälpmedelsenheten har ombetts att åtgärda det och kontaktar er; "
                "följ tillverkarens och enhetens anvisningar om hjälpmedlet får användas till dess."
            }
        ],
    }
    if task.get("owner"):
        message["sender"] = task["owner"]
    write_path.create(uow, message)
