"""The Beställningsportalen adapter: each order checked (also that the client is bound to its portal:
gateway/adapters/binding.py), compared with what is stored (idempotency by portal, ordernummer and
version), mapped to a transaction Bundle and handed to the common write path in the context of its
source; a rejected order is quarantined verbatim under the client that sent it. Each order's answer is one
`batch-response` entry."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from gateway.adapters import mapping as m
from gateway.adapters.bestallningsportalen import to_fhir
from gateway.adapters.bestallningsportalen.parse import Piece, pieces
from gateway.adapters.binding import Bound, in_source, owner, refusal
from gateway.adapters.ids import SourceIds
from gateway.adapters.intake import (
    AdapterClient,
    Quarantine,
    Rejection,
    batch_response,
    entry,
    explain,
    found,
    holders,
    identifier_search,
    reject,
    write_grouped,
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
    return read_all(svc, context, [order])[0]


def read_all(
    svc: Services, context: RequestContext, orders: list[Json]
) -> list[tuple[to_fhir.Known, to_fhir.Known | None]]:
    """`read` for many orders in one read-only unit of work, each kind of thing read for all at once."""

    ids = SourceIds.of(svc.settings)

    def work(uow: UnitOfWork) -> list[tuple[to_fhir.Known, to_fhir.Known | None]]:
        helds = _held(uow, ids, orders)
        new = [
            i
            for i, (order, held) in enumerate(zip(orders, helds, strict=True))
            if (stored := _stored_version(held, to_fhir.order_ids(ids, order))) is None
            or stored < to_fhir.version_of(order)
        ]
        knowns = _known(svc, uow, ids, [orders[i] for i in new], [helds[i] for i in new])
        by_index = dict(zip(new, knowns, strict=True))
        return [(held, by_index.get(i)) for i, held in enumerate(helds)]

    return svc.write_path.run(context, work, write=False)


def _visible(svc: Services, context: RequestContext, order: Json, held: to_fhir.Known) -> bool:
    """Whether the client may see the stored order's first resource (its DeviceRequest or Task)."""
    first = held.by_id.get(_first_written(order, to_fhir.order_ids(SourceIds.of(svc.settings), order)))
    return first is None or svc.write_path.can_read(
        context, str(first.resource["resourceType"]), first.res_id
    )


def _held(uow: UnitOfWork, ids: SourceIds, orders: list[Json]) -> list[to_fhir.Known]:
    """Each order's own resources (deterministic ids) as stored, in one query for them all."""
    wanted = [_own_ids(to_fhir.order_ids(ids, order), order) for order in orders]
    stored = uow.repository.current_of(key for keys in wanted for key in keys)
    helds = []
    for keys in wanted:
        held = to_fhir.Known()
        for res_type, res_id in keys:
            if (holder := found(stored.get((res_type, res_id)))) is not None:
                held.by_id[f"{res_type}/{res_id}"] = holder
        helds.append(held)
    return helds


def _own_ids(oids: to_fhir.OrderIds, order: Json) -> list[tuple[str, str]]:
    """(type, id) of the order's own resources other than its lines: its Provenance, this version's
    Binary, the first resource it writes, its Tasks, follow-up plan and self-care assessment."""
    first = _first_written(order, oids).split("/")
    return [
        ("Provenance", oids.provenance),
        ("Binary", oids.binary(to_fhir.version_of(order))),
        (first[0], first[1]),
        ("Task", oids.confirm),
        ("Task", oids.task),
        ("CarePlan", oids.followup),
        ("Observation", oids.selfcare),
    ]


def _own_line(oids: to_fhir.OrderIds, stored: Found) -> bool:
    """Whether a DeviceRequest of the order's number is a line of this portal's order (its id is the
    one its line identifier gives), not one of another portal's order of the same number."""
    for identifier in stored.resource.get("identifier", []):
        if identifier.get("system") == m.ORDER_LINE and isinstance(identifier.get("value"), str):
            number, _, radnummer = identifier["value"].rpartition(":")
            return number == oids.ordernummer and stored.res_id == oids.line(radnummer)
    return False


def _known(
    svc: Services, uow: UnitOfWork, ids: SourceIds, orders: list[Json], helds: list[to_fhir.Known]
) -> list[to_fhir.Known]:
    """Everything each order touches that the gateway already holds (`helds`: what `_held` read): the
    master data they name, in a query per type for them all, and the lines of an earlier version of an
    order."""
    wanted = [_master_keys(order) for order in orders]
    every = [key for keys in wanted for kind in keys.values() for key in kind]
    held_by = holders(uow, every, by_type=len(orders) > 1)
    knowns = []
    for order, held, keys in zip(orders, helds, wanted, strict=True):
        known = to_fhir.Known(by_id=dict(held.by_id))
        [patient] = keys["patient"]
        known.patient = held_by.get(patient)
        known.organizations = {key[2]: held_by[key] for key in keys["units"] if key in held_by}
        known.practitioners = {key[2]: held_by[key] for key in keys["practitioners"] if key in held_by}
        known.roles = {key[2]: held_by[key] for key in keys["roles"] if key in held_by}
        known.devices = {key[1:]: held_by[key] for key in keys["devices"] if key in held_by}
        oids = to_fhir.order_ids(ids, order)
        if f"Provenance/{oids.provenance}" in held.by_id:
            # An earlier version is stored (every version writes the Provenance): its lines, to revoke the
            # ones this version no longer has (only this portal's: another's order may have the number).
            group = identifier_search(m.ORDER, order["ordernummer"], "group-identifier")
            for stored in svc.searcher.match(uow.connection, "DeviceRequest", group, limit=10_000):
                line = Found(stored.res_id, stored.version_id, stored.json())
                if _own_line(oids, line):
                    known.lines[stored.res_id] = line
                    known.by_id[f"DeviceRequest/{stored.res_id}"] = line
        knowns.append(known)
    return knowns


def _master_keys(order: Json) -> dict[str, list[tuple[str, str, str]]]:
    """The identifiers (type, system, value) of the master data and units an order names, by kind."""
    hsaids = [p["hsaid"] for p in to_fhir.people(order)] + to_fhir.extra_practitioners(order)
    return {
        "patient": [("Patient", *to_fhir.patient_identifier(order))],
        "units": [("Organization", m.HSA, hsaid) for hsaid in to_fhir.units(order)],
        "practitioners": [("Practitioner", m.HSA, hsaid) for hsaid in hsaids],
        "roles": [
            ("PractitionerRole", m.PRACTITIONER_ROLE, f"{person['hsaid']}@{person['enhet_hsaid']}")
            for person in to_fhir.people(order)
        ],
        "devices": [("Device", system, value) for system, value in to_fhir.unit_refs(order)],
    }


def _stored_version(known: to_fhir.Known, oids: to_fhir.OrderIds) -> int | None:
    provenance = known.by_id.get(f"Provenance/{oids.provenance}")
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


def _first_written(order: Json, oids: to_fhir.OrderIds) -> str:
    kind = m.code_map(to_fhir.SOURCE, "ordertyp")[order["ordertyp"]]
    if kind["resource"] == "DeviceRequest":
        return f"DeviceRequest/{oids.line(order['rader'][0]['radnummer'])}"
    return f"Task/{oids.task}"


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


CHUNK = 50  # orders read in one unit of work and written in one (`run_transactions`)


@dataclass(frozen=True)
class Built:
    """An order to be written: its transaction Bundle, what it was built on, the version stored before."""

    order: Json
    raw: bytes
    bundle: Json
    known: to_fhir.Known
    stored: int | None


async def import_order(
    svc: Services, context: RequestContext, piece: Piece, keep_rejected: bool = True
) -> Json:
    """One order through the adapter; its batch-response entry. Never raises for bad input."""
    [answer] = await import_chunk(svc, context, [piece], keep_rejected)
    return answer


async def import_chunk(
    svc: Services, context: RequestContext, pieces: list[Piece], keep_rejected: bool = True
) -> list[Json]:
    """Orders through the adapter, their batch-response entries in order. Never raises for bad input.
    Each is checked, also that the client is bound to its portal; what is stored of the good ones is
    read in one unit of work and they are written together (`_store_all`), a portal's in the context of
    that source, on one worker thread; the rejected ones are then quarantined under the client."""
    bound = await run_in_threadpool(Bound.of, svc.engine, context)
    answers: dict[int, Json | Rejection] = {}
    checked: dict[str, list[tuple[int, Json, bytes]]] = {}  # by source
    keys: dict[int, str] = {}
    for index, piece in enumerate(pieces):
        if (key := source_key(piece)) is not None:
            keys[index] = key
        try:
            order = _checked(piece)
            checked.setdefault(_admitted(bound, order), []).append((index, order, piece.raw.encode()))
        except Rejection as rejection:
            answers[index] = rejection
    for source, orders in checked.items():
        answers |= await run_in_threadpool(_store_all, svc, in_source(context, source), orders)
    where = Quarantine(svc.engine, NAME, owner(context), keep_rejected)
    entries = []
    for index, piece in enumerate(pieces):
        answer = answers[index]
        if isinstance(answer, Rejection):
            raw = piece.raw.encode()
            key = keys.get(index)
            answer = await reject(
                where, answer, raw, "application/json", key or f"#{piece.number}", key is not None
            )
        entries.append(answer)
    return entries


def source_key(piece: Piece) -> str | None:
    """`<portal> <ordernummer> v<version>` of an order whose number can be read, valid or not (its
    quarantine item is found by it); None when it cannot."""
    order = piece.value
    number = order.get("ordernummer") if isinstance(order, dict) else None
    if not isinstance(number, str) or not number.strip() or len(number) > 100:
        return None
    assert isinstance(order, dict)
    return f"{to_fhir.portal_of(order)} {number.strip()} v{to_fhir.version_of(order)}"


def _checked(piece: Piece) -> Json:
    """The order of a piece, if it has the fields and values the mapping needs; else Rejection."""
    if piece.error is not None:
        raise Rejection(400, [Issue("error", "structure", piece.error, ("$",))])
    order: Any = piece.value
    issues = m.check(order, to_fhir.SOURCE, "order") or _check_lines(order)
    if issues:
        raise Rejection(400, issues)
    return dict(order)


def _admitted(bound: Bound, order: Json) -> str:
    """The order's source, if the client is bound to it; else Rejection (403, as for any source)."""
    source = to_fhir.source_of(order)
    if not bound.admits(source):
        raise Rejection(403, [refusal(source, ())])
    return source


def _store_all(
    svc: Services, context: RequestContext, checked: list[tuple[int, Json, bytes]]
) -> dict[int, Json | Rejection]:
    """The checked orders' answers by index, written many in one unit of work (`write_grouped`): what is
    stored of them read together, replays answered from it, the others built on it. A second version of
    an order waits for the next read, and so does every order after it."""
    answers: dict[int, Json | Rejection] = {}
    orders = {index: (order, raw) for index, order, raw in checked}
    built: dict[int, Built] = {}

    def plan(todo: list[int]) -> tuple[list[tuple[int, Json]], list[int]]:
        group: list[tuple[int, Json]] = []
        numbers: set[str] = set()
        later: list[int] = []
        for index, (held, known) in zip(
            todo, read_all(svc, context, [orders[i][0] for i in todo]), strict=True
        ):
            order, raw = orders[index]
            if later or order["ordernummer"] in numbers:
                later.append(index)
                continue
            numbers.add(order["ordernummer"])
            try:
                prepared = _prepare(svc, context, order, raw, held, known)
            except Rejection as rejection:
                answers[index] = rejection
                continue
            if isinstance(prepared, Built):
                built[index] = prepared
                group.append((index, prepared.bundle))
            else:
                answers[index] = prepared
        return group, later

    def written(index: int, response: Json) -> None:
        answers[index] = _answer(svc, built[index], response)

    def alone(index: int) -> None:
        try:
            answers[index] = _store(svc, context, *orders[index])
        except Rejection as rejection:
            answers[index] = rejection

    write_grouped(svc, context, list(orders), plan, written, alone)
    return answers


def _prepare(
    svc: Services,
    context: RequestContext,
    order: Json,
    raw: bytes,
    held: to_fhir.Known,
    known: to_fhir.Known | None,
) -> Json | Built:
    """What an order becomes on what is stored of it: an answer given from that alone (a replay), a
    Rejection (another client's order, an older version, the same version with other content), or the
    Bundle that writes it."""
    oids, version = to_fhir.order_ids(SourceIds.of(svc.settings), order), to_fhir.version_of(order)
    ordernummer = order["ordernummer"]
    stored = _stored_version(held, oids)
    if stored is not None and not _visible(svc, context, order, held):
        # another organisation's order: answered as the write path would, telling nothing of it
        message = f"This client may not change order {ordernummer}"
        raise Rejection(403, [Issue("error", "forbidden", message, ("ordernummer",))])
    if stored is not None and version < stored:
        message = f"Order {ordernummer} version {version} is older than the stored version {stored}"
        raise Rejection(409, [Issue("error", "conflict", message, ("version",))])
    if stored == version:
        binary = held.by_id.get(f"Binary/{oids.binary(version)}")
        content = loads(base64.b64decode(binary.resource["data"])) if binary else None
        if content != order:
            message = f"Order {ordernummer} version {version} is stored with different content"
            raise Rejection(409, [Issue("error", "conflict", message, ("version",))])
        first = _first_written(order, oids)
        found = held.by_id.get(first)
        location = f"{first}/_history/{found.version}" if found else None
        message = f"Order {ordernummer} version {version} is already stored; nothing changed"
        return entry(200, [Issue("information", "informational", message)], location)
    assert known is not None  # read whenever this version is not stored
    bundle = to_fhir.build(order, raw, known, to_instant(utc_now()), SourceIds.of(svc.settings))
    return Built(order, raw, bundle, known, stored)


def _answer(svc: Services, built: Built, response: Json) -> Json:
    issues, locations = _written(built.bundle, response, built.known)
    first = _first_written(built.order, to_fhir.order_ids(SourceIds.of(svc.settings), built.order))
    return entry(201 if built.stored is None else 200, issues, locations.get(first))


def _store(svc: Services, context: RequestContext, order: Json, raw: bytes) -> Json:
    """One order read, built and written by itself; its master data changed between reading and
    writing (412), it is read and built again."""
    for attempt in range(ATTEMPTS):
        held, known = read(svc, context, order)
        prepared = _prepare(svc, context, order, raw, held, known)
        if not isinstance(prepared, Built):
            return prepared
        try:
            response = run_transaction(svc, context, prepared.bundle)
        except FhirError as error:
            if error.status == 412 and attempt < ATTEMPTS - 1:
                continue  # master data changed between reading and writing: read again
            status = 409 if error.status == 409 else (error.status if error.status < 500 else 422)
            raise Rejection(status, explain(error, prepared.bundle)) from error
        return _answer(svc, prepared, response)
    raise AssertionError("unreachable")


async def import_pieces(
    svc: Services,
    context: RequestContext,
    items: Iterable[Piece] | AsyncIterator[Piece],
    keep_rejected: bool = True,
) -> list[Json]:
    """Orders in chunks of CHUNK through `import_chunk`; their entries in order."""
    entries: list[Json] = []
    chunk: list[Piece] = []
    if isinstance(items, AsyncIterator):
        async for piece in items:
            chunk.append(piece)
            if len(chunk) == CHUNK:
                entries += await import_chunk(svc, context, chunk, keep_rejected)
                chunk = []
    else:
        for piece in items:
            chunk.append(piece)
            if len(chunk) == CHUNK:
                entries += await import_chunk(svc, context, chunk, keep_rejected)
                chunk = []
    if chunk:
        entries += await import_chunk(svc, context, chunk, keep_rejected)
    return entries


class OrderAdapter:
    name = NAME
    client = CLIENT

    def replay(self, services: Services, context: RequestContext, payload: bytes, content_type: str) -> Json:
        """Process a quarantined order (or batch) again as `context`; a still rejected one is not
        quarantined twice."""
        items = list(pieces([payload.decode("utf-8", errors="replace")], lines="ndjson" in content_type))
        return batch_response(asyncio.run(import_pieces(services, context, items, keep_rejected=False)))


ADAPTER = register(OrderAdapter())
