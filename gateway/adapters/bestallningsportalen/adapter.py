"""The Beställningsportalen adapter: each order checked (also that the client is bound to its portal:
gateway/adapters/binding.py), compared with what is stored (idempotency by portal, ordernummer and
version), mapped to a transaction Bundle and handed to the common write path in the context of its
source; a rejected order is quarantined verbatim under the client that sent it. Each order's answer is one
`batch-response` entry.

What is stored of an order is read in known.py, its Bundle built in to_fhir.py."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from gateway.adapters import mapping as m
from gateway.adapters.bestallningsportalen import to_fhir
from gateway.adapters.bestallningsportalen.known import first_written, read, read_all, stored_version, visible
from gateway.adapters.bestallningsportalen.order_keys import (
    SOURCE,
    Known,
    order_ids,
    portal_of,
    source_of,
    version_of,
)
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
    reject,
    write_grouped,
)
from gateway.adapters.mapping import Found
from gateway.adapters.registry import register
from gateway.errors import FhirError, Issue
from gateway.fhir.transaction import run_transaction
from gateway.hooks import RequestContext
from gateway.model.types import Json, loads
from gateway.search.dates import to_instant, utc_now
from gateway.services import Services
from gateway.telemetry.metrics import adapter_entries

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


def _written(bundle: Json, response: Json, known: Known) -> tuple[list[Issue], dict[str, str]]:
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
    known: Known
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
    return f"{portal_of(order)} {number.strip()} v{version_of(order)}"


def _checked(piece: Piece) -> Json:
    """The order of a piece, if it has the fields and values the mapping needs; else Rejection."""
    if piece.error is not None:
        raise Rejection(400, [Issue("error", "structure", piece.error, ("$",))])
    order: Any = piece.value
    issues = m.check(order, SOURCE, "order") or _check_lines(order)
    if issues:
        raise Rejection(400, issues)
    return dict(order)


def _admitted(bound: Bound, order: Json) -> str:
    """The order's source, if the client is bound to it; else Rejection (403, as for any source)."""
    source = source_of(order)
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
    held: Known,
    known: Known | None,
) -> Json | Built:
    """What an order becomes on what is stored of it: an answer given from that alone (a replay), a
    Rejection (another client's order, an older version, the same version with other content), or the
    Bundle that writes it."""
    oids, version = order_ids(SourceIds.of(svc.settings), order), version_of(order)
    ordernummer = order["ordernummer"]
    stored = stored_version(held, oids)
    if stored is not None and not visible(svc, context, order, held):
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
        first = first_written(order, oids)
        found = held.by_id.get(first)
        location = f"{first}/_history/{found.version}" if found else None
        message = f"Order {ordernummer} version {version} is already stored; nothing changed"
        return entry(200, [Issue("information", "informational", message)], location)
    assert known is not None  # read whenever this version is not stored
    bundle = to_fhir.build(order, raw, known, to_instant(utc_now()), SourceIds.of(svc.settings))
    return Built(order, raw, bundle, known, stored)


def _answer(svc: Services, built: Built, response: Json) -> Json:
    issues, locations = _written(built.bundle, response, built.known)
    first = first_written(built.order, order_ids(SourceIds.of(svc.settings), built.order))
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
    adapter_entries(NAME, entries)
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
