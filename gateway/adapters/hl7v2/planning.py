"""Planning a message: read the stay's earlier messages and what is stored of it, fold them
(gateway/adapters/hl7v2/engine.py), and build the message's transaction Bundle (`plan`), inside a unit
of work of `service.handle_sync`. The stay's earlier messages are read back from their Binaries, kept
parsed by their bytes (`EVENTS`)."""

from __future__ import annotations

import base64
import logging
import threading
from collections import OrderedDict
from typing import Any
from zoneinfo import ZoneInfo

from gateway.adapters.hl7v2 import engine
from gateway.adapters.hl7v2.engine import TERMINAL, Context, Refs, message_id, stay_ids
from gateway.adapters.hl7v2.events import Event, read_event
from gateway.adapters.hl7v2.mappings import MAPPINGS
from gateway.adapters.hl7v2.message import Hl7Error, fhir_time, parse, unframe
from gateway.adapters.ids import SourceIds
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.services import Services
from gateway.store.repository import Stored
from gateway.workflow.at_home import devices_at_home

log = logging.getLogger("gateway.adapters.hl7v2")
HSA = engine.HSA


def stored_data(data: bytes) -> str:
    """The message as its Binary keeps it (`Binary.data`)."""
    return base64.b64encode(unframe(data)).decode()


class Events:
    """The last messages read, as Events, by (time zone, `Binary.data`). Every message of a stay reads
    the stay's earlier ones back from their Binaries; a message written here is put in, so that the
    next of its stay finds it. An Event depends only on the bytes and the zone, so a hit is exactly what
    a parse would give; the fold only reads Events, never changes them. A miss (an older message,
    another process) reads the stored message again: split without hl7apy when it is plain (~0.5 ms;
    `message.parse(…, stored=True)`), else parsed by hl7apy (~12 ms, about as much as storing it)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[tuple[str, str], Event] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, zone: ZoneInfo, data: str) -> Event | None:
        with self.lock:
            event = self.items.get((zone.key, data))
            if event is not None:
                self.items.move_to_end((zone.key, data))
            return event

    def put(self, zone: ZoneInfo, data: str, event: Event) -> None:
        with self.lock:
            self.items[(zone.key, data)] = event
            self.items.move_to_end((zone.key, data))
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def read(self, zone: ZoneInfo, data: str) -> Event:
        """The Event of a stored message (Hl7Error, KeyError, ValueError when it cannot be read)."""
        event = self.get(zone, data)
        if event is None:
            event = read_event(parse(base64.b64decode(data), stored=True), zone)
            self.put(zone, data, event)
        return event


EVENTS = Events(1024)  # about 16 KiB an Event: some 16 MiB


def _previous(svc: Services, uow: UnitOfWork, enc_id: str, event: Event, zone: ZoneInfo) -> list[Event]:
    """The stay's earlier messages, from the Binaries their Provenances keep (read in one query)."""
    references: list[str] = []
    for provenance in svc.searcher.match(uow.connection, "Provenance", f"target=Encounter/{enc_id}", 1000):
        for entity in provenance.json().get("entity", []):
            reference = str(entity.get("what", {}).get("reference", ""))
            if reference.startswith("Binary/"):
                references.append(reference)
    binaries = _current(uow, [("Binary", r.split("/", 1)[1]) for r in references])
    events: list[Event] = []
    for reference in references:
        binary = binaries.get(("Binary", reference.split("/", 1)[1]))
        if binary is None:
            continue
        try:
            earlier = EVENTS.read(zone, binary.json()["data"])
        except (Hl7Error, KeyError, ValueError):
            log.warning("stored message %s can no longer be read; left out of the stay", reference)
            continue
        if (earlier.facility, earlier.control_id) != (event.facility, event.control_id):
            events.append(earlier)
    return events


def _current(uow: UnitOfWork, keys: list[tuple[str, str]]) -> dict[tuple[str, str], Stored]:
    """The current, not deleted, versions of these resources (absent ones left out): one indexed query
    per resource type."""
    found = uow.repository.current_of(keys)
    return {key: stored for key, stored in found.items() if not stored.deleted}


def _existing(
    found: dict[tuple[str, str], Stored], res_type: str, res_id: str
) -> tuple[Json | None, int | None]:
    stored = found.get((res_type, res_id))
    if stored is None:
        return None, None
    return stored.json(), stored.version_id


def _hands_over(event: Event) -> bool:
    """Whether the event makes handover Tasks, the only ones that list the patient's Devices."""
    return "handover" in MAPPINGS.triggers[event.trigger]["creates"]


def _put(ids: SourceIds, resource: Json, version: int | None) -> Json:
    entry: Json = {
        "fullUrl": ids.urn(resource["resourceType"], resource["id"]),
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
    }
    if version is not None:
        entry["request"]["ifMatch"] = f'W/"{version}"'
    return entry


def plan(svc: Services, event: Event, raw: bytes, zone: ZoneInfo, uow: UnitOfWork) -> Json | None:
    """The transaction Bundle for `event`, or None when the message was processed before."""
    ids = SourceIds.of(svc.settings)
    mid = message_id(ids, event.facility, event.control_id)
    enc_id, plan_id, team_id = stay_ids(ids, event.facility, event.visit)
    keys = [("Provenance", mid), ("Encounter", enc_id), ("CarePlan", plan_id), ("CareTeam", team_id)]
    stay_now = _current(uow, keys)
    if ("Provenance", mid) in stay_now:
        return None
    system, value = event.identifier
    found = svc.searcher.match(uow.connection, "Patient", f"identifier={system}|{value}")
    if len(found) > 1:
        raise Hl7Error("AE", f"More than one Patient has the identifier {value}", "PID-3", "207")
    current_patient = found[0] if found else None
    events = [*_previous(svc, uow, enc_id, event, zone), event]
    refs = Refs(ids, patient=ids.urn("Patient", system, value))
    ctx = Context(zone, refs)
    if current_patient is not None and any(_hands_over(e) for e in events):
        home = devices_at_home(uow.connection, current_patient.res_id)  # every one: nothing capped
        ctx.devices = home.references("Device")
        ctx.device_requests = home.references("DeviceRequest")
    stay = engine.fold(events, ctx)
    entries: list[Json] = []

    person = engine.patient(current_patient.json() if current_patient else None, events, zone)
    patient_entry: Json = {
        "fullUrl": refs.patient,
        "resource": person,
        "request": {"method": "PUT", "url": f"Patient?identifier={system}|{value}"},
    }
    if current_patient is not None:
        person["id"] = current_patient.res_id
        patient_entry["request"]["ifMatch"] = f'W/"{current_patient.version_id}"'
    entries.append(patient_entry)

    written: list[str] = [f"Encounter/{enc_id}"]
    version = _existing(stay_now, "Encounter", enc_id)[1]
    entries.append(_put(ids, stay.encounter, version))
    tasks = _current(uow, [("Task", task_id) for task_id in stay.tasks])
    for task_id, task in stay.tasks.items():
        current, version = _existing(tasks, "Task", task_id)
        if current is not None:
            if current.get("status") in TERMINAL:
                continue  # answered or cancelled before: it stays as it is
            if task["status"] == "requested" and current.get("status") != "requested":
                continue  # the receiver has taken it on: their state wins
        entries.append(_put(ids, task, version))
        written.append(f"Task/{task_id}")
    if stay.careplan is not None and stay.careteam is not None:
        current, version = _existing(stay_now, "CarePlan", plan_id)
        plan = stay.careplan
        if current is not None:
            plan = {**current, **plan, "status": current.get("status", "draft")}
            plan.pop("meta", None)
        entries.append(_put(ids, plan, version))
        entries.append(_put(ids, stay.careteam, _existing(stay_now, "CareTeam", team_id)[1]))
        written += [f"CarePlan/{plan_id}", f"CareTeam/{team_id}"]

    sender = refs.org(event.facility, event.facility_name)
    master = [
        *(
            ("Organization", hsa, full_url, engine.organization(hsa, name))
            for hsa, (full_url, name) in refs.organizations.items()
        ),
        *(
            ("Practitioner", hsa, full_url, engine.practitioner(who))
            for hsa, (full_url, who) in refs.practitioners.items()
        ),
    ]
    # Master data stored before is referred to as it is; the rest is created when missing (a
    # conditional create, which would only find what is read here: Organizations and Practitioners are
    # visible to every client, docs/security.md).
    holders = uow.repository.held_by((res_type, HSA, hsa) for res_type, hsa, _, _ in master)
    known: dict[str, str] = {}
    for res_type, hsa, full_url, resource in master:
        holder = holders.get((res_type, HSA, hsa))
        if holder is not None and not holder.deleted:
            known[full_url] = f"{res_type}/{holder.res_id}"
        else:
            entries.append(_conditional_create(full_url, resource, hsa))

    binary = {
        "resourceType": "Binary",
        "id": mid,
        "contentType": "application/hl7-v2",
        "data": stored_data(raw),
    }
    entries.append(_put(ids, binary, None))
    provenance = {
        "resourceType": "Provenance",
        "id": mid,
        "target": [{"reference": refs.patient}, *({"reference": r} for r in written)],
        "occurredDateTime": fhir_time(event.event_time),
        "recorded": fhir_time(event.sent),
        "reason": [{"text": f"HL7 v2 ADT^{event.trigger} {event.control_id}"}],
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "author",
                        }
                    ]
                },
                "who": sender,
            }
        ],
        "entity": [{"role": "source", "what": {"reference": f"Binary/{mid}"}}],
    }
    entries.append(_put(ids, provenance, None))
    return {"resourceType": "Bundle", "type": "transaction", "entry": _referring(entries, known)}


def _referring(value: Any, known: dict[str, str]) -> Any:
    """`value` with each reference to a fullUrl in `known` made a reference to what it names."""
    if not known:
        return value
    if isinstance(value, list):
        return [_referring(item, known) for item in value]
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str) and reference in known:
            return {**value, "reference": known[reference]}
        return {key: _referring(item, known) for key, item in value.items()}
    return value


def _conditional_create(full_url: str, resource: Json, hsa: str) -> Json:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {
            "method": "POST",
            "url": resource["resourceType"],
            "ifNoneExist": f"identifier={HSA}|{hsa}",
        },
    }
