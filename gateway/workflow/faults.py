"""Fault reports (felanmälan, docs/workflow.md "Fault reports"): a Task of code `fault-report` focused on a
Device, owned by the device's owner, requested by whoever handles the device and reported the fault.

- Rule `fault_reports_go_to_the_owner`: a fault report's `focus` is a Device the writer may read (one it
  may not read is refused exactly as one that does not exist, 422 `not-found`); the gateway sets `owner`
  to the stored Device's owner and `for` to its patient (a given owner or patient that differs is 422:
  a client cannot direct a fault report elsewhere), `authoredOn` to the time it is stored; `requester`,
  the reporter, is the writer's own organisation or one of its PractitionerRoles (403 otherwise). In a
  later version `code`, `focus`, `for`, `requester` and `authoredOn` stay, and only the owner moves
  `owner` (within its organisation, policy `may_reassign`; the reporter may not: 403). An `output` of type
  `adverse-event` (a fault that could have harmed the patient) names an AdverseEvent the writer may read
  with `actuality` `potential`, `subject` the Task's patient and `suspectEntity.instance` its Device.
- Reaction `RepeatedFaults`: when a new fault report makes the faults on one patient's devices within
  `fault_report_days` reach `fault_report_threshold` (GATEWAY_FAULT_REPORT_THRESHOLD, 3, and
  GATEWAY_FAULT_REPORT_DAYS, 30; at most one counted per reporter, device and day in the gateway's time
  zone), a return report (Communication, category `returrapport`, Swedish) goes to the actual
  prescriber(s) of those devices (gateway.workflow.prescribers, as the gateway). It reads only what the
  gateway stored: the fault reports' Device (focus) and the patient the rule took from the Device.
- `open_fault_report`: for the gateway's own reactions and jobs (a signed control with `fault-found`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from gateway.errors import forbidden, unknown_reference, unprocessable
from gateway.hooks import Rule
from gateway.model.types import Json
from gateway.search.dates import to_instant
from gateway.store import locks
from gateway.workflow.prescribers import Links, route, split

if TYPE_CHECKING:
    from gateway.pipeline import UnitOfWork, WritePath
    from gateway.store.repository import Stored

BASE = "https://fhir.home-device-gateway.se"
TASK_CODES = f"{BASE}/CodeSystem/task-code"
OUTPUT_TYPES = f"{BASE}/CodeSystem/task-output-type"
CATEGORY = f"{BASE}/CodeSystem/communication-category"
FAULT_REPORT = "fault-report"
ADVERSE_EVENT = "adverse-event"
KEPT = ("focus", "for", "requester", "authoredOn")
LIMIT = 10_000  # a patient's fault reports in the window: far above any real patient's
FAULT_CODE = {"system": TASK_CODES, "code": FAULT_REPORT, "display": "Felanmälan"}


def is_fault_report(task: Json | None) -> bool:
    codings = ((task or {}).get("code") or {}).get("coding") or []
    return any(
        isinstance(c, dict) and c.get("system") == TASK_CODES and c.get("code") == FAULT_REPORT
        for c in codings
    )


def _key(node: object) -> tuple[str, ...] | None:
    """What a Reference names: its literal reference (versions dropped), else its identifier."""
    if not isinstance(node, dict):
        return None
    reference = node.get("reference")
    if isinstance(reference, str) and reference:
        return ("ref", reference.split("/_history/")[0])
    identifier = node.get("identifier")
    if isinstance(identifier, dict) and identifier.get("value"):
        return ("id", str(identifier.get("system")), str(identifier.get("value")))
    return None


def _writer_links(uow: UnitOfWork) -> Links:
    return Links(uow, uow.policy.visibility(uow.context) if uow.policy is not None else None)


def _adverse_outputs(task: Json) -> list[tuple[int, Json]]:
    found = []
    for index, output in enumerate(task.get("output") or []):
        codings = ((output or {}).get("type") or {}).get("coding") or [] if isinstance(output, dict) else []
        if any(isinstance(c, dict) and c.get("system") == OUTPUT_TYPES and c.get("code") == ADVERSE_EVENT
               for c in codings):  # fmt: skip
            found.append((index, output))
    return found


def _check_adverse_events(uow: UnitOfWork, task: Json, current: Json | None) -> None:
    """Each new `adverse-event` output names an AdverseEvent the writer may read, about this fault."""
    had = {_key((o or {}).get("valueReference")) for _, o in _adverse_outputs(current or {})}
    links = _writer_links(uow)
    for index, output in _adverse_outputs(task):
        path = f"Task.output[{index}].valueReference"
        value = output.get("valueReference")
        if _key(value) in had and current is not None:
            continue
        reference = (value or {}).get("reference") if isinstance(value, dict) else None
        key = split(reference)
        if key is None or key[0] != "AdverseEvent":
            raise unprocessable("An output of type adverse-event is a reference to an AdverseEvent", path)
        event = links.get(reference)
        if event is None:
            raise unknown_reference(path, str(reference))
        if event.get("actuality") != "potential":
            raise unprocessable("The AdverseEvent of a fault report has actuality 'potential'", path)
        if _key(event.get("subject")) != _key(task.get("for")):
            raise unprocessable("The AdverseEvent's subject is not the fault report's patient", path)
        instances = {_key((s or {}).get("instance")) for s in event.get("suspectEntity") or []}
        if _key(task.get("focus")) not in instances:
            raise unprocessable("The AdverseEvent's suspectEntity.instance is not the faulty Device", path)


def fault_reports_go_to_the_owner(uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json:
    """The rule (module docstring)."""
    if resource.get("resourceType") != "Task" or action == "delete":
        return resource
    if not (is_fault_report(resource) or is_fault_report(current)):
        return resource
    if current is not None:
        if is_fault_report(current) != is_fault_report(resource):
            raise unprocessable("A Task cannot become, or stop being, a fault report", "Task.code")
        for element in KEPT:
            if resource.get(element) != current.get(element):
                raise unprocessable(f"A fault report's {element} does not change", f"Task.{element}")
        moved = _key(resource.get("owner")) != _key(current.get("owner"))
        if moved and uow.policy is not None and not uow.policy.acts_for(uow.context, current.get("owner")):
            raise forbidden("Only the owner reassigns a fault report, within its own organisation")
        _check_adverse_events(uow, resource, current)
        return resource
    focus = (
        (resource.get("focus") or {}).get("reference") if isinstance(resource.get("focus"), dict) else None
    )
    key = split(focus)
    if key is None or key[0] != "Device":
        raise unprocessable("A fault report's focus is the Device that is faulty", "Task.focus")
    device = _writer_links(uow).get(focus)
    if device is None:
        raise unknown_reference("Task.focus", str(focus))
    owner = device.get("owner")
    if not isinstance(owner, dict) or _key(owner) is None:
        raise unprocessable("The Device has no owner to report the fault to", "Task.focus")
    if resource.get("owner") is not None and _key(resource.get("owner")) != _key(owner):
        raise unprocessable("A fault report goes to the Device's owner: leave Task.owner out", "Task.owner")
    patient = device.get("patient")
    if resource.get("for") is not None and _key(resource.get("for")) != _key(patient):
        raise unprocessable("A fault report is for the Device's patient: leave Task.for out", "Task.for")
    requester = resource.get("requester")
    if _key(requester) is None:
        raise unprocessable("A fault report names its reporter as requester", "Task.requester")
    if uow.policy is not None and not uow.policy.acts_for(uow.context, requester):
        raise forbidden("A fault report's requester is the reporting organisation or one of its people")
    result = {**resource, "owner": dict(owner), "authoredOn": to_instant(uow.now)}
    result.pop("for", None)
    if isinstance(patient, dict):
        result["for"] = dict(patient)
    _check_adverse_events(uow, result, None)
    return result


def fault_report(device_ref: str, reporter: Json, note: str, based_on: list[str] | None = None) -> Json:
    """A fault report on `device_ref` by `reporter` (a Reference), with `note` as its text (Swedish)."""
    task: Json = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [dict(FAULT_CODE)]},
        "description": "Felanmälan",
        "focus": {"reference": device_ref},
        "requester": dict(reporter),
    }
    if note:
        task["note"] = [{"text": note}]
    if based_on:
        task["basedOn"] = [{"reference": r} for r in based_on]
    return task


def open_fault_report(
    uow: UnitOfWork,
    write_path: WritePath,
    device_ref: str,
    reporter: Json,
    note: str,
    *,
    res_id: str | None = None,
    based_on: list[str] | None = None,
) -> Stored | None:
    """Open a fault report to the owner of `device_ref` ("Device/id") as the gateway, for `reporter` (a
    Reference: the unit, or its PractitionerRole, that found the fault), `note` its Swedish text; with
    `res_id` (a deterministic id, e.g. from the control Task) a second call changes nothing. Through the
    write path: the rule sets owner and patient from the stored Device; None when the Device is gone or
    has no owner (nothing written)."""
    if res_id is not None and uow.repository.current("Task", res_id) is not None:
        return None
    device = Links(uow).get(device_ref)
    if device is None or _key(device.get("owner")) is None:
        return None
    return write_path.create(uow, fault_report(device_ref, reporter, note, based_on), new_id=res_id).stored


def _name(device: Json) -> str:
    for name in device.get("deviceName") or []:
        if isinstance(name, dict) and name.get("name"):
            return str(name["name"])
    return str((device.get("type") or {}).get("text") or "hjälpmedel")


class RepeatedFaults:
    """The reaction (module docstring)."""

    def __init__(self, threshold: int = 3, days: int = 30, zone: str = "Europe/Stockholm") -> None:
        self.threshold = max(threshold, 1)
        self.days = days
        self.zone = ZoneInfo(zone)

    def _day(self, task: Json) -> str:
        written = str(task.get("authoredOn") or (task.get("meta") or {}).get("lastUpdated") or "")
        try:
            moment = datetime.fromisoformat(written.replace("Z", "+00:00"))
        except ValueError:
            return written[:10]
        return moment.astimezone(self.zone).date().isoformat() if moment.tzinfo else written[:10]

    def _counted(self, task: Json) -> tuple[object, ...]:
        return (_key(task.get("requester")), _key(task.get("focus")), self._day(task))

    def __call__(self, uow: UnitOfWork, write_path: WritePath, stored: Stored, previous: Json | None) -> None:
        if stored.res_type != "Task" or stored.deleted or previous is not None:
            return
        task = stored.json()
        if not is_fault_report(task) or task.get("status") == "entered-in-error":
            return
        patient = split((task.get("for") or {}).get("reference"))
        if patient is None or patient[0] != "Patient":
            return
        # one patient's counts take turns until their transactions end: two reports committing at once
        # (in two processes, say) would each count without the other, and the threshold pass unreported
        locks.hold_named_for_transaction(uow.connection, locks.FAULTS, patient[1])
        since = to_instant(uow.now - timedelta(days=self.days))
        query = f"patient=Patient/{patient[1]}&code={TASK_CODES}|{FAULT_REPORT}&authored-on=ge{since}"
        found = write_path.searcher.match(uow.connection, "Task", query, limit=LIMIT)
        faults = [s.json() for s in found if s.res_id != stored.res_id]
        faults = [f for f in faults if f.get("status") != "entered-in-error" and is_fault_report(f)]
        before = {self._counted(f) for f in faults}
        after = before | {self._counted(task)}
        if len(after) < self.threshold or len(before) >= self.threshold:
            return  # reported when the count reaches the threshold, once a window
        reports = sorted([*faults, task], key=lambda f: str(f.get("authoredOn")))
        devices = list(dict.fromkeys(str(f["focus"]["reference"]) for f in reports))
        links = Links(uow)
        routing = route(links, devices)
        if not routing.recipients:
            return
        names = list(dict.fromkeys(_name(d) for d in (links.get(r) for r in devices) if d is not None))
        text = (
            f"Upprepade felanmälningar: {len(after)} felanmälningar på patientens hjälpmedel de senaste "
            f"{self.days} dagarna ({', '.join(names)}). Upprepade fel kan bero på hanteringsfel och betyda "
            "att egenvården inte längre fungerar som planerat: överväg uppföljning."
        )
        report: Json = {
            "resourceType": "Communication",
            "status": "completed",
            "category": [
                {"coding": [{"system": CATEGORY, "code": "returrapport", "display": "Återrapport"}]}
            ],
            "subject": {"reference": f"Patient/{patient[1]}"},
            "basedOn": [{"reference": f"Task/{f['id']}"} for f in reports],
            "about": [{"reference": d} for d in devices],
            "sent": to_instant(uow.now),
            "recipient": list(routing.recipients.values()),
            "payload": [{"contentString": text}, *({"contentString": n} for n in routing.notes)],
        }
        if task.get("owner"):
            report["sender"] = task["owner"]
        write_path.create(uow, report)


RULES: list[Rule] = [fault_reports_go_to_the_owner]
