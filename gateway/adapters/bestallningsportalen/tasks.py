"""The Tasks one order writes: the question to the ordering unit who really prescribed an order that
names no prescriber (confirm-prescriber, cancelled once the order names them), and the hämtorder's or
arbetsorder's Task to the device unit."""

from __future__ import annotations

from gateway.adapters import mapping as m
from gateway.adapters.bestallningsportalen.builder import Builder
from gateway.adapters.bestallningsportalen.order_keys import unit_refs
from gateway.adapters.mapping import Found
from gateway.model.types import Json


def confirmed_requester(task: Json) -> Json | None:
    """The prescriber a completed confirm-prescriber Task names, if any."""
    if task.get("status") != "completed":
        return None
    for output in task.get("output", []):
        ref = output.get("valueReference") or {}
        if str(ref.get("reference", "")).startswith("PractitionerRole/"):
            return dict(ref)
    return None


def confirm_task(
    b: Builder,
    order: Json,
    current: Found | None,
    unconfirmed: bool,
    status: Json,
    group: Json,
    patient: str,
    orgs: dict[str, str],
    lines: list[str],
) -> None:
    """Ask the ordering unit who really prescribed; cancel the question once the order names them."""
    if current is not None:
        if unconfirmed and status["task"] != "cancelled":
            return  # the unit is working on it: leave it as it is
        reason = "Ordern anger nu sin förskrivare" if not unconfirmed else "Ordern makulerades"
        b.own({**current.resource, "status": "cancelled", "statusReason": {"text": reason}})
        return
    orderer = order["registrerad_av"]
    b.own(
        {
            "resourceType": "Task",
            "id": b.oids.confirm,
            "groupIdentifier": group,
            "status": "cancelled" if status["task"] == "cancelled" else "requested",
            "intent": "order",
            "code": {
                "coding": [
                    {"system": m.TASK_CODES, "code": "confirm-prescriber", "display": "Bekräfta förskrivare"}
                ]
            },
            "description": (
                f"Order {order['ordernummer']} registrerades av {orderer['namn']} utan att förskrivaren "
                "angavs. Ange vem som förskrev: slutför uppgiften med förskrivarens PractitionerRole som "
                "output (valueReference)."
            ),
            "focus": m.ref(lines[0]),
            "basedOn": [m.ref(line) for line in lines],
            "for": m.ref(patient),
            "authoredOn": order["skapad"],
            "owner": m.ref(orgs[orderer["enhet_hsaid"]]),
        }
    )


def work_task(
    b: Builder,
    order: Json,
    kind: Json,
    status: Json,
    group: Json,
    patient: str,
    requester: str,
    device_unit: str,
) -> None:
    """hämtorder and arbetsorder: a Task to the device unit, focus the unit concerned."""
    units = unit_refs(order)
    task_id = b.oids.task
    current = b.known.by_id.get(f"Task/{task_id}")
    task_status = status["task"]
    if current is not None and task_status not in ("cancelled", "completed"):
        task_status = current.resource.get("status", task_status)  # the device unit's progress stands
    resource: Json = {
        "resourceType": "Task",
        "id": task_id,
        "groupIdentifier": group,
        "status": task_status,
        "intent": "order",
        "code": {"coding": [{"system": m.TASK_CODES, "code": kind["task_code"], "display": kind["display"]}]},
        "for": m.ref(patient),
        "authoredOn": order["skapad"],
        "requester": m.ref(requester),
        "owner": m.ref(device_unit),
    }
    if units:
        resource["focus"] = m.ref(b.device(*units[0]))
    if order.get("meddelande"):
        resource["description"] = order["meddelande"]
    inputs = [
        {
            "type": {"text": f"rad {line['radnummer']}: {line['benamning']} ({line['artikelnummer']})"},
            "valueString": line.get("installningar") or f"antal {line['antal']}",
        }
        for line in order["rader"]
    ]
    resource["input"] = inputs
    b.own(resource)
