"""AuditEvent on every access: the AuditSink that turns each AccessRecord into a FHIR AuditEvent.

`record` only puts the record on a bounded queue (no database work on the request path); a background
thread drains it and inserts the AuditEvents in batches straight into the resource, version and index
tables, with index rows from the same Extractor the write path uses, so the official AuditEvent search
parameters work (`AuditEvent?patient=Patient/x` is that patient's access log). The write path is
bypassed on purpose: storing an audit record is not itself an access, and no entrance may create or
change an AuditEvent (405). When the queue is full the request fails closed with 503: nothing is served
unaudited. `AuditRequests` (ASGI) refuses requests up front while the queue is full, and audits the
requests that ended in an error before any interaction recorded them (refused tokens, 401/403, 404 …),
plus one `import` record per adapter request.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import Engine, insert
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import FhirError, Issue
from gateway.fhir.outcome import error_response
from gateway.hooks import AccessRecord, Principal, RequestContext
from gateway.model.types import Json, dumps
from gateway.search.dates import to_instant, utc_now
from gateway.search.extract import Extractor
from gateway.security import purpose
from gateway.store.bulk import insert_all
from gateway.store.database import WRITE_OPTION, writer_turn
from gateway.store.repository import _INDEX_TABLES, R, V

log = logging.getLogger("gateway.audit")

AUDIT_TYPE = "AuditEvent"
LINGER_SECONDS = 0.02  # how long the writer waits to fill a batch after its first record
HSA = "urn:oid:1.2.752.29.4.19"
CLIENT_SYSTEM = "urn:gateway:client-id"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
GATEWAY_EVENTS = "urn:gateway:audit-event"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACTIONS = {
    "create": "C",
    "import": "C",
    "read": "R",
    "vread": "R",
    "history": "R",
    "update": "U",
    "patch": "U",
    "delete": "D",
}
REST_CODES = {"read", "vread", "update", "patch", "delete", "history", "create", "search"}


def audit_unavailable() -> FhirError:
    return FhirError(
        503,
        [Issue("error", "transient", "The audit log cannot take more records now; the request was refused")],
        {"Retry-After": "1"},
    )


def action_of(record: AccessRecord) -> str:
    if record.interaction == "update" and record.status == 201:
        return "C"
    return ACTIONS.get(record.interaction, "E")  # search, transaction, refused requests: execute


def outcome_of(status: int) -> str:
    return "0" if status < 400 else "4" if status < 500 else "8"


def _query(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _client_id(client_id: str) -> Json:
    return {"identifier": {"system": CLIENT_SYSTEM, "value": client_id}}


def _agents(principal: Principal, source_address: str | None) -> list[Json]:
    """The client who asked (the requestor unless a person is named), its organisation, its person."""
    client: Json = {
        "type": {"coding": [{"system": PARTICIPATION, "code": "IRCP", "display": "information recipient"}]},
        "who": _client_id(principal.client_id),
        "altId": principal.client_id,
        "name": principal.client_id,
        "requestor": principal.person is None,
    }
    if source_address:
        client["network"] = {"address": source_address, "type": "2"}
    agents = [client]
    for hsa, requestor in ((principal.organization, False), (principal.person, True)):
        if hsa:
            agents.append(
                {"who": {"identifier": {"system": HSA, "value": hsa}}, "altId": hsa, "requestor": requestor}
            )
    return agents


def _performer(principal: Principal) -> Json:
    """The gateway itself, when it wrote on behalf of the requestor (a workflow reaction): an agent that
    performed the event without initiating it."""
    return {
        "type": {"coding": [{"system": PARTICIPATION, "code": "PRF", "display": "performer"}]},
        "who": _client_id(principal.client_id),
        "altId": principal.client_id,
        "name": principal.client_id,
        "requestor": False,
    }


def audit_event(record: AccessRecord, recorded: datetime) -> Json:
    """The AuditEvent of one AccessRecord (FHIR R4, in the manner of IHE Basic Audit Log Patterns)."""
    context = record.context
    code = record.interaction
    subtype = {"system": INTERACTION if code in REST_CODES else GATEWAY_EVENTS, "code": code}
    agents = _agents(context.requestor, context.source_address)
    if context.on_behalf_of is not None:
        agents.append(_performer(context.principal))
    entities: list[Json] = [
        {
            "what": {"reference": patient},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        }
        for patient in record.patients
    ]
    references = [f"{record.res_type}/{res_id}" for res_id in record.res_ids] + record.resources
    for reference in dict.fromkeys(references):
        if reference.startswith("Patient/") and reference in record.patients:
            continue
        entities.append(
            {
                "what": {"reference": reference},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            }
        )
    if context.query:
        query: Json = {
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "24", "display": "Query"},
            "query": _query(context.query),
            "description": context.query[:1000],
        }
        if record.res_type:
            query["name"] = record.res_type
        entities.append(query)
    event: Json = {
        "resourceType": AUDIT_TYPE,
        "type": {"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": [subtype],
        "action": action_of(record),
        "recorded": to_instant(recorded),
        "outcome": outcome_of(record.status),
        "outcomeDesc": f"{record.status}" + (f" {record.detail}" if record.detail else ""),
        "purposeOfEvent": [purpose.coding(context.requestor.purpose)],
        "agent": agents,
        "source": {
            "site": context.base_url or "gateway",
            "observer": {"display": "fhir-home-device-gateway"},
            "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
    }
    if entities:
        event["entity"] = entities
    return event


@dataclass
class _Item:
    record: AccessRecord
    recorded: datetime


class AuditQueue:
    """The AuditSink: a bounded queue drained by one background writer that inserts in batches."""

    def __init__(
        self, engine: Engine, extractor: Extractor, size: int = 10000, batch: int = 500, waits: bool = False
    ) -> None:
        self.engine = engine
        self.extractor = extractor
        self.batch = max(1, batch)
        self.waits = waits  # a full queue: wait for room (a batch command) instead of refusing (503)
        self.queue: queue.Queue[_Item] = queue.Queue(maxsize=max(1, size))
        self._writing = threading.Lock()  # held while a batch is written; `paused` holds it too
        self._start = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the request side ---------------------------------------------------------------------------

    def record(self, record: AccessRecord) -> None:
        """Queue the record, or raise 503 when the queue is full: the access must not go unaudited. A
        queue that `waits` (a batch command's) waits for the writer to make room instead."""
        self._ensure_writer()
        try:
            if self.waits:
                self.queue.put(_Item(record, utc_now()))
            else:
                self.queue.put_nowait(_Item(record, utc_now()))
        except queue.Full:
            log.error(
                "audit queue full: refused %s %s %s", record.interaction, record.res_type, record.res_ids[:5]
            )
            raise audit_unavailable() from None
        record.context.audited = True

    def full(self) -> bool:
        return self.queue.full()

    # -- the writer ---------------------------------------------------------------------------------

    def _ensure_writer(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not (self._stop.is_set() and self.queue.empty()):
            try:
                first = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            with self._writing:
                items = [first]
                # Linger a moment for more records: one commit per batch instead of one per request
                # keeps the writer from contending for SQLite's single write lock with every request.
                deadline = time.monotonic() + LINGER_SECONDS
                while len(items) < self.batch:
                    try:
                        items.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
                    except queue.Empty:
                        break
                try:
                    self._write(items)
                except Exception:  # a record that cannot be made into an AuditEvent: keep it in the log
                    log.exception("audit records not stored: %s", [i.record for i in items])
                finally:
                    for _ in items:
                        self.queue.task_done()

    def _write(self, items: list[_Item]) -> None:
        events = [audit_event(item.record, item.recorded) for item in items]
        for attempt in range(5):
            try:
                self.write(events)
                return
            except Exception:  # the database is away: retry, then keep the records in the log
                if attempt == 4:
                    for event in events:
                        log.exception("audit record not stored: %s", dumps(event))
                    return
                time.sleep(0.05 * 2**attempt)

    def write(self, events: list[Json]) -> None:
        """Insert AuditEvents (version 1, append-only) with their index rows, in one transaction."""
        now = utc_now()
        rows: list[dict[str, Any]] = []
        for event in events:
            event["id"] = str(uuid4())
            event["meta"] = {"versionId": "1", "lastUpdated": to_instant(now)}
            rows.append(
                {
                    "res_type": AUDIT_TYPE,
                    "res_id": event["id"],
                    "version_id": 1,
                    "last_updated": now,
                    "deleted": False,
                    "content": dumps(event),
                }
            )
        options = {WRITE_OPTION: True}
        with (
            self.engine.connect().execution_options(**options) as connection,
            writer_turn(connection, True),  # SQLite: in turn with the write path, not in its busy handler
            connection.begin(),
        ):
            insert_all(connection, V, [row | {"method": "POST"} for row in rows])
            rids = connection.execute(insert(R).returning(R.c.rid, sort_by_parameter_order=True), rows)
            index: dict[str, list[dict[str, Any]]] = {name: [] for name in _INDEX_TABLES}
            for rid, event in zip(list(rids.scalars()), events, strict=True):
                extracted = self.extractor.rows(event)
                for name in _INDEX_TABLES:
                    index[name].extend(row | {"rid": rid} for row in getattr(extracted, name))
            for name, table in _INDEX_TABLES.items():
                if index[name]:
                    insert_all(connection, table, index[name])

    # -- control ------------------------------------------------------------------------------------

    def flush(self) -> None:
        """Wait until every queued record is stored (tests, shutdown)."""
        if not self.queue.empty():
            self._ensure_writer()
        self.queue.join()

    def close(self) -> None:
        """Flush and stop the writer; a later record starts it again."""
        self.flush()
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the writer (tests: a blocked database)."""
        with self._writing:
            yield


class AuditRequests:
    """ASGI, outermost: refuse requests while the audit queue is full (503), and audit the requests that
    ended in an error no interaction recorded (refused tokens and scopes, unknown resources, bad
    requests), plus one `import` record per adapter request."""

    def __init__(self, app: ASGIApp, sink: AuditQueue) -> None:
        self.app = app
        self.sink = sink

    @staticmethod
    def watched(path: str) -> bool:
        if path in ("/fhir/metadata", "/fhir/.well-known/smart-configuration"):
            return False
        return path.startswith(("/fhir/", "/adapters/")) or path == "/auth/token"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.watched(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self.sink.full():
            log.error("audit queue full: refused %s %s", scope["method"], scope["path"])
            await error_response(audit_unavailable())(scope, receive, send)
            return
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self._after(scope, status)

    def _after(self, scope: Scope, status: int) -> None:
        path: str = scope["path"]
        state = scope.get("state") or {}
        context = state.get("context")
        adapter = path.startswith("/adapters/")
        if not adapter and status < 400:
            return
        if not adapter and isinstance(context, RequestContext) and context.audited:
            return
        principal = state.get("principal")
        client = scope.get("client")
        fresh = RequestContext(
            principal=principal if isinstance(principal, Principal) else Principal(),
            base_url=context.base_url if isinstance(context, RequestContext) else "",
            source_address=client[0] if client else None,
            query=scope.get("query_string", b"").decode("latin-1") or None,
        )
        parts = [part for part in path.split("/") if part]
        res_type = parts[1] if path.startswith("/fhir/") and len(parts) > 1 else None
        res_ids = [parts[2]] if res_type and len(parts) > 2 and not parts[2].startswith("_") else []
        if adapter:
            interaction = "import"
        elif path == "/auth/token":
            interaction = "token"
        else:
            interaction = _interaction(scope["method"], parts)
        detail = f"{scope['method']} {path}"
        record = AccessRecord(interaction, res_type, res_ids, status, fresh, detail)
        try:
            self.sink.record(record)
        except FhirError:
            log.error("audit record lost (queue full): %s %s -> %s", scope["method"], path, status)


def changes_audit(method: str, path: str) -> bool:
    """Whether an HTTP request would create or change an AuditEvent (answered 405)."""
    parts = [part for part in path.split("/") if part]
    if len(parts) < 2 or parts[0] != "fhir" or parts[1] != AUDIT_TYPE:
        return False
    if method == "POST":
        return len(parts) == 2  # POST AuditEvent/_search is a search
    return method in ("PUT", "PATCH", "DELETE")


def _interaction(method: str, parts: list[str]) -> str:
    """The interaction of a /fhir request that failed before recording itself."""
    rest = parts[1:]
    if not rest:
        return "transaction" if method == "POST" else "unknown"
    if len(rest) == 1:
        return {"GET": "search", "POST": "create", "PUT": "update", "DELETE": "delete"}.get(method, "unknown")
    if rest[1] == "_search":
        return "search"
    if rest[1] == "_history" or (len(rest) > 2 and rest[2] == "_history"):
        return "vread" if len(rest) == 4 else "history"
    return {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "operation")
