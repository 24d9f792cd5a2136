"""Reactions: a pick-up (hämtorder), or the register's return (`Återlämnad`), ends the follow-ups of the
unit it takes back.

A `return-device` Task (the order adapter's Task of a hämtorder; only the gateway's writers may give a Task
that code, policy `gateway_tasks`) that is written open with a Device as its focus ends the open planned
activities of every device follow-up CarePlan (category device-follow-up) of the Task's patient that
follows the unit up, once every unit the plan follows up is being taken back: the activities end
(`not-started`/`scheduled` → `cancelled`, `in-progress`/`on-hold` → `stopped`) with the coded reason
`device-returned` and a Swedish text naming the unit and the pick-up order, and a Provenance records it.

A plan follows up a unit when one of its line activities (a DeviceRequest) is the line the unit was
delivered for (the register's DeviceUseStatement, extension device-request) or names the unit (extension
assigned-unit, the order line's individnummer). A unit is being taken back when an open or completed
`return-device` Task has it as its focus, or the register says it was returned: its DeviceUseStatement
for the patient went from `active` to `completed` (reaction `return_ends_follow_ups`, the same way, the
text naming the register). The plan's other activities, and the plan itself, stay as they are;
later versions of the order keep the ended follow-ups ended (gateway/adapters/bestallningsportalen/
follow_up.py)."""

from __future__ import annotations

from urllib.parse import quote
from uuid import uuid4

from gateway.adapters.bestallningsportalen import follow_up
from gateway.hooks import Reaction
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork, WritePath
from gateway.search.dates import to_instant
from gateway.store.repository import Stored
from gateway.workflow.orders import BASE, PARTICIPANT, TASK_CODES, _local, gateway_agent

ENDED_TASK = ("cancelled", "rejected", "failed", "entered-in-error")
ASSIGNED_UNIT = f"{BASE}/StructureDefinition/assigned-unit"
DEVICE_REQUEST = f"{BASE}/StructureDefinition/device-request"
CATEGORY = f"{BASE}/CodeSystem/careplan-category|device-follow-up"
LIMIT = 10_000  # a patient's resources of one type: far above any real patient's


def _is_pick_up(task: Json) -> bool:
    codes = (task.get("code") or {}).get("coding", [])
    return any(c.get("system") == TASK_CODES and c.get("code") == "return-device" for c in codes)


def _just_opened(stored: Stored, previous: Json | None) -> Json | None:
    """The pick-up Task this write made open, or gave a new unit; None for any other write."""
    if stored.res_type != "Task" or stored.deleted:
        return None
    task = stored.json()
    if not _is_pick_up(task) or task.get("status") in ENDED_TASK:
        return None
    reopened = previous is None or previous.get("status") in ENDED_TASK
    if not reopened and (previous or {}).get("focus") == task.get("focus"):
        return None
    return task


def _search(uow: UnitOfWork, write_path: WritePath, res_type: str, query: str) -> list[Json]:
    found = write_path.searcher.match(uow.connection, res_type, query, limit=LIMIT)
    return [stored.json() for stored in found]


def _identifiers(resource: Json) -> set[tuple[str, str]]:
    return {(str(i.get("system")), str(i.get("value"))) for i in resource.get("identifier", [])}


class _Units:
    """Which of the patient's order lines each unit (Device) was delivered for or is named by."""

    def __init__(self, uow: UnitOfWork, write_path: WritePath, patient: str) -> None:
        subject = "subject=" + quote(patient, safe="/")
        self.lines: dict[str, set[str]] = {}  # DeviceRequest → Devices
        for use in _search(uow, write_path, "DeviceUseStatement", subject):
            device = _local((use.get("device") or {}).get("reference"))
            for extension in use.get("extension", []):
                line = _local((extension.get("valueReference") or {}).get("reference"))
                if extension.get("url") == DEVICE_REQUEST and line and device:
                    self.lines.setdefault(line, set()).add(device)
        named: dict[str, set[tuple[str, str]]] = {}
        for request in _search(uow, write_path, "DeviceRequest", subject):
            for extension in request.get("extension", []):
                unit = (extension.get("valueReference") or {}).get("identifier") or {}
                if extension.get("url") == ASSIGNED_UNIT and unit.get("value"):
                    key = (str(unit.get("system")), str(unit["value"]))
                    named.setdefault(f"DeviceRequest/{request['id']}", set()).add(key)
        for line, keys in named.items():
            for system, value in keys:
                query = "identifier=" + quote(f"{system}|{value}", safe=":/|")
                for unit_held in write_path.searcher.match(uow.connection, "Device", query, limit=2):
                    self.lines.setdefault(line, set()).add(f"Device/{unit_held.res_id}")

    def of(self, plan: Json) -> set[str]:
        """The units a follow-up plan follows up: those of its line activities."""
        found: set[str] = set()
        for activity in plan.get("activity", []):
            found |= self.lines.get(_local((activity.get("reference") or {}).get("reference")), set())
        return found


def _taken_back(uow: UnitOfWork, write_path: WritePath, patient: str) -> set[str]:
    """The patient's units that an open or completed pick-up Task takes back."""
    code = quote(f"{TASK_CODES}|return-device", safe=":/|")
    query = "patient=" + quote(patient, safe="/") + "&code=" + code
    return {
        _local((task.get("focus") or {}).get("reference"))
        for task in _search(uow, write_path, "Task", query)
        if task.get("status") not in ENDED_TASK
    }


def _unit(uow: UnitOfWork, device: str) -> str:
    """The unit in Swedish text: by its identifiers (serial, individnummer) when the Device has them."""
    held = uow.repository.current("Device", device.removeprefix("Device/"))
    names = sorted(value for _, value in _identifiers(held.json())) if held and not held.deleted else []
    return f"enheten {', '.join(names)}" if names else "enheten"


def _describe(uow: UnitOfWork, device: str, task: Json) -> str:
    order = (task.get("groupIdentifier") or {}).get("value")
    return f"Hjälpmedlet hämtas tillbaka: {_unit(uow, device)}" + (f" (hämtorder {order})" if order else "")


def pick_up_ends_follow_ups(
    uow: UnitOfWork, write_path: WritePath, stored: Stored, previous: Json | None
) -> None:
    task = _just_opened(stored, previous)
    device = _local(((task or {}).get("focus") or {}).get("reference"))
    patient = _local(((task or {}).get("for") or {}).get("reference"))
    if task is None or not device.startswith("Device/") or not patient.startswith("Patient/"):
        return
    why = follow_up.reason("device-returned", _describe(uow, device, task))
    _end_follow_ups(uow, write_path, patient, device, why, stored, task.get("requester"))


def return_ends_follow_ups(
    uow: UnitOfWork, write_path: WritePath, stored: Stored, previous: Json | None
) -> None:
    """The register's return (`Återlämnad`: the unit's DeviceUseStatement for the patient completed) ends
    the follow-ups of the unit as a pick-up does, when no pick-up order came first."""
    if stored.res_type != "DeviceUseStatement" or stored.deleted or previous is None:
        return
    use = stored.json()
    if use.get("status") != "completed" or previous.get("status") != "active":
        return
    device = _local((use.get("device") or {}).get("reference"))
    patient = _local((use.get("subject") or {}).get("reference"))
    if not device.startswith("Device/") or not patient.startswith("Patient/"):
        return
    why = follow_up.reason(
        "device-returned", f"Hjälpmedlet är återlämnat enligt hjälpmedelsregistret: {_unit(uow, device)}"
    )
    _end_follow_ups(uow, write_path, patient, device, why, stored, None)


def _returned(uow: UnitOfWork, write_path: WritePath, patient: str) -> set[str]:
    """The patient's units the register says were returned: a completed use and no active one."""
    uses = _search(uow, write_path, "DeviceUseStatement", "subject=" + quote(patient, safe="/"))
    device_of = [(_local((use.get("device") or {}).get("reference")), use.get("status")) for use in uses]
    active = {device for device, status in device_of if status == "active"}
    return {device for device, status in device_of if status == "completed" and device not in active}


def _end_follow_ups(
    uow: UnitOfWork,
    write_path: WritePath,
    patient: str,
    device: str,
    why: Json,
    stored: Stored,
    requester: object,
) -> None:
    """End the open activities of the patient's follow-up plans that follow up `device`, once every unit
    a plan follows up is taken back or returned; a Provenance names `stored` (the pick-up Task or the
    register's use) as the source."""
    query = "subject=" + quote(patient, safe="/") + "&category=" + quote(CATEGORY, safe=":/|")
    plans = [
        plan
        for plan in _search(uow, write_path, "CarePlan", query)
        if any(map(follow_up.is_open, plan.get("activity", [])))
    ]
    if not plans:
        return
    units = _Units(uow, write_path, patient)
    taken = _taken_back(uow, write_path, patient) | _returned(uow, write_path, patient) | {device}
    changed = []
    for plan in plans:
        followed = units.of(plan)
        if device not in followed or not followed <= taken:
            continue
        ended = {**plan, "activity": [follow_up.end(a, why) for a in plan["activity"]]}
        ended.pop("meta", None)
        result = write_path.update(uow, "CarePlan", plan["id"], ended)
        if result.changed:
            changed.append(f"CarePlan/{plan['id']}/_history/{result.stored.version_id}")
    if not changed:
        return
    agents: list[Json] = [gateway_agent(uow.context)]
    if requester:
        author = {"coding": [{"system": PARTICIPANT, "code": "author", "display": "Author"}]}
        agents.insert(0, {"type": author, "who": requester})
    write_path.create(
        uow,
        {
            "resourceType": "Provenance",
            "id": str(uuid4()),
            "target": [{"reference": ref} for ref in changed],
            "recorded": to_instant(uow.now),
            "reason": [{"text": why["text"]}],
            "activity": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}
                ]
            },
            "agent": agents,
            "entity": [
                {
                    "role": "source",
                    "what": {"reference": f"{stored.res_type}/{stored.res_id}/_history/{stored.version_id}"},
                }
            ],
        },
    )


REACTIONS: list[Reaction] = [pick_up_ends_follow_ups, return_ends_follow_ups]
