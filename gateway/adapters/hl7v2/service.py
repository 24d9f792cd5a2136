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
import contextlib
import logging
import threading
import time
from concurrent.futures import BrokenExecutor, Executor
from dataclasses import dataclass
from functools import partial
from zoneinfo import ZoneInfo

from starlette.concurrency import run_in_threadpool

from gateway.adapters import quarantine
from gateway.adapters.binding import Bound, in_source, owner
from gateway.adapters.hl7v2 import engine
from gateway.adapters.hl7v2.ack import Ack
from gateway.adapters.hl7v2.events import read_event
from gateway.adapters.hl7v2.message import Hl7Error, Message, parse, unframe
from gateway.adapters.hl7v2.planning import EVENTS, plan, stored_data
from gateway.adapters.hl7v2.senders import NotAccepted, Senders, not_accepted
from gateway.adapters.intake import AdapterClient
from gateway.errors import FhirError
from gateway.fhir.outcome import operation_outcome
from gateway.fhir.transaction import run_transaction
from gateway.hooks import Principal, RequestContext
from gateway.model.types import Json
from gateway.services import Services
from gateway.store.database import is_sqlite
from gateway.telemetry.metrics import adapter_outcome

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


_LOCKS = tuple(threading.Lock() for _ in range(256))


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
    result: Result = await run_in_threadpool(
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
    adapter_outcome("hl7v2", 200 if result.ack.code == "AA" else 400)  # AA stored, AE and AR rejected
    return result


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
                bundle = svc.write_path.run(context, partial(plan, svc, event, data, zone), False)
                if bundle is None:
                    return Result(ack_base("AA"), duplicate=True, principal=written)
                with _writer(svc):
                    run_transaction(svc, context, bundle)
                EVENTS.put(zone, stored_data(data), event)  # the stay's next message need not parse it
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


def plan_bundle(svc: Services, data: bytes) -> Json | None:
    """The Bundle a message would become against the current database (for golden tests and tools)."""
    zone = ZoneInfo(svc.settings.local_timezone)
    event = read_event(parse(data), zone)
    return svc.write_path.run(context_for(svc), partial(plan, svc, event, data, zone), False)
