"""One message in, one ACK out: parse → read the stay → fold → one transaction Bundle → process_bundle.

Every entrance (MLLP, HTTP, files, replay) calls `handle`. It never raises: an unreadable or unsupported
message is `AR`, a message that cannot be applied is `AE` (kept in the quarantine), and a database
conflict with a concurrent writer re-plans the message from the state that writer left."""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass
from functools import partial
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool

from gateway.adapters import quarantine
from gateway.adapters.hl7v2 import engine
from gateway.adapters.hl7v2.ack import Ack
from gateway.adapters.hl7v2.engine import TERMINAL, Context, Refs, message_id, stay_ids, urn
from gateway.adapters.hl7v2.events import Event, read_event
from gateway.adapters.hl7v2.message import Hl7Error, fhir_time, parse, unframe
from gateway.adapters.hl7v2.senders import NotAccepted, Senders
from gateway.errors import FhirError
from gateway.fhir.outcome import operation_outcome
from gateway.fhir.transaction import process_bundle
from gateway.hooks import Principal, RequestContext
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.services import Services

log = logging.getLogger("gateway.adapters.hl7v2")
NAME = "hl7v2"
CLIENT_ID = "adapter:hl7v2"
ATTEMPTS = 6
HSA = engine.HSA
_locks: dict[tuple[int, str, str], asyncio.Lock] = {}
# What the adapter itself may do when auth is on: exactly the types its Bundles read and write.
WRITTEN = (
    "Patient",
    "Encounter",
    "Task",
    "CarePlan",
    "CareTeam",
    "Organization",
    "Practitioner",
    "Provenance",
)
SCOPES = frozenset(
    {*(f"system/{t}.crus" for t in (*WRITTEN, "Binary")), "system/Device.rs", "system/DeviceRequest.rs"}
)


@dataclass(frozen=True)
class Result:
    ack: Ack
    outcome: Json | None = None  # the OperationOutcome of an AE or AR
    duplicate: bool = False
    quarantined: int | None = None
    principal: Principal | None = None  # who the message was written as (None: refused before that)

    def encode(self, zone: ZoneInfo) -> bytes:
        return self.ack.encode(zone)


def context_for(
    svc: Services, organization: str | None = None, principal: Principal | None = None
) -> RequestContext:
    """The adapter's own identity (for `organization`), or `principal` when the sender has a client."""
    return RequestContext(
        principal=principal or Principal(client_id=CLIENT_ID, organization=organization, scopes=SCOPES),
        base_url=svc.settings.base_url,
    )


def _salvage(data: bytes) -> tuple[str, str, str, str]:
    """MSH-10, MSH-3, MSH-4 and the trigger of a message that could not be parsed, as far as readable."""
    first = unframe(data).replace(b"\n", b"\r").split(b"\r", 1)[0].decode("latin-1")
    if not first.startswith("MSH") or len(first) < 4:
        return "", "", "", ""
    parts = first.split(first[3])

    def at(i: int) -> str:
        return parts[i] if len(parts) > i else ""

    kind = at(8).split("^")
    return at(9)[:50], at(2)[:50], at(3).split("^")[0][:50], kind[1][:10] if len(kind) > 1 else ""


def _outcome(text: str, location: str) -> Json:
    issue: Json = {"severity": "error", "code": "processing", "diagnostics": text}
    if location:
        issue["expression"] = [location]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def _lock(facility: str, visit: str) -> asyncio.Lock:
    key = (id(asyncio.get_running_loop()), facility, visit)
    lock = _locks.get(key)
    if lock is None:
        if len(_locks) > 10000:
            _locks.clear()
        lock = _locks[key] = asyncio.Lock()
    return lock


async def handle(
    svc: Services,
    data: bytes,
    *,
    organization: str | None = None,
    senders: Senders | None = None,
    source_address: str | None = None,
    content_type: str = "application/hl7-v2",
    keep_rejected: bool = True,
) -> Result:
    """Process one message; give the acknowledgement to send. Never raises. With `senders` (MLLP) the
    sending facility must be accepted, and the message is written as the facility's client."""
    control, app, facility, trigger = _salvage(data)
    try:
        message = parse(data)
    except Hl7Error as error:
        return Result(
            Ack("AR", control, error.text, error.location, error.hl7_error, app, facility, trigger),
            _outcome(error.text, error.location),
        )
    except Exception as error:  # a parser bug must not take the listener down
        log.exception("unexpected error parsing a message")
        return Result(Ack("AR", control, f"Unreadable message: {error}", "", "207", app, facility, trigger))
    ack_base = partial(
        Ack,
        control_id=message.control_id,
        receiving_app=message.get("MSH-3"),
        receiving_facility=message.get("MSH-4"),
        trigger=message.trigger,
    )
    try:
        principal = await _admit(svc, senders, message.facility)
    except NotAccepted as refused:
        ack = ack_base("AR", text=refused.text, location="MSH-4", hl7_error="207")
        return Result(ack, _outcome(refused.text, "MSH-4"))
    except Exception as error:  # the clients table cannot be read: try again later
        log.exception("could not look up the client of sending facility %s", message.facility)
        return Result(ack_base("AE", text=f"Internal error: {type(error).__name__}", hl7_error="207"))
    context = context_for(svc, organization or message.facility, principal)
    context.source_address = source_address
    written = context.principal
    zone = ZoneInfo(svc.settings.local_timezone)
    try:
        event = read_event(message, zone)
    except Hl7Error as error:
        ack = ack_base(error.code, text=error.text, location=error.location, hl7_error=error.hl7_error)
        outcome = _outcome(error.text, error.location)
        return await _rejected(svc, data, content_type, ack, outcome, keep_rejected, written)
    async with _lock(event.facility, event.visit):
        for attempt in range(ATTEMPTS):
            try:
                work = partial(_plan, svc, event, data, zone)
                bundle = await run_in_threadpool(svc.write_path.run, context, work, False)
                if bundle is None:
                    return Result(ack_base("AA"), duplicate=True, principal=written)
                await process_bundle(svc, context, bundle)
                return Result(ack_base("AA"), principal=written)
            except FhirError as error:
                if error.status in (409, 412) and attempt < ATTEMPTS - 1:
                    await asyncio.sleep(0.005 * 2**attempt)
                    continue
                outcome = operation_outcome(error.issues)
                ack = ack_base("AE", text=f"{error.status}: {error}", hl7_error="207")
                return await _rejected(svc, data, content_type, ack, outcome, keep_rejected, written)
            except Hl7Error as error:
                ack = ack_base("AE", text=error.text, location=error.location, hl7_error=error.hl7_error)
                outcome = _outcome(error.text, error.location)
                return await _rejected(svc, data, content_type, ack, outcome, keep_rejected, written)
            except Exception as error:
                log.exception("unexpected error applying message %s", message.control_id)
                ack = ack_base("AE", text=f"Internal error: {type(error).__name__}", hl7_error="207")
                outcome = _outcome(str(error), "")
                return await _rejected(svc, data, content_type, ack, outcome, keep_rejected, written)
    raise AssertionError("unreachable")


async def _admit(svc: Services, senders: Senders | None, facility: str) -> Principal | None:
    """The sender's client (None: the adapter's own identity); NotAccepted when it may not send."""
    if senders is None or senders.clients is None:
        return None
    return await run_in_threadpool(senders.admit, svc.engine, facility)


async def _rejected(
    svc: Services,
    data: bytes,
    content_type: str,
    ack: Ack,
    outcome: Json,
    keep: bool,
    principal: Principal | None = None,
) -> Result:
    """An AE is kept verbatim in the quarantine (its own transaction), to be corrected and replayed."""
    item: int | None = None
    if ack.code == "AE" and keep:
        try:
            key = f"{ack.receiving_facility} {ack.control_id}"
            item = await run_in_threadpool(
                quarantine.put, svc.engine, NAME, data, content_type, outcome, key[:255]
            )
        except Exception:
            log.exception("could not quarantine message %s", ack.control_id)
    return Result(ack, outcome, quarantined=item, principal=principal)


# -- planning: read the stay, fold its messages, build the Bundle --------------------------------------


def _previous(svc: Services, uow: UnitOfWork, enc_id: str, event: Event, zone: ZoneInfo) -> list[Event]:
    """The stay's earlier messages, from the Binaries their Provenances keep."""
    events: list[Event] = []
    repository = uow.repository
    for provenance in svc.searcher.match(uow.connection, "Provenance", f"target=Encounter/{enc_id}", 1000):
        for entity in provenance.json().get("entity", []):
            reference = str(entity.get("what", {}).get("reference", ""))
            if not reference.startswith("Binary/"):
                continue
            binary = repository.current("Binary", reference.split("/", 1)[1])
            if binary is None or binary.deleted:
                continue
            try:
                earlier = read_event(parse(base64.b64decode(binary.json()["data"])), zone)
            except (Hl7Error, KeyError, ValueError):
                log.warning("stored message %s can no longer be read; left out of the stay", reference)
                continue
            if (earlier.facility, earlier.control_id) != (event.facility, event.control_id):
                events.append(earlier)
    return events


def _existing(uow: UnitOfWork, res_type: str, res_id: str) -> tuple[Json | None, int | None]:
    stored = uow.repository.current(res_type, res_id)
    if stored is None or stored.deleted:
        return None, None
    return stored.json(), stored.version_id


def _put(resource: Json, version: int | None, full_url: str | None = None) -> Json:
    entry: Json = {
        "fullUrl": full_url or urn(resource["resourceType"], resource["id"]),
        "resource": resource,
        "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
    }
    if version is not None:
        entry["request"]["ifMatch"] = f'W/"{version}"'
    return entry


def _plan(svc: Services, event: Event, raw: bytes, zone: ZoneInfo, uow: UnitOfWork) -> Json | None:
    """The transaction Bundle for `event`, or None when the message was processed before."""
    mid = message_id(event.facility, event.control_id)
    if _existing(uow, "Provenance", mid)[0] is not None:
        return None
    system, value = event.identifier
    found = svc.searcher.match(uow.connection, "Patient", f"identifier={system}|{value}")
    if len(found) > 1:
        raise Hl7Error("AE", f"More than one Patient has the identifier {value}", "PID-3", "207")
    current_patient = found[0] if found else None
    enc_id, plan_id, team_id = stay_ids(event.facility, event.visit)
    events = [*_previous(svc, uow, enc_id, event, zone), event]
    refs = Refs(patient=urn("Patient", system, value))
    ctx = Context(zone, refs)
    if current_patient is not None:
        subject = f"patient=Patient/{current_patient.res_id}&status=active"
        ctx.devices = [
            f"Device/{d.res_id}" for d in svc.searcher.match(uow.connection, "Device", subject, 200)
        ]
        requests = svc.searcher.match(uow.connection, "DeviceRequest", subject, 200)
        ctx.device_requests = [f"DeviceRequest/{d.res_id}" for d in requests]
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
    version = _existing(uow, "Encounter", enc_id)[1]
    entries.append(_put(stay.encounter, version, urn("Encounter", enc_id)))
    for task_id, task in stay.tasks.items():
        current, version = _existing(uow, "Task", task_id)
        if current is not None:
            if current.get("status") in TERMINAL:
                continue  # answered or cancelled before: it stays as it is
            if task["status"] == "requested" and current.get("status") != "requested":
                continue  # the receiver has taken it on: their state wins
        entries.append(_put(task, version))
        written.append(f"Task/{task_id}")
    if stay.careplan is not None and stay.careteam is not None:
        current, version = _existing(uow, "CarePlan", plan_id)
        plan = stay.careplan
        if current is not None:
            plan = {**current, **plan, "status": current.get("status", "draft")}
            plan.pop("meta", None)
        entries.append(_put(plan, version))
        entries.append(_put(stay.careteam, _existing(uow, "CareTeam", team_id)[1]))
        written += [f"CarePlan/{plan_id}", f"CareTeam/{team_id}"]

    sender = refs.org(event.facility, event.facility_name)
    for hsa, (full_url, name) in refs.organizations.items():
        entries.append(_conditional_create(full_url, engine.organization(hsa, name), hsa))
    for hsa, (full_url, who) in refs.practitioners.items():
        entries.append(_conditional_create(full_url, engine.practitioner(who), hsa))

    binary = {
        "resourceType": "Binary",
        "id": mid,
        "contentType": "application/hl7-v2",
        "data": base64.b64encode(unframe(raw)).decode(),
    }
    entries.append(_put(binary, None))
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
    entries.append(_put(provenance, None))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


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


def plan_bundle(svc: Services, data: bytes) -> Json | None:
    """The Bundle a message would become against the current database (for golden tests and tools)."""
    zone = ZoneInfo(svc.settings.local_timezone)
    event = read_event(parse(data), zone)
    return svc.write_path.run(context_for(svc), partial(_plan, svc, event, data, zone), False)
