"""Answers to the scheduler's Tasks (issue 18, docs/scheduling.md), at the write path's hook points.

Rule `control_signed`: completing a control-and-cleaning Task (task-code `control-cleaning`) signs it,
replacing the paper list: it needs an `output` of type `control-result` (valueCodeableConcept `ok` or
`fault-found`, CodeSystem control-result), an `output` of type `performed-by` naming the person (a
Practitioner reference, or a valueIdentifier: the municipality's staff identifier or an HSA-id), and for
`fault-found` a `note` saying what; else 422 naming the element. The person goes into the write's
AuditEvent (its outcome text, and the Practitioner as an entity).

Rule `overdue_is_the_gateways`: a client that is not exempt neither sets nor clears the scheduler's
`overdue` mark (task-business-status) of a scheduled Task (403).

Rule `personal_care_registered`: a `personal-care` Task (which starts a unit's controls) is given its
code or its owner only by a client acting for that owner (the municipality itself) or an exempt one (the
region's, the gateway's); else 403.

Reactions:
- `control_signed_provenance`: a control Task just completed gets a Provenance whose performer is the
  person who signed, on behalf of the owning unit; `fault-found` opens a fault report
  (gateway/workflow/faults.py `open_fault_report`).
- `follow_up_completed`: a follow-up Task (task-code `follow-up`) just completed completes its CarePlan
  activity (`detail.status` `completed`) and adds the Task to `activity.outcomeReference` (never
  `activity.reference`: cpl-3); the Task's free text stays in its `note`."""

from __future__ import annotations

from uuid import NAMESPACE_URL, uuid4, uuid5

from gateway.errors import forbidden, unprocessable
from gateway.hooks import Reaction, Rule
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork, WritePath
from gateway.search.dates import to_instant
from gateway.store.repository import Stored
from gateway.workflow import faults
from gateway.workflow.orders import BASE, PARTICIPANT, TASK_CODES, _local, gateway_agent

OUTPUT_TYPES = f"{BASE}/CodeSystem/task-output-type"
CONTROL_RESULT = f"{BASE}/CodeSystem/control-result"
RESULTS = ("ok", "fault-found")


def _is(task: Json, code: str) -> bool:
    codings = (task.get("code") or {}).get("coding") or []
    return any(
        isinstance(c, dict) and c.get("system") == TASK_CODES and c.get("code") == code for c in codings
    )


def _output(task: Json, kind: str) -> Json | None:
    for output in task.get("output") or []:
        codings = ((output or {}).get("type") or {}).get("coding") or []
        if any(c.get("system") == OUTPUT_TYPES and c.get("code") == kind for c in codings):
            return dict(output)
    return None


def _result(task: Json) -> str | None:
    output = _output(task, "control-result") or {}
    codings = (output.get("valueCodeableConcept") or {}).get("coding") or []
    return next(
        (str(c["code"]) for c in codings if c.get("system") == CONTROL_RESULT and c.get("code") in RESULTS),
        None,
    )


def performer(task: Json) -> Json | None:
    """Who signed the control: a reference to a Practitioner, or a logical one by identifier."""
    output = _output(task, "performed-by") or {}
    reference = output.get("valueReference")
    if isinstance(reference, dict) and str(reference.get("reference", "")).startswith("Practitioner/"):
        return {k: v for k, v in reference.items() if k in ("reference", "display")}
    identifier = output.get("valueIdentifier")
    if isinstance(identifier, dict) and identifier.get("value"):
        return {
            "type": "Practitioner",
            "identifier": {k: v for k, v in identifier.items() if k in ("system", "value")},
        }
    return None


def _just_completed(task: Json, previous: Json | None) -> bool:
    return task.get("status") == "completed" and (previous or {}).get("status") != "completed"


def control_signed(uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json:
    if resource.get("resourceType") != "Task" or action == "delete" or not _is(resource, "control-cleaning"):
        return resource
    if not _just_completed(resource, current):
        return resource
    person = performer(resource)
    if person is None:
        raise unprocessable(
            "A completed control needs an output of type performed-by naming the person who did it "
            "(valueReference to a Practitioner, or valueIdentifier)",
            "Task.output",
        )
    result = _result(resource)
    if result is None:
        raise unprocessable(
            "A completed control needs an output of type control-result: ok or fault-found", "Task.output"
        )
    if result == "fault-found" and len(resource.get("note") or []) <= len((current or {}).get("note") or []):
        raise unprocessable("A control that found a fault needs a note saying what was found", "Task.note")
    named = person.get("reference") or "{system}|{value}".format(**{"system": "", **person["identifier"]})
    entities = [person["reference"]] if person.get("reference") else []
    uow.note_audit(f"Task/{resource.get('id')}", f"signed by {named} (control {result})", entities)
    return resource


def control_signed_provenance(
    uow: UnitOfWork, write_path: WritePath, stored: Stored, previous: Json | None
) -> None:
    if stored.res_type != "Task" or stored.deleted:
        return
    task = stored.json()
    if not _is(task, "control-cleaning") or not _just_completed(task, previous):
        return
    person = performer(task)
    if person is None:
        return
    signer: Json = {
        "type": {"coding": [{"system": PARTICIPANT, "code": "performer", "display": "Performer"}]},
        "who": person,
    }
    if task.get("owner"):
        signer["onBehalfOf"] = task["owner"]
    write_path.create(
        uow,
        {
            "resourceType": "Provenance",
            "id": str(uuid4()),
            "target": [{"reference": f"Task/{stored.res_id}/_history/{stored.version_id}"}],
            "recorded": to_instant(uow.now),
            "reason": [{"text": "Kontroll och rengöring signerad"}],
            "agent": [signer, gateway_agent(uow.context)],
        },
    )
    if _result(task) == "fault-found":
        _fault_found(uow, write_path, task, stored)


def _fault_found(uow: UnitOfWork, write_path: WritePath, task: Json, stored: Stored) -> None:
    """A control that found a fault opens a fault report to the device's owner (gateway/workflow/
    faults.py), the unit that signed as reporter, the control's last note as its text; its id follows
    from the control Task's, so a second completion write changes nothing."""
    device = _local((task.get("focus") or {}).get("reference"))
    reporter = task.get("owner")
    if not device.startswith("Device/") or not isinstance(reporter, dict):
        return
    notes = [str(n.get("text")) for n in task.get("note") or [] if isinstance(n, dict) and n.get("text")]
    text = "Fel upptäckt vid kontroll och rengöring" + (f": {notes[-1]}" if notes else "")
    res_id = str(uuid5(NAMESPACE_URL, f"{BASE}/fault-report/control/{stored.res_id}"))
    faults.open_fault_report(
        uow, write_path, device, reporter, text, res_id=res_id, based_on=[f"Task/{stored.res_id}"]
    )


def follow_up_completed(
    uow: UnitOfWork, write_path: WritePath, stored: Stored, previous: Json | None
) -> None:
    if stored.res_type != "Task" or stored.deleted:
        return
    task = stored.json()
    if not _is(task, "follow-up") or not _just_completed(task, previous):
        return
    plan_ref = next((_local(b.get("reference")) for b in task.get("basedOn") or []), "")
    name = next((str(i.get("valueString")) for i in task.get("input") or [] if "valueString" in i), "")
    held = uow.repository.current("CarePlan", plan_ref.removeprefix("CarePlan/")) if plan_ref else None
    if held is None or held.deleted or not name:
        return
    plan = held.json()
    outcome = {"reference": f"Task/{stored.res_id}"}
    activities = []
    changed = False
    for activity in plan.get("activity") or []:
        if activity.get("id") == name and isinstance(activity.get("detail"), dict):
            detail = {**activity["detail"], "status": "completed"}
            detail.pop("statusReason", None)
            outcomes = [*(activity.get("outcomeReference") or [])]
            if outcome not in outcomes:
                outcomes.append(outcome)
            updated = {**activity, "detail": detail, "outcomeReference": outcomes}
            changed = changed or updated != activity
            activities.append(updated)
        else:
            activities.append(activity)
    if not changed:
        return
    resource = {**plan, "activity": activities}
    resource.pop("meta", None)
    result = write_path.update(uow, "CarePlan", held.res_id, resource)
    if not result.changed:
        return
    write_path.create(
        uow,
        {
            "resourceType": "Provenance",
            "id": str(uuid4()),
            "target": [{"reference": f"CarePlan/{held.res_id}/_history/{result.stored.version_id}"}],
            "recorded": to_instant(uow.now),
            "reason": [{"text": "Uppföljningen är genomförd"}],
            "agent": [gateway_agent(uow.context)],
            "entity": [
                {
                    "role": "source",
                    "what": {"reference": f"Task/{stored.res_id}/_history/{stored.version_id}"},
                }
            ],
        },
    )


def personal_care_registered(uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json:
    """A `personal-care` Task registers its owner as providing personal care for the patient, which
    starts its controls (gateway/schedule/control_units.py): only the municipality itself (the client acts
    for the owner) or a region-wide client (or the gateway) gives a Task that code or that owner."""
    if resource.get("resourceType") != "Task" or action == "delete" or not _is(resource, "personal-care"):
        return resource
    if (
        current is not None
        and _is(current, "personal-care")
        and current.get("owner") == resource.get("owner")
    ):
        return resource
    given = resource.get("owner")
    owner: Json = given if isinstance(given, dict) else {}
    # each way the owner is named must be the client's own: a reference to one unit beside an identifier
    # of another must not pass on either
    parts = [{key: owner[key]} for key in ("reference", "identifier") if owner.get(key)]
    if uow.policy is not None and (not parts or not all(uow.policy.acts_for(uow.context, p) for p in parts)):
        raise forbidden(
            "A personal-care Task is registered by the municipality that provides the care, or by the region",
        )
    return resource


SCHEDULED = ("follow-up", "control-cleaning", "service-due", "retirement-review")
OVERDUE = (f"{BASE}/CodeSystem/task-business-status", "overdue")


def _overdue(task: Json | None) -> bool:
    codings = ((task or {}).get("businessStatus") or {}).get("coding") or []
    return any(isinstance(c, dict) and (c.get("system"), c.get("code")) == OVERDUE for c in codings)


def overdue_is_the_gateways(uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json:
    """A scheduled Task's `overdue` mark is the scheduler's: its owner answers the Task (complete,
    reject, notes, reassign) but neither sets nor clears the mark (403); exempt clients (the region's,
    the gateway's) may."""
    if resource.get("resourceType") != "Task" or action == "delete" or current is None:
        return resource
    if not any(_is(current, code) for code in SCHEDULED) or _overdue(current) == _overdue(resource):
        return resource
    if uow.policy is not None and not uow.policy.acts_for(uow.context, None):  # only exempt clients
        raise forbidden("A scheduled Task's overdue mark is set by the gateway's scheduler only")
    return resource


RULES: list[Rule] = [control_signed, personal_care_registered, overdue_is_the_gateways]
REACTIONS: list[Reaction] = [control_signed_provenance, follow_up_completed]
