"""One checked register row → one transaction Bundle (the mapping; the tables it reads are in
mappings/device-register/). Pure: what the gateway already holds comes in as `Known`, read before.

The Device is found by register + individnummer (the order adapter may have created a stub on that
identifier) and rewritten in the fields the register owns, keeping what other sources added; a new one is
a plain create, which fails (409, identifier taken) when another writer created the unit meanwhile.
Every other resource has an id derived from the unit (a UUID from an HMAC under the installation's
secret, gateway/adapters/ids.py), so a replay writes to the same ones and no id can be guessed. A resource
equal to what is stored gets no entry: a row identical to what is stored yields a Bundle without entries,
and the adapter writes nothing."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from gateway.adapters import mapping as m
from gateway.adapters.device_register.device import (
    MISSING_TAG,
    SOURCE,
    content,
    device_resource,
    is_missing,
    status_of,
    unit_key,
)
from gateway.adapters.ids import SourceIds
from gateway.adapters.mapping import Found
from gateway.errors import Issue
from gateway.model.types import Json
from gateway.security import sources

DEVICE_REQUEST_EXT = f"{m.EXT}/device-request"
REGISTER_TASK = f"{m.BASE}/CodeSystem/device-register-task"


@dataclass
class Known:
    """What the gateway holds that this row touches, read before the Bundle is built."""

    device: Found | None = None
    owner: Found | None = None
    patient: Found | None = None
    order_line: Found | None = None  # the DeviceRequest the unit was delivered for
    uses: list[Found] = field(default_factory=list)  # the unit's active DeviceUseStatements
    return_tasks: list[Found] = field(default_factory=list)  # open return-device Tasks focused on it
    by_id: dict[str, Found] = field(default_factory=dict)  # "Type/id" of this unit's own resources


def source_of(row: Json) -> str:
    """The row's source, as clients are bound to it: `device-register:<REGISTER>@<owner HSA-id>`."""
    return sources.device_register(row["register"], row["agare_hsaid"])


def use_id(ids: SourceIds, row: Json) -> str:
    """The DeviceUseStatement of this unit at this patient (the same whether the row writes the number
    with a hyphen or not)."""
    person = patient_identifier(row)
    return ids.id(SOURCE, "use", *unit_key(row), person[1] if person else "")


def recall_ids(ids: SourceIds, row: Json) -> tuple[str, str]:
    """(Task id, Communication id) of the unit's recall."""
    system, value = unit_key(row)
    return ids.id(SOURCE, "recall", system, value), ids.id(SOURCE, "recall-message", system, value)


def record_id(ids: SourceIds, raw: bytes) -> str:
    """The Binary (raw row) and Provenance of one row content."""
    return ids.id(SOURCE, "row", raw.decode("utf-8", errors="replace"))


def patient_identifier(row: Json) -> tuple[str, str] | None:
    """(system, number) of the patient the row places the unit with, when its status allows one: the
    column takes a personnummer or a samordningsnummer, identified as the order adapter does."""
    if status_of(row).get("patient", "none") == "none" or not row.get("patient_personnummer"):
        return None
    return m.person_identifier(row["patient_personnummer"])


class Builder(m.BundleBuilder):
    """Collects the Bundle's entries; resources equal to what is stored get none. Master data merges
    by the time the register row was recorded."""

    def __init__(self, row: Json, known: Known, recorded: str, ids: SourceIds) -> None:
        super().__init__(None, ids)  # a register row has no event time: its master data only fills gaps
        self.row = row
        self.known = known
        self.recorded = recorded
        self.notes: list[Issue] = []

    def own(self, resource: Json, found: Found | None, target: bool = True) -> str:
        """A resource with a deterministic id, written whole unless equal to what is stored."""
        key = f"{resource['resourceType']}/{resource['id']}"
        if found is not None and content(found.resource) == content(resource):
            return key
        request: Json = {"method": "PUT", "url": key}
        if found is not None:
            request["ifMatch"] = f'W/"{found.version}"'
        return self.entry(self.ids.urn(key), resource, request, target)


def build(row: Json, raw: bytes, known: Known, recorded: str, ids: SourceIds) -> tuple[Json, list[Issue]]:
    """The transaction Bundle for one checked row (no entries when nothing would change), and notes."""
    b = Builder(row, known, recorded, ids)
    status = status_of(row)
    system, value = unit_key(row)
    owner = b.master(m.organization(row["agare_hsaid"]), m.HSA, row["agare_hsaid"], known.owner)
    person = patient_identifier(row)
    patient = b.master(m.patient(*person), *person, known.patient) if person else None

    stored = known.device.resource if known.device else None
    device_json = device_resource(row, owner, patient, stored)
    if known.device is None:
        # a plain create, not a conditional one: should another writer create the unit first, its
        # identifier is taken, the transaction fails whole and the adapter reads and builds again
        device = b.entry(ids.urn("Device", system, value), device_json, {"method": "POST", "url": "Device"})
    elif content(device_json) == content(known.device.resource):
        device = f"Device/{known.device.res_id}"
    else:
        device = f"Device/{known.device.res_id}"
        request = {"method": "PUT", "url": device, "ifMatch": f'W/"{known.device.version}"'}
        b.entry(ids.urn("Device", system, value), device_json, request)

    if status.get("use") == "start" and patient:
        _start_use(b, device, patient)
    elif status.get("use") == "end":
        for use in known.uses:
            _end_use(b, use)
    if status.get("task") == "complete-return":
        for task in known.return_tasks:
            done = {**task.resource, "status": "completed"}
            done["statusReason"] = {"text": f"{row['register']} rapporterar enheten återlämnad"}
            b.own(done, task)
    if status.get("task") == "recall":
        _recall(b, device, owner, patient)

    if b.targets:
        _provenance(b, raw, device)
    return {"resourceType": "Bundle", "type": "transaction", "entry": b.entries}, b.notes


def _order_line_ext(b: Builder) -> list[Json]:
    line = b.known.order_line
    if b.row.get("forskrivning_ordernummer") and line is None:
        message = (
            f"No order line of {b.row['forskrivning_ordernummer']} with article {b.row['artikelnummer']} is "
            "stored: the DeviceUseStatement does not point at a DeviceRequest"
        )
        b.notes.append(Issue("warning", "not-found", message, ("forskrivning_ordernummer",)))
    if line is None:
        return []
    return [{"url": DEVICE_REQUEST_EXT, "valueReference": m.ref(f"DeviceRequest/{line.res_id}")}]


def _start_use(b: Builder, device: str, patient: str) -> None:
    res_id = use_id(b.ids, b.row)
    for use in b.known.uses:
        if use.res_id != res_id:
            _end_use(b, use)  # the unit moved on to another patient
    found = b.known.by_id.get(f"DeviceUseStatement/{res_id}")
    resource: Json = {"resourceType": "DeviceUseStatement", "id": res_id}
    extensions = _order_line_ext(b)
    if extensions:
        resource["extension"] = extensions
    resource.update({"status": "active", "subject": m.ref(patient), "device": m.ref(device)})
    if b.row.get("utlamnad_datum"):
        resource["timingPeriod"] = {"start": b.row["utlamnad_datum"]}
    b.own(resource, found)


def _end_use(b: Builder, use: Found) -> None:
    period = {**use.resource.get("timingPeriod", {}), "end": b.recorded[:10]}
    b.own({**use.resource, "status": "completed", "timingPeriod": period}, use)


def _recall(b: Builder, device: str, owner: str, patient: str | None) -> None:
    """A Task to the owner to handle the recall, and a message to the prescriber of a unit at a patient;
    each made once for the unit (the owner's progress on the Task stands)."""
    task_id, message_id = recall_ids(b.ids, b.row)
    if patient is None and b.known.uses:
        patient = str(b.known.uses[0].resource.get("subject", {}).get("reference")) or None
    where = f"{b.row['register']} {b.row['individnummer']} ({b.row['benamning']})"
    if f"Task/{task_id}" not in b.known.by_id:
        code = {"system": REGISTER_TASK, "code": "recall-device", "display": "Hantera återkallad enhet"}
        task: Json = {
            "resourceType": "Task",
            "id": task_id,
            "status": "requested",
            "intent": "order",
            "priority": "urgent",
            "code": {"coding": [code]},
            "description": f"Tillverkaren har återkallat {where}"
            + (", som finns hos en patient" if patient else ""),
            "focus": m.ref(device),
            "authoredOn": b.recorded,
            "owner": m.ref(owner),
        }
        if patient:
            task["for"] = m.ref(patient)
        b.own(task, None)
    line = b.known.order_line
    prescriber = (line.resource.get("requester") if line else None) or None
    if patient is None or f"Communication/{message_id}" in b.known.by_id:
        return
    if prescriber is None:
        message = "The unit is at a patient but no prescriber is known: no Communication was sent"
        b.notes.append(Issue("warning", "not-found", message, ("forskrivning_ordernummer",)))
        return
    category = {"system": REGISTER_TASK, "code": "recall-device", "display": "Återkallad enhet"}
    about = [m.ref(device), *([m.ref(f"DeviceRequest/{line.res_id}")] if line else [])]
    communication: Json = {
        "resourceType": "Communication",
        "id": message_id,
        "status": "completed",
        "category": [{"coding": [category]}],
        "priority": "urgent",
        "subject": m.ref(patient),
        "about": about,
        "sent": b.recorded,
        "recipient": [dict(prescriber)],
        "sender": m.ref(owner),
        "payload": [
            {
                "contentString": f"Tillverkaren har återkallat {where}, som du förskrev till patienten. "
                "Den ägande hjälpmedelsenheten har ombetts att åtgärda det."
            }
        ],
    }
    b.own(communication, None)


def _assembler(register: str) -> Json:
    """The Provenance agent of a register's rows: the register, through this adapter."""
    name = m.tables(SOURCE)["source"]["name"]
    return m.agent("assembler", {"display": f"{register} via {name} (gateway adapter)"})


def _provenance(b: Builder, raw: bytes, device: str) -> None:
    res_id = record_id(b.ids, raw)
    binary = b.own(
        {
            "resourceType": "Binary",
            "id": res_id,
            "meta": {"tag": [m.RAW_TAG]},
            "contentType": "text/csv",
            "data": base64.b64encode(raw).decode(),
        },
        b.known.by_id.get(f"Binary/{res_id}"),
        target=False,
    )
    provenance = {
        "resourceType": "Provenance",
        "id": res_id,
        "target": [m.ref(t) for t in b.targets],
        "recorded": b.recorded,
        "activity": {
            "coding": [{"system": m.V3_OPERATION, "code": "UPDATE" if b.known.device else "CREATE"}]
        },
        "agent": [_assembler(b.row["register"])],
        "entity": [
            {
                "role": "source",
                "what": {**m.ref(binary), "display": f"{b.row['register']} row for {b.row['individnummer']}"},
            }
        ],
    }
    b.own(provenance, None, target=False)


def missing_bundle(found: Found, register: str, recorded: str, ids: SourceIds) -> Json | None:
    """A Device a full export of `register` no longer lists: tagged missing-from-register, never deleted."""
    meta = dict(content(found.resource).get("meta") or {})
    tags = list(meta.get("tag", []))
    if any(is_missing(t) for t in tags):
        return None
    device = {**found.resource, "meta": {**meta, "tag": [*tags, MISSING_TAG]}}
    key = f"Device/{found.res_id}"
    provenance = {
        "resourceType": "Provenance",
        "id": ids.id(SOURCE, "missing", found.res_id, recorded),
        "target": [m.ref(key)],
        "recorded": recorded,
        "activity": {"coding": [{"system": m.V3_OPERATION, "code": "UPDATE"}]},
        "reason": [{"text": f"Saknas i den fullständiga exporten från {register}"}],
        "agent": [_assembler(register)],
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": ids.urn(key),
                "resource": device,
                "request": {"method": "PUT", "url": key, "ifMatch": f'W/"{found.version}"'},
            },
            {
                "fullUrl": ids.urn("Provenance", found.res_id, recorded),
                "resource": provenance,
                "request": {"method": "PUT", "url": f"Provenance/{provenance['id']}"},
            },
        ],
    }


def content_key(row: Json) -> str:
    """What a row says, for spotting one unit listed twice with different content in one batch."""
    return hashlib.sha256(repr(sorted(row.items())).encode()).hexdigest()
