"""One message in, one ACK out: parse → read the stay → fold → one transaction Bundle → run_transaction.

Every entrance (MLLP, HTTP, files, replay) calls `handle`, which does it all in one call on a worker
thread (`handle_sync`). It never raises: an unreadable or unsupported message is `AR`, a message that
cannot be applied is `AE` (kept in the quarantine), and a database conflict with a concurrent writer
re-plans the message from the state that writer left. A registered client may send only the messages of
the sending facilities (MSH-4) it is bound to (`hl7v2:<HSA-id>`): any other is `AR`, the same answer as
for a facility the MLLP listener does not accept, and is quarantined under the client. The message's
writes run in the context of its source, `hl7v2:<MSH-4>`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import BrokenExecutor, Executor
from dataclasses import dataclass
from functools import partial
from typing import Any
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool

from gateway.adapters import quarantine
from gateway.adapters.binding import Bound, in_source, owner
from gateway.adapters.hl7v2 import engine
from gateway.adapters.hl7v2.ack import Ack
from gateway.adapters.hl7v2.engine import TERMINAL, Context, Refs, message_id, stay_ids
from gateway.adapters.hl7v2.events import Event, read_event
from gateway.adapters.hl7v2.mappings import MAPPINGS
from gateway.adapters.hl7v2.message import Hl7Error, Message, fhir_time, parse, unframe
from gateway.adapters.hl7v2.senders import NotAccepted, Senders, not_accepted
from gateway.adapters.ids import SourceIds
from gateway.adapters.intake import AdapterClient
from gateway.errors import FhirError
from gateway.fhir.outcome import operation_outcome
from gateway.fhir.transaction import run_transaction
from gateway.hooks import Principal, RequestContext
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.services import Services
from gateway.store.database import is_sqlite
from gateway.store.repository import Stored
from gateway.workflow.at_home import devices_at_home

log = logging.getLogger("gateway.adapters.hl7v2")
NAME = "hl7v2"
CLIENT_ID = "adapter:hl7v2"
ATTEMPTS = 6
HSA = engine.HSA
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
# The adapter as a client of the write path: a client using it (REST caller, `--client`, a facility's
# client over MLLP) writes with these scopes added to its own (docs/security.md).
CLIENT = AdapterClient(CLIENT_ID, SCOPES)


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


def _lock(facility: str, visit: str) -> threading.Lock:
    """The lock that serialises the messages of one stay in this process (one of a fixed set: two
    stays may share one, which only makes them wait for each other)."""
    return _LOCKS[hash((facility, visit)) % len(_LOCKS)]


_SQLITE_WRITER = threading.Lock()


def _writer(svc: Services) -> contextlib.AbstractContextManager[object]:
    """SQLite takes one writer at a time and makes the others poll (sleeping ever longer): this
    process's messages queue for it here instead. PostgreSQL takes concurrent writers."""
    return _SQLITE_WRITER if is_sqlite(svc.engine) else contextlib.nullcontext()


def _stored(data: bytes) -> str:
    """The message as its Binary keeps it (`Binary.data`)."""
    return base64.b64encode(unframe(data)).decode()


class _Events:
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


_LOCKS = tuple(threading.Lock() for _ in range(256))
_events = _Events(1024)  # about 16 KiB an Event: some 16 MiB


async def handle(
    svc: Services,
    data: bytes,
    *,
    organization: str | None = None,
    principal: Principal | None = None,
    senders: Senders | None = None,
    source_address: str | None = None,
    content_type: str = "application/hl7-v2",
    keep_rejected: bool = True,
    parse_pool: Executor | None = None,
) -> Result:
    """Process one message; give the acknowledgement to send. Never raises. The message is written as
    `principal` when given (the calling client of `POST /adapters/hl7v2`, `gateway import hl7 --client`),
    whatever its sending facility; else, with `senders` (MLLP), the sending facility must be accepted and
    it is written as the facility's client, the adapter's writes added to its scopes; else as the
    adapter's own client (`adapter:hl7v2`, organisation `organization` or MSH-4).

    All of it (parse, the sender's client, the stay's reads, the transaction, the quarantine) runs in
    one call on a worker thread: one hand-over a message, and the event loop is free meanwhile. With a
    `parse_pool` (processes) the message is parsed there first, so that parsing, the costliest step,
    runs beside this process's database work instead of under its interpreter lock."""
    parsed = await _parse_in(parse_pool, data) if parse_pool is not None else None
    return await run_in_threadpool(
        handle_sync,
        svc,
        data,
        organization=organization,
        principal=principal,
        senders=senders,
        source_address=source_address,
        content_type=content_type,
        keep_rejected=keep_rejected,
        parsed=parsed,
    )


async def _parse_in(pool: Executor, data: bytes) -> Message | Exception | None:
    """`parse(data)` run in `pool`: the Message, or the exception it raised; None when the pool cannot
    run it (shut down or broken: the message is then parsed on the worker thread as without a pool)."""
    try:
        future = pool.submit(parse, data)
    except (BrokenExecutor, RuntimeError):
        log.warning("the parse pool is shut down or broken; parsing in process")
        return None
    try:
        message: Message = await asyncio.wrap_future(future)
        return message
    except BrokenExecutor:
        log.warning("the parse pool broke; parsing in process")
        return None
    except Exception as error:
        return error


def handle_sync(
    svc: Services,
    data: bytes,
    *,
    organization: str | None = None,
    principal: Principal | None = None,
    senders: Senders | None = None,
    source_address: str | None = None,
    content_type: str = "application/hl7-v2",
    keep_rejected: bool = True,
    parsed: Message | Exception | None = None,
) -> Result:
    """`handle` on the calling thread (which it blocks, the database included); `parsed` is what
    `parse(data)` gave elsewhere, Message or exception (None: parse it here)."""
    control, app, facility, trigger = _salvage(data)
    try:
        if parsed is None:
            message = parse(data)
        elif isinstance(parsed, Message):
            message = parsed
        else:
            raise parsed
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
        principal = principal or _admit(svc, senders, message.facility)
    except NotAccepted as refused:
        ack = ack_base("AR", text=refused.text, location="MSH-4", hl7_error="207")
        return Result(ack, _outcome(refused.text, "MSH-4"))
    except Exception as error:  # the clients table cannot be read: try again later
        log.exception("could not look up the client of sending facility %s", message.facility)
        return Result(ack_base("AE", text=f"Internal error: {type(error).__name__}", hl7_error="207"))
    context = context_for(svc, organization or message.facility, principal)
    context.source_address = source_address
    written = context.principal
    rejected = partial(_rejected, svc, data, content_type, message.facility, keep_rejected, written)
    source = f"{engine.SOURCE}:{message.facility}"
    try:
        bound = Bound.of(svc.engine, context)
    except Exception as error:  # the clients' sources cannot be read: try again later
        log.exception("could not read the sources of client %s", written.client_id)
        return Result(ack_base("AE", text=f"Internal error: {type(error).__name__}", hl7_error="207"))
    if not bound.admits(source):  # the same AR as for a facility the listener does not accept
        text = not_accepted(message.facility)
        ack = ack_base("AR", text=text, location="MSH-4", hl7_error="207")
        return rejected(ack, _outcome(text, "MSH-4"), unbound=True)
    context = in_source(context, source)
    zone = ZoneInfo(svc.settings.local_timezone)
    try:
        event = read_event(message, zone)
    except Hl7Error as error:
        ack = ack_base(error.code, text=error.text, location=error.location, hl7_error=error.hl7_error)
        outcome = _outcome(error.text, error.location)
        return rejected(ack, outcome)
    with _lock(event.facility, event.visit):
        for attempt in range(ATTEMPTS):
            try:
                bundle = svc.write_path.run(context, partial(_plan, svc, event, data, zone), False)
                if bundle is None:
                    return Result(ack_base("AA"), duplicate=True, principal=written)
                with _writer(svc):
                    run_transaction(svc, context, bundle)
                _events.put(zone, _stored(data), event)  # the stay's next message need not parse it
                return Result(ack_base("AA"), principal=written)
            except FhirError as error:
                if error.status in (409, 412) and attempt < ATTEMPTS - 1:
                    time.sleep(0.005 * 2**attempt)
                    continue
                outcome = operation_outcome(error.issues)
                ack = ack_base("AE", text=f"{error.status}: {error}", hl7_error="207")
                return rejected(ack, outcome)
            except Hl7Error as error:
                ack = ack_base("AE", text=error.text, location=error.location, hl7_error=error.hl7_error)
                outcome = _outcome(error.text, error.location)
                return rejected(ack, outcome)
            except Exception as error:
                log.exception("unexpected error applying message %s", message.control_id)
                ack = ack_base("AE", text=f"Internal error: {type(error).__name__}", hl7_error="207")
                outcome = _outcome(str(error), "")
                return rejected(ack, outcome)
    raise AssertionError("unreachable")


def _admit(svc: Services, senders: Senders | None, facility: str) -> Principal | None:
    """The sender's client (None: the adapter's own identity) with the adapter's writes added to its
    scopes, as at the REST entrance; NotAccepted when it may not send."""
    if senders is None or senders.clients is None:
        return None
    sender = senders.admit(svc, facility)
    return CLIENT.acting_as(sender) if sender is not None else None


def _rejected(
    svc: Services,
    data: bytes,
    content_type: str,
    facility: str,
    keep: bool,
    principal: Principal,
    ack: Ack,
    outcome: Json,
    unbound: bool = False,
) -> Result:
    """An AE, or the AR of a source the client is not bound to (`unbound`), is kept verbatim in the
    quarantine (its own transaction) under the client that sent it, to be corrected and replayed; its key
    is the sending facility (MSH-4's HSA-id) and the message's control id (MSH-10)."""
    item: int | None = None
    if (ack.code == "AE" or unbound) and keep:
        try:
            key = f"{facility} {ack.control_id}"
            client_id = owner(RequestContext(principal=principal))
            item = quarantine.put(
                svc.engine, NAME, data, content_type, outcome, key[:255], client_id, bool(ack.control_id)
            )
        except Exception:
            log.exception("could not quarantine message %s", ack.control_id)
    return Result(ack, outcome, quarantined=item, principal=principal)


# -- planning: read the stay, fold its messages, build the Bundle --------------------------------------


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
            earlier = _events.read(zone, binary.json()["data"])
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


def _plan(svc: Services, event: Event, raw: bytes, zone: ZoneInfo, uow: UnitOfWork) -> Json | None:
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
        "data": _stored(raw),
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


def plan_bundle(svc: Services, data: bytes) -> Json | None:
    """The Bundle a message would become against the current database (for golden tests and tools)."""
    zone = ZoneInfo(svc.settings.local_timezone)
    event = read_event(parse(data), zone)
    return svc.write_path.run(context_for(svc), partial(_plan, svc, event, data, zone), False)
