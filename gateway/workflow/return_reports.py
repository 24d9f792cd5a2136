"""Return reports (återrapporter): Communications of category `returrapport` about a patient, basedOn the
DeviceRequest, CarePlan or Task they concern, routed to the actual prescriber(s).

- Rule: a report without recipients gets the actual prescriber(s), the requesters of the DeviceRequests
  it concerns (directly, or carried by the Task as inputs, or referred to by the CarePlan), never the
  orderer. A request still tagged `unconfirmed-prescriber` routes the report to the ordering unit
  instead (the `enterer` agent's onBehalfOf, else the requester's organisation), and the report says so.
- Reaction: a handover Task rejected or completed by its owner (the receiver; or an exempt client) yields
  such a report for the DeviceRequests it carried. Only the gateway's writers may give a Task the code
  `handover` or change its inputs (policy `gateway_tasks`), so the Task is one the HL7 v2 adapter made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.hooks import Reaction, Rule
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.store.visibility import visible_keys
from gateway.workflow.sip import referring

if TYPE_CHECKING:
    from gateway.pipeline import WritePath
    from gateway.store.repository import Stored

CATEGORY = "https://fhir.home-device-gateway.se/CodeSystem/communication-category"
TASK_SYSTEM = "https://fhir.home-device-gateway.se/CodeSystem/care-transition-task"
UNCONFIRMED = "unconfirmed-prescriber"
UNCONFIRMED_NOTE = "Förskrivaren är obekräftad: rapporten går till den beställande enheten."


def is_return_report(resource: Json) -> bool:
    return any(
        coding.get("system") == CATEGORY and coding.get("code") == "returrapport"
        for category in resource.get("category") or []
        for coding in category.get("coding") or []
    )


def _read(uow: UnitOfWork, reference: str) -> Json | None:
    """The resource as the writing client may see it (None when it may not): a report can only reach the
    prescribers of requests its writer may see, and tells it nothing of others."""
    res_type, _, res_id = reference.partition("/")
    if not res_id or "/" in res_id:
        return None
    stored = uow.repository.current(res_type, res_id)
    if stored is None or stored.deleted:
        return None
    if uow.policy is not None:
        visibility = uow.policy.visibility(uow.context)
        if not visibility.everything and not visible_keys(uow.connection, visibility, [(res_type, res_id)]):
            return None
    return stored.json()


def _device_requests(uow: UnitOfWork, resource: Json) -> list[tuple[str, Json]]:
    """The DeviceRequests a report is about: basedOn them, or a Task carrying them, or a CarePlan."""
    found: dict[str, Json] = {}

    def add(reference: str) -> None:
        if reference.startswith("DeviceRequest/") and reference not in found:
            request = _read(uow, reference)
            if request is not None:
                found[reference] = request

    for based_on in resource.get("basedOn") or []:
        reference = str(based_on.get("reference", ""))
        add(reference)
        target = _read(uow, reference) if reference.startswith(("Task/", "CarePlan/")) else None
        if target is None:
            continue
        if target["resourceType"] == "Task":
            for item in target.get("input") or []:
                add(str(item.get("valueReference", {}).get("reference", "")))
            for focus in [target.get("focus") or {}, *(target.get("basedOn") or [])]:
                add(str(focus.get("reference", "")))
        else:
            for item in [*(target.get("basedOn") or []), *(target.get("activity") or [])]:
                add(
                    str(
                        item.get("reference", {}).get("reference", "")
                        if "reference" in item and isinstance(item["reference"], dict)
                        else item.get("reference", "")
                    )
                )
    return list(found.items())


def _ordering_unit(uow: UnitOfWork, reference: str, request: Json) -> Json | None:
    res_type, _, res_id = reference.partition("/")
    for provenance in referring(uow, "Provenance", "target", res_type, res_id):
        for agent in provenance.get("agent") or []:
            codes = [c.get("code") for c in (agent.get("type") or {}).get("coding") or []]
            if "enterer" in codes and agent.get("onBehalfOf"):
                return dict(agent["onBehalfOf"])
    requester = str((request.get("requester") or {}).get("reference", ""))
    if requester.startswith("PractitionerRole/"):
        role = _read(uow, requester)
        if role and role.get("organization"):
            return dict(role["organization"])
    return None


def prescribers_as_recipients(uow: UnitOfWork, action: str, resource: Json, current: Json | None) -> Json:
    if resource.get("resourceType") != "Communication" or action == "delete":
        return resource
    if not is_return_report(resource) or resource.get("recipient"):
        return resource
    recipients: list[Json] = []
    unconfirmed = False
    for reference, request in _device_requests(uow, resource):
        tags = (request.get("meta") or {}).get("tag") or []
        if any(tag.get("code") == UNCONFIRMED for tag in tags):
            unconfirmed = True
            unit = _ordering_unit(uow, reference, request)
            if unit is not None:
                recipients.append(unit)
        elif request.get("requester"):
            recipients.append(dict(request["requester"]))
    unique = list({str(r.get("reference")): r for r in recipients if r.get("reference")}.values())
    if not unique:
        return resource
    result = {**resource, "recipient": unique}
    if unconfirmed:
        result["payload"] = [*(resource.get("payload") or []), {"contentString": UNCONFIRMED_NOTE}]
    return result


def _task_kind(task: Json) -> str:
    for coding in (task.get("code") or {}).get("coding") or []:
        if coding.get("system") == TASK_SYSTEM:
            return str(coding.get("code"))
    return ""


def handover_answered(uow: UnitOfWork, write_path: WritePath, stored: Stored, previous: Json | None) -> None:
    if stored.res_type != "Task" or stored.deleted:
        return
    task = stored.json()
    status = task.get("status")
    if status not in ("rejected", "completed") or (previous or {}).get("status") == status:
        return
    if _task_kind(task) != "handover":
        return
    if not write_path.hooks.policy.acts_for(uow.context, task.get("owner")):
        return  # only the receiver's answer is reported (the Task itself is the HL7 v2 adapter's)
    carried = [
        str(i.get("valueReference", {}).get("reference", ""))
        for i in task.get("input") or []
        if str(i.get("valueReference", {}).get("reference", "")).startswith("DeviceRequest/")
    ]
    if not carried:
        return
    reason = (task.get("statusReason") or {}).get("text") or ""
    text = (
        f"Överlämningen avvisades av mottagaren: {reason}".rstrip(": ")
        if status == "rejected"
        else "Överlämningen är genomförd av mottagaren."
    )
    report: Json = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [{"coding": [{"system": CATEGORY, "code": "returrapport", "display": "Återrapport"}]}],
        "subject": task.get("for"),
        "basedOn": [{"reference": r} for r in carried] + [{"reference": f"Task/{stored.res_id}"}],
        "about": [{"reference": f"Task/{stored.res_id}"}],
        "sent": task.get("lastModified") or stored.json()["meta"]["lastUpdated"],
        "payload": [{"contentString": text}],
    }
    if task.get("owner"):
        report["sender"] = task["owner"]
    write_path.create(uow, report)


RULES: list[Rule] = [prescribers_as_recipients]
REACTIONS: list[Reaction] = [handover_answered]
