"""The Beställningsportalen adapter: each order checked, compared with what is stored (idempotency by
ordernummer + version), mapped to a transaction Bundle and handed to the common write path; a rejected
order is quarantined verbatim. Each order's answer is one `batch-response` entry."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterable
from typing import Any

from starlette.concurrency import run_in_threadpool

from gateway.adapters import mapping as m
from gateway.adapters.bestallningsportalen import to_fhir
from gateway.adapters.bestallningsportalen.parse import Piece, pieces
from gateway.adapters.intake import (
    AdapterClient,
    Rejection,
    batch_response,
    entry,
    explain,
    found,
    holders,
    identifier_search,
    reject,
)
from gateway.adapters.mapping import Found
from gateway.adapters.registry import register
from gateway.errors import FhirError, Issue
from gateway.fhir.transaction import run_transaction
from gateway.hooks import RequestContext
from gateway.model.types import Json, loads
from gateway.pipeline import UnitOfWork
from gateway.search.dates import to_instant, utc_now
from gateway.services import Services

NAME = "bestallningsportalen"
CLIENT_ID = "adapter:bestallningsportalen"
ATTEMPTS = 3  # an order whose master data changed under it (412) is read and built again


# What the adapter may do when SMART scopes are enforced: write the types an order becomes, read them.
WRITES = (
    "Patient",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Device",
    "DeviceRequest",
    "Task",
    "CarePlan",
    "Observation",
    "Provenance",
    "Binary",
)
SCOPES = frozenset(f"system/{res_type}.crus" for res_type in WRITES)
CLIENT = AdapterClient(CLIENT_ID, SCOPES)
context_for = CLIENT.context


def read(svc: Services, context: RequestContext, order: Json) -> tuple[to_fhir.Known, to_fhir.Known | None]:
    """In one read-only unit of work: what is stored of the order (its Provenance, this version's Binary,
    the first resource it wrote: a replay is answered from these alone) and, unless this version or a
    later one is stored, everything else the order touches."""
    oid, version = to_fhir.order_id(order), to_fhir.version_of(order)

    def work(uow: UnitOfWork) -> tuple[to_fhir.Known, to_fhir.Known | None]:
        held = _held(uow, order)
        stored = _stored_version(held, oid)
        return held, (None if stored is not None and stored >= version else _known(svc, uow, order, held))

    return svc.write_path.run(context, work, write=False)


def _visible(svc: Services, context: RequestContext, order: Json, held: to_fhir.Known) -> bool:
    """Whether the client may see the stored order's first resource (its DeviceRequest or Task)."""
    first = held.by_id.get(_first_written(order, to_fhir.order_id(order)))
    return first is None or svc.hooks.policy.can_read(context, first.resource)


def _held(uow: UnitOfWork, order: Json) -> to_fhir.Known:
    """The order's own resources (deterministic ids) as stored, in one query."""
    held = to_fhir.Known()
    for (res_type, res_id), stored in uow.repository.current_of(_own_ids(order)).items():
        if (holder := found(stored)) is not None:
            held.by_id[f"{res_type}/{res_id}"] = holder
    return held


def _own_ids(order: Json) -> list[tuple[str, str]]:
    """(type, id) of the order's own resources other than its lines: its Provenance, this version's
    Binary, the first resource it writes, its Tasks, follow-up plan and self-care assessment."""
    oid, version = to_fhir.order_id(order), to_fhir.version_of(order)
    first = _first_written(order, oid).split("/")
    return [
        ("Provenance", oid),
        ("Binary", f"{oid}-v{version}"),
        (first[0], first[1]),
        ("Task", f"{oid}-confirm"),
        ("Task", f"{oid}-task"),
        ("CarePlan", f"{oid}-followup"),
        ("Observation", f"{oid}-selfcare"),
    ]


def _known(svc: Services, uow: UnitOfWork, order: Json, held: to_fhir.Known) -> to_fhir.Known:
    """Everything the order touches that the gateway already holds (`held`: what `_held` read): the
    master data it names, in one query, and the lines of an earlier version of the order."""
    known = to_fhir.Known(by_id=dict(held.by_id))
    patient = ("Patient", *to_fhir.patient_identifier(order))
    units = [("Organization", m.HSA, hsaid) for hsaid in to_fhir.units(order)]
    hsaids = [p["hsaid"] for p in to_fhir.people(order)] + to_fhir.extra_practitioners(order)
    practitioners = [("Practitioner", m.HSA, hsaid) for hsaid in hsaids]
    roles = [
        ("PractitionerRole", m.PRACTITIONER_ROLE, f"{person['hsaid']}@{person['enhet_hsaid']}")
        for person in to_fhir.people(order)
    ]
    devices = [("Device", system, value) for system, value in to_fhir.unit_refs(order)]
    held_by = holders(uow, [patient, *units, *practitioners, *roles, *devices])
    known.patient = held_by.get(patient)
    known.organizations = {key[2]: held_by[key] for key in units if key in held_by}
    known.practitioners = {key[2]: held_by[key] for key in practitioners if key in held_by}
    known.roles = {key[2]: held_by[key] for key in roles if key in held_by}
    known.devices = {key[1:]: held_by[key] for key in devices if key in held_by}
    if f"Provenance/{to_fhir.order_id(order)}" in held.by_id:
        # An earlier version is stored (every version writes the Provenance): its lines, to revoke the
        # ones this version no longer has. A new order has none.
        group = identifier_search(m.ORDER, order["ordernummer"], "group-identifier")
        for stored in svc.searcher.match(uow.connection, "DeviceRequest", group, limit=10_000):
            known.lines[stored.res_id] = Found(stored.res_id, stored.version_id, stored.json())
            known.by_id[f"DeviceRequest/{stored.res_id}"] = known.lines[stored.res_id]
    return known


def _stored_version(known: to_fhir.Known, oid: str) -> int | None:
    provenance = known.by_id.get(f"Provenance/{oid}")
    if provenance is None:
        return None
    for extension in provenance.resource.get("extension", []):
        if extension.get("url") == to_fhir.SOURCE_VERSION:
            return int(extension["valueInteger"])
    return None


def _check_lines(order: Json) -> list[Issue]:
    seen: dict[Any, int] = {}
    issues = []
    for i, line in enumerate(order.get("rader") or []):
        number = line.get("radnummer") if isinstance(line, dict) else None
        if number in seen:
            where = f"rader[{i}].radnummer"
            message = f"{where} {number} is also the radnummer of rader[{seen[number]}]"
            issues.append(Issue("error", "business-rule", message, (where,)))
        elif number is not None:
            seen[number] = i
    return issues


def _first_written(order: Json, oid: str) -> str:
    kind = m.code_map(to_fhir.SOURCE, "ordertyp")[order["ordertyp"]]
    if kind["resource"] == "DeviceRequest":
        return f"DeviceRequest/{oid}-r{order['rader'][0]['radnummer']}"
    return f"Task/{oid}-task"


def _written(bundle: Json, response: Json, known: to_fhir.Known) -> tuple[list[Issue], dict[str, str]]:
    """An information issue per resource the Bundle wrote (created, updated or unchanged)."""
    held: list[Found] = [*known.by_id.values(), *known.organizations.values(), *known.practitioners.values()]
    held += [*known.roles.values(), *known.devices.values(), *([known.patient] if known.patient else [])]
    versions = {f"{found.resource['resourceType']}/{found.res_id}": found.version for found in held}
    issues, locations = [], {}
    for sent, got in zip(bundle["entry"], response.get("entry", []), strict=False):
        result = got.get("response", {})
        location = str(result.get("location", ""))
        key = "/".join(location.split("/")[:2])
        version = int(location.rsplit("/", 1)[-1]) if "/_history/" in location else 0
        if str(result.get("status", "")).startswith("201"):
            what = "created"
        elif versions.get(key) == version or sent["request"]["method"] == "POST":
            what = "unchanged"
        else:
            what = "updated"
        locations[key] = location
        issues.append(Issue("information", "informational", f"{key} {what}", (key,)))
    return issues, locations


async def import_order(
    svc: Services, context: RequestContext, piece: Piece, keep_rejected: bool = True
) -> Json:
    """One order through the adapter; its batch-response entry. Never raises for bad input."""
    raw = piece.raw.encode()
    order: Any = piece.value
    key = None
    try:
        if piece.error is not None:
            raise Rejection(400, [Issue("error", "structure", piece.error, ("$",))])
        issues = m.check(order, to_fhir.SOURCE, "order") or _check_lines(order)
        if issues:
            raise Rejection(400, issues)
        key = f"{order['ordernummer']} v{to_fhir.version_of(order)}"
        # The order's reads and its transaction on one worker thread: one hand-over per order.
        return await run_in_threadpool(_store, svc, context, order, raw)
    except Rejection as rejection:
        source_key = key or f"#{piece.number}"
        return await reject(svc.engine, NAME, rejection, raw, "application/json", source_key, keep_rejected)


def _store(svc: Services, context: RequestContext, order: Json, raw: bytes) -> Json:
    oid, version = to_fhir.order_id(order), to_fhir.version_of(order)
    ordernummer = order["ordernummer"]
    for attempt in range(ATTEMPTS):
        held, known = read(svc, context, order)
        stored = _stored_version(held, oid)
        if stored is not None and not _visible(svc, context, order, held):
            # another organisation's order: answered as the write path would, telling nothing of it
            message = f"This client may not change order {ordernummer}"
            raise Rejection(403, [Issue("error", "forbidden", message, ("ordernummer",))])
        if stored is not None and version < stored:
            message = f"Order {ordernummer} version {version} is older than the stored version {stored}"
            raise Rejection(409, [Issue("error", "conflict", message, ("version",))])
        if stored == version:
            binary = held.by_id.get(f"Binary/{oid}-v{version}")
            content = loads(base64.b64decode(binary.resource["data"])) if binary else None
            if content != order:
                message = f"Order {ordernummer} version {version} is stored with different content"
                raise Rejection(409, [Issue("error", "conflict", message, ("version",))])
            first = _first_written(order, oid)
            found = held.by_id.get(first)
            location = f"{first}/_history/{found.version}" if found else None
            message = f"Order {ordernummer} version {version} is already stored; nothing changed"
            return entry(200, [Issue("information", "informational", message)], location)
        assert known is not None  # read() reads it whenever this version is not stored
        bundle = to_fhir.build(order, raw, known, to_instant(utc_now()))
        try:
            response = run_transaction(svc, context, bundle)
        except FhirError as error:
            if error.status == 412 and attempt < ATTEMPTS - 1:
                continue  # master data changed between reading and writing: read again
            status = 409 if error.status == 409 else (error.status if error.status < 500 else 422)
            raise Rejection(status, explain(error, bundle)) from error
        issues, locations = _written(bundle, response, known)
        first = _first_written(order, oid)
        return entry(201 if stored is None else 200, issues, locations.get(first))
    raise AssertionError("unreachable")


async def import_pieces(
    svc: Services,
    context: RequestContext,
    items: Iterable[Piece] | AsyncIterator[Piece],
    keep_rejected: bool = True,
) -> list[Json]:
    entries = []
    if isinstance(items, AsyncIterator):
        async for piece in items:
            entries.append(await import_order(svc, context, piece, keep_rejected))
    else:
        for piece in items:
            entries.append(await import_order(svc, context, piece, keep_rejected))
    return entries


class OrderAdapter:
    name = NAME

    def replay(self, services: Services, context: RequestContext, payload: bytes, content_type: str) -> Json:
        """Process a quarantined order (or batch) again; a still rejected one is not quarantined twice."""
        items = list(pieces([payload.decode("utf-8", errors="replace")], lines="ndjson" in content_type))
        own = context_for(services, context.base_url)  # the adapter's own scopes, whoever replays
        return batch_response(asyncio.run(import_pieces(services, own, items, keep_rejected=False)))


ADAPTER = register(OrderAdapter())
