"""Return reports (återrapporter): Communications of category `returrapport` about a patient, routed to the
actual prescriber(s) of the devices they concern (gateway.workflow.prescribers; docs/workflow.md).

- Rule `prescribers_as_recipients`: a report without recipients gets them. What it is `basedOn` says
  which devices it concerns: a DeviceRequest, a Task's inputs, focus and basedOn, a CarePlan's requests,
  followed as far as the writing client may read; and, the named exception of docs/security.md, a
  handover Task the writer owns (the devices it carried) or a Device the writer may read, followed by
  the gateway through links the writer may not read, without revealing them: the writer learns only
  the recipients, and the report's AuditEvent names what was followed (detail `ROUTED`).
- Reaction `handover_answered`: a handover Task rejected by its owner (the receiver; or an exempt
  client), or completed with a change to the conditions of self-care (a code of the ValueSet
  self-care-change in its statusReason or in an output of type `self-care-change`), yields a report to
  the prescribers of the devices it carried. A plain completion is visible on the Task, not reported.
  Only the gateway's writers set up or change such a Task's inputs (policy `gateway_tasks`; a unit that
  opens one itself supplies none: `client_handovers`), so the inputs are what the gateway stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gateway.hooks import Rule
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.store.visibility import Visibility
from gateway.workflow import value_sets
from gateway.workflow.prescribers import Links, Routing, route, split

if TYPE_CHECKING:
    from gateway.pipeline import WritePath
    from gateway.store.repository import Stored

BASE = "https://fhir.home-device-gateway.se"
CATEGORY = f"{BASE}/CodeSystem/communication-category"
TASK_SYSTEM = f"{BASE}/CodeSystem/care-transition-task"
OUTPUT_TYPES = f"{BASE}/CodeSystem/task-output-type"
SELF_CARE_CHANGE = f"{BASE}/ValueSet/self-care-change"
DEVICE_TYPES = ("Device/", "DeviceUseStatement/", "DeviceRequest/")
ROUTED = "routed to the prescribers of the devices concerned (named exception: return reports)"
FALLBACK_NOTE = (
    "Varken förskrivare, beställande enhet, uppföljningsansvarig enhet eller ägare är känd för "
    "hjälpmedlen: rapporten går till den enhet som lämnade över patienten."
)


def is_return_report(resource: Json) -> bool:
    return any(
        coding.get("system") == CATEGORY and coding.get("code") == "returrapport"
        for category in resource.get("category") or []
        for coding in category.get("coding") or []
    )


def task_kind(task: Json) -> str:
    for coding in (task.get("code") or {}).get("coding") or []:
        if coding.get("system") == TASK_SYSTEM:
            return str(coding.get("code"))
    return ""


def carried(task: Json) -> list[str]:
    """The devices a handover Task carries (its inputs referring to a Device, DeviceUseStatement or
    DeviceRequest)."""
    found = [str((i.get("valueReference") or {}).get("reference", "")) for i in task.get("input") or []]
    return list(dict.fromkeys(r for r in found if r.startswith(DEVICE_TYPES)))


def _visibility(uow: UnitOfWork) -> Visibility | None:
    return uow.policy.visibility(uow.context) if uow.policy is not None else None


def _request_refs(target: Json) -> list[str]:
    """What a Task or CarePlan refers to as the requests it is about (followed as the writer sees them)."""
    found: list[object] = []
    if target["resourceType"] == "Task":
        found += [(i.get("valueReference") or {}).get("reference") for i in target.get("input") or []]
        found += [(r or {}).get("reference") for r in [target.get("focus"), *(target.get("basedOn") or [])]]
    else:
        for item in [*(target.get("basedOn") or []), *(target.get("activity") or [])]:
            inner = item.get("reference")
            found.append(inner.get("reference") if isinstance(inner, dict) else inner)
    return [str(r) for r in found if isinstance(r, str) and r.startswith("DeviceRequest/")]


def _owns_handover(uow: UnitOfWork, task: Json) -> bool:
    if task_kind(task) != "handover" or uow.policy is None:
        return False
    return uow.policy.acts_for(uow.context, task.get("owner"))


def prescribers_as_recipients(uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json:
    if resource.get("resourceType") != "Communication" or action == "delete":
        return resource
    if not is_return_report(resource) or resource.get("recipient"):
        return resource
    as_writer = Links(uow, _visibility(uow))
    as_gateway = Links(uow)
    own: list[str] = []  # followed as far as the writer may read
    concerned: list[str] = []  # the named exception: followed by the gateway
    for based_on in resource.get("basedOn") or []:
        reference = str((based_on or {}).get("reference", ""))
        key = split(reference)
        if key is None:
            continue
        if key[0] == "DeviceRequest":
            own.append(reference)
        elif key[0] == "Device" and as_writer.get(reference) is not None:
            concerned.append(f"Device/{key[1]}")
        elif key[0] in ("Task", "CarePlan"):
            target = as_writer.get(reference)
            if target is None:
                continue
            if key[0] == "Task" and _owns_handover(uow, target):
                concerned += carried(target)
            else:
                own += _request_refs(target)
    routing = route(as_writer, own)
    before = len(routing.followed)
    route(as_gateway, concerned, routing)
    if not routing.recipients:
        return resource
    result = {**resource, "recipient": list(routing.recipients.values())}
    if routing.notes:
        result["payload"] = [*(resource.get("payload") or []), *({"contentString": n} for n in routing.notes)]
    if concerned and as_writer.visibility is not None:
        uow.note_audit(f"Communication/{resource.get('id')}", ROUTED, routing.followed[before:])
    return result


def _concept_text(concept: object) -> str:
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    shown = [str(c.get("display") or c.get("code") or "") for c in codings]
    return ", ".join(text for text in shown if text)


class HandoverAnswered:
    """The reaction (module docstring); `codes`: the ValueSet self-care-change, from profiles/."""

    def __init__(self, codes: value_sets.Codes) -> None:
        self.codes = codes

    @classmethod
    def load(cls, profiles_dir: Path | None) -> HandoverAnswered:
        return cls(value_sets.load(profiles_dir, SELF_CARE_CHANGE))

    def changes(self, task: Json) -> list[str]:
        """The changes to the conditions of self-care the answer names (their displays)."""
        concepts = [task.get("statusReason")] + [
            output.get("valueCodeableConcept")
            for output in task.get("output") or []
            if isinstance(output, dict)
            and any(
                c.get("system") == OUTPUT_TYPES and c.get("code") == "self-care-change"
                for c in (output.get("type") or {}).get("coding") or []
            )
        ]
        found = [display for concept in concepts for _, display in self.codes.find(concept)]
        return list(dict.fromkeys(found))

    def __call__(self, uow: UnitOfWork, write_path: WritePath, stored: Stored, previous: Json | None) -> None:
        if stored.res_type != "Task" or stored.deleted:
            return
        task = stored.json()
        status = task.get("status")
        if status not in ("rejected", "completed") or (previous or {}).get("status") == status:
            return
        if task_kind(task) != "handover" or not carried(task):
            return
        if not write_path.hooks.policy.acts_for(uow.context, task.get("owner")):
            return  # only the receiver's answer is reported
        changes = self.changes(task)
        if status == "completed" and not changes:
            return  # a plain completion: visible on the Task, not reported
        routing = route(Links(uow), carried(task))
        if not routing.recipients and task.get("requester"):
            routing.add(task["requester"])
            routing.notes.append(FALLBACK_NOTE)
        if not routing.recipients:
            return
        write_path.create(uow, _report(stored, task, changes, routing))


def _report(stored: Stored, task: Json, changes: list[str], routing: Routing) -> Json:
    if task.get("status") == "rejected":
        reason = _concept_text(task.get("statusReason"))
        text = "Överlämningen avvisades av mottagaren" + (f": {reason}" if reason else "")
    else:
        text = "Överlämningen är genomförd, men förutsättningarna för egenvården har ändrats: "
        text += "; ".join(changes) + "."
    requests = [r for r in carried(task) if r.startswith("DeviceRequest/")]
    notes = [{"contentString": note} for note in routing.notes]
    report: Json = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": CATEGORY, "code": "returrapport", "display": "Återrapport"}]}],
        "subject": task.get("for"),
        "basedOn": [{"reference": r} for r in requests] + [{"reference": f"Task/{stored.res_id}"}],
        "about": [{"reference": f"Task/{stored.res_id}"}],
        "sent": task.get("lastModified") or task["meta"]["lastUpdated"],
        "recipient": list(routing.recipients.values()),
        "payload": [{"contentString": f"{text.rstrip('.')}."}, *notes],
    }
    if task.get("owner"):
        report["sender"] = task["owner"]
    return report


RULES: list[Rule] = [prescribers_as_recipients]
