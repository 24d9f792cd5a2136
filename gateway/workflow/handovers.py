"""Handovers the gateway fills: a `handover` Task created without inputs (one a unit opened itself, policy
`client_handovers`, or the region's) gets the devices its patient has at home as inputs, as the HL7 v2
adapter gives a discharge's handover (gateway.workflow.at_home). The reaction writes them as the gateway,
on behalf of the client that created the Task; the Task stays that client's write (its care relations
keep their bases: the receiver is related by the client's referral). When a client that is not trusted
opened it, the receiver's new relationship and the devices the handover shares are a disclosure (named
exception, docs/security.md), recorded by an AuditEvent of its own (subtype `disclose`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Connection

from gateway.hooks import AccessRecord
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.workflow.at_home import devices_at_home, local_id
from gateway.workflow.return_reports import task_kind

if TYPE_CHECKING:
    from gateway.pipeline import WritePath
    from gateway.store.repository import Stored

INPUT_SYSTEM = "https://fhir.home-device-gateway.se/CodeSystem/task-input-type"
INPUT_CODES = {"Device": "device", "DeviceRequest": "device-request"}
OPEN = frozenset({"draft", "requested", "received", "accepted", "ready", "in-progress", "on-hold"})
DISCLOSED = "handover opened by a unit: the receiver is related to the patient (named exception)"


def inputs(connection: Connection, patient_id: str) -> list[Json]:
    """A handover's inputs: the Devices, then the DeviceRequests the patient has at home."""
    home = devices_at_home(connection, patient_id)
    return [
        {
            "type": {"coding": [{"system": INPUT_SYSTEM, "code": INPUT_CODES[res_type]}]},
            "valueReference": {"reference": reference},
        }
        for res_type in ("Device", "DeviceRequest")
        for reference in home.references(res_type)
    ]


def fill_handover_inputs(
    uow: UnitOfWork, write_path: WritePath, stored: Stored, previous: Json | None
) -> None:
    if stored.res_type != "Task" or stored.deleted or previous is not None:
        return
    task = stored.json()
    if task_kind(task) != "handover" or task.get("input") or task.get("status") not in OPEN:
        return
    patient_id = local_id((task.get("for") or {}).get("reference"), "Patient")
    if patient_id is None:
        return
    row = uow.repository.current("Task", stored.res_id)
    opened_by = row.writer if row is not None else None  # None: a trusted writer (the region, an adapter)
    found = inputs(uow.connection, patient_id)
    if found:
        filled = {k: v for k, v in task.items() if k != "meta"}
        write_path.update(uow, "Task", stored.res_id, {**filled, "input": found})
    if opened_by is None:
        return
    record = AccessRecord("disclose", "Task", [stored.res_id], 200, uow.context, DISCLOSED)
    record.patients = [f"Patient/{patient_id}"]
    owner = local_owner(task)
    record.resources = ([owner] if owner else []) + [str(i["valueReference"]["reference"]) for i in found]
    uow.records.append(record)


def local_owner(task: Json) -> str | None:
    reference = (task.get("owner") or {}).get("reference")
    for res_type in ("Organization", "HealthcareService", "PractitionerRole"):
        res_id = local_id(reference, res_type)
        if res_id:
            return f"{res_type}/{res_id}"
    return None
