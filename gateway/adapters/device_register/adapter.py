"""The device register adapter: each CSV row checked, compared with what is stored (a row identical to
what is stored writes nothing), mapped to a transaction Bundle and handed to the common write path; a
rejected row is quarantined verbatim (with the header, so it can be replayed on its own). Each row's
answer is one `batch-response` entry; a full export then marks the units it no longer lists."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool

from gateway.adapters import mapping as m
from gateway.adapters.device_register import to_fhir
from gateway.adapters.device_register.ledger import Ledger
from gateway.adapters.device_register.parse import RegisterCsv, Row, typed, verbatim
from gateway.adapters.intake import (
    AdapterClient,
    Rejection,
    batch_response,
    by_id,
    entry,
    explain,
    found,
    holders,
    reject,
    write_grouped,
)
from gateway.adapters.mapping import Found
from gateway.adapters.registry import register
from gateway.errors import FhirError, Issue
from gateway.fhir.transaction import process_bundle, run_transaction
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.search.dates import to_instant, utc_now
from gateway.search.extract import parse_reference
from gateway.services import Services

NAME = "device-register"
CLIENT_ID = "adapter:device-register"
ATTEMPTS = 3  # a row whose resources changed under it (412, or its new unit created: 409) is built again
MODES = ("full", "delta")
CHUNK = 100  # rows whose stored state is read in one unit of work

# What the adapter may do when SMART scopes are enforced: write the types a row becomes, read them, and
# read the order lines a unit was delivered for.
WRITES = (
    "Patient",
    "Organization",
    "Device",
    "DeviceUseStatement",
    "Task",
    "Communication",
    "Provenance",
    "Binary",
)
SCOPES = frozenset({*(f"system/{res_type}.crus" for res_type in WRITES), "system/DeviceRequest.rs"})
CLIENT = AdapterClient(CLIENT_ID, SCOPES)
context_for = CLIENT.context


def fields() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = m.tables(to_fhir.SOURCE)["fields"]
    return found


def required_columns() -> list[str]:
    return [name for name, spec in fields().items() if spec.get("required")]


def open_csv(chunks: Iterable[str]) -> RegisterCsv:
    """The export with its header checked (raises HeaderError)."""
    return RegisterCsv(chunks, required_columns())


def _has_article(request: Json, article: str) -> bool:
    codings = (request.get("codeCodeableConcept") or {}).get("coding", [])
    return any(c.get("system") == m.ARTICLE and c.get("code") == article for c in codings)


def read_known(svc: Services, context: RequestContext, rows: list[Json]) -> list[to_fhir.Known]:
    """Everything each row touches that the gateway already holds, in one read-only unit of work."""
    return svc.write_path.run(context, lambda uow: _known(svc, uow, rows), write=False)


def _known(svc: Services, uow: UnitOfWork, rows: list[Json]) -> list[to_fhir.Known]:
    """What each row touches: its unit, owner, patient, the unit's active uses and open return Tasks,
    the order line it was delivered for, and its own resources by id. Each kind is read for all the
    rows at once (a few queries a chunk, not a few a row)."""
    repository = uow.repository
    # One query per kind: a single one would probe every type × system × value asked, here ~100 each.
    persons = [to_fhir.patient_identifier(row) for row in rows]
    held_by = holders(uow, [("Device", *to_fhir.unit_key(row)) for row in rows])
    held_by |= holders(uow, [("Organization", m.HSA, row["agare_hsaid"]) for row in rows])
    held_by |= holders(uow, [("Patient", *person) for person in persons if person])
    devices = [held_by.get(("Device", *to_fhir.unit_key(row))) for row in rows]
    units = sorted({device.res_id for device in devices if device})
    uses = _grouped(svc, uow, "DeviceUseStatement", "device", units, "device")
    tasks = _grouped(svc, uow, "Task", "focus", units, "focus", _returns_device)
    orders = sorted({row["forskrivning_ordernummer"] for row in rows if row.get("forskrivning_ordernummer")})
    lines = _order_lines(svc, uow, orders)
    own = [(row, _own_ids(row)) for row in rows]
    held = {key: f for key, stored in repository.current_of(k for _, ids in own for k in ids).items()
            if (f := found(stored)) is not None}  # fmt: skip
    knowns = []
    for (row, ids), device, person in zip(own, devices, persons, strict=True):
        known = to_fhir.Known(device=device, owner=held_by.get(("Organization", m.HSA, row["agare_hsaid"])))
        known.patient = held_by.get(("Patient", *person)) if person else None
        if device:
            reference = f"Device/{device.res_id}"
            known.uses = [u for u in uses.get(reference, []) if u.resource.get("status") == "active"]
            known.return_tasks = [
                t for t in tasks.get(reference, []) if t.resource.get("status") in m.OPEN_TASK
            ]
        if row.get("forskrivning_ordernummer"):
            matching = sorted(
                (line for line in lines.get(row["forskrivning_ordernummer"], [])
                 if _has_article(line.resource, row["artikelnummer"])),
                key=lambda line: line.res_id,
            )  # fmt: skip
            known.order_line = matching[0] if matching else None
        else:
            known.order_line = _delivered_for(uow, known.uses)
        known.by_id = {
            f"{res_type}/{res_id}": held[(res_type, res_id)]
            for res_type, res_id in ids
            if (res_type, res_id) in held
        }
        knowns.append(known)
    return knowns


_LIMIT = 1_000_000  # searches of a chunk's resources are not paged


def _escaped(value: str) -> str:
    """A search value with the characters FHIR search gives a meaning escaped (`,` `|` `$` `\\`)."""
    for char in ("\\", ",", "|", "$"):
        value = value.replace(char, "\\" + char)
    return value


def _returns_device(task: Json) -> bool:
    """A `return-device` Task (its code in the gateway's task-code CodeSystem)."""
    codings = (task.get("code") or {}).get("coding", [])
    return any(c.get("system") == m.TASK_CODES and c.get("code") == "return-device" for c in codings)


def _grouped(
    svc: Services,
    uow: UnitOfWork,
    res_type: str,
    param: str,
    devices: list[str],
    element: str,
    keep: Callable[[Json], bool] = lambda _: True,
) -> dict[str, list[Found]]:
    """The resources of `res_type` whose `param` names any of these Devices (by id) and that `keep`
    takes, by the reference their `element` holds."""
    base = svc.settings.base_url.rstrip("/")
    grouped: dict[str, list[Found]] = {}
    for stored in uow.repository.referring(res_type, param, "Device", devices, base):
        resource = found(stored)
        if resource is None or not keep(resource.resource):
            continue
        values = resource.resource.get(element)
        for value in values if isinstance(values, list) else [values]:
            reference = (value or {}).get("reference") if isinstance(value, dict) else None
            if isinstance(reference, str):
                key = parse_reference(reference, (base,))
                grouped.setdefault(f"{key.target_type}/{key.target_id}", []).append(resource)
    return grouped


def _order_lines(svc: Services, uow: UnitOfWork, orders: list[str]) -> dict[str, list[Found]]:
    """The DeviceRequests (with a status) of each order number."""
    if not orders:
        return {}
    values = ",".join(f"{_escaped(m.ORDER)}|{_escaped(number)}" for number in orders)
    query = "group-identifier=" + quote(values, safe=":/|,\\")
    lines: dict[str, list[Found]] = {}
    for stored in svc.searcher.match(uow.connection, "DeviceRequest", query, limit=_LIMIT):
        line = found(stored)
        if line is None or not line.resource.get("status"):
            continue
        group = line.resource.get("groupIdentifier") or {}
        if group.get("system") == m.ORDER and isinstance(group.get("value"), str):
            lines.setdefault(group["value"], []).append(line)
    return lines


def _delivered_for(uow: UnitOfWork, uses: list[Found]) -> Found | None:
    """The order line an active use points at (its DeviceRequest extension), when the row names none."""
    line = None
    for use in uses:
        for extension in use.resource.get("extension", []):
            reference = str((extension.get("valueReference") or {}).get("reference", ""))
            if extension.get("url") == to_fhir.DEVICE_REQUEST_EXT and "/" in reference:
                res_type, res_id = reference.split("/")[:2]
                line = by_id(uow, res_type, res_id)
    return line


def _own_ids(row: Json) -> list[tuple[str, str]]:
    task_id, message_id = to_fhir.recall_ids(row)
    return [("DeviceUseStatement", to_fhir.use_id(row)), ("Task", task_id), ("Communication", message_id)]


def _written(bundle: Json, response: Json) -> tuple[list[Issue], str | None]:
    """An information issue per resource the Bundle wrote, and the Device's location."""
    issues, device = [], None
    for sent, got in zip(bundle["entry"], response.get("entry", []), strict=False):
        result = got.get("response", {})
        location = str(result.get("location", ""))
        key = "/".join(location.split("/")[:2])
        what = "created" if str(result.get("status", "")).startswith("201") else "updated"
        if sent["resource"]["resourceType"] == "Device":
            device = location
        issues.append(Issue("information", "informational", f"{key} {what}", (key,)))
    return issues, device


def _answer(bundle: Json, response: Json, known: to_fhir.Known, notes: list[Issue]) -> Json:
    """A written row's entry: 201 for a new unit, else 200, naming every resource written."""
    issues, location = _written(bundle, response)
    return entry(201 if known.device is None else 200, [*issues, *notes], location)


def _stale(error: FhirError, known: to_fhir.Known) -> bool:
    """The write failed because the Bundle was built on a view another writer changed: a resource read
    has a newer version (412), or the unit taken for new was created meanwhile (409, identifier taken)."""
    return error.status == 412 or (error.status == 409 and known.device is None)


def _at_line(line: int, issues: list[Issue]) -> list[Issue]:
    """The checker's issues, named by CSV line and column."""
    return [
        Issue(
            i.severity,
            i.code,
            f"line {line}, column {', '.join(i.expression)}: {i.diagnostics}",
            i.expression,
        )
        for i in issues
    ]


@dataclass
class Importer:
    """One export being loaded: rows one by one, then `finish()` (a full export marks what it lacks)."""

    svc: Services
    context: RequestContext
    header: str
    mode: str = "delta"
    keep_rejected: bool = True
    ledger: Ledger = field(default_factory=Ledger)  # what the export has said, on disk: close when done

    async def rows(self, rows: list[Row]) -> list[Json]:
        """A chunk of rows through the adapter; their batch-response entries in order. Never raises for
        bad input. The chunk is checked, read and written on one worker thread; rejected rows are then
        quarantined."""
        results = await run_in_threadpool(self._chunk, rows)
        entries: list[Json] = []
        for row, (raw, result) in zip(rows, results, strict=True):
            if isinstance(result, Rejection):
                entries.append(await self._reject(row, raw, result))
            else:
                entries.append(result)
        return entries

    def _chunk(self, rows: list[Row]) -> list[tuple[bytes, Json | Rejection]]:
        """Each row checked, the good ones then written many in one unit of work (`write_grouped`): what
        is stored of them read together, a row that changes nothing answered from that read alone."""
        raws = [verbatim(self.header, row) for row in rows]
        answers: dict[int, Json | Rejection] = {}
        records: dict[int, Json] = {}
        for index, row in enumerate(rows):
            try:
                records[index] = self._check(row)
            except Rejection as rejection:
                answers[index] = rejection
        built: dict[int, tuple[Json, list[Issue], to_fhir.Known]] = {}

        def plan(todo: list[int]) -> tuple[list[tuple[int, Json]], list[int]]:
            group: list[tuple[int, Json]] = []
            for index, known in zip(
                todo, read_known(self.svc, self.context, [records[i] for i in todo]), strict=True
            ):
                bundle, notes = to_fhir.build(records[index], raws[index], known, to_instant(utc_now()))
                if bundle["entry"]:
                    built[index] = (bundle, notes, known)
                    group.append((index, bundle))
                    continue
                try:
                    answers[index] = self._unchanged(records[index], known, notes)
                except Rejection as rejection:
                    answers[index] = rejection
            return group, []

        def written(index: int, response: Json) -> None:
            bundle, notes, known = built[index]
            answers[index] = _answer(bundle, response, known, notes)

        def alone(index: int) -> None:
            try:
                answers[index] = self._store(records[index], raws[index])
            except Rejection as rejection:
                answers[index] = rejection

        write_grouped(self.svc, self.context, list(records), plan, written, alone)
        return [(raw, answers[index]) for index, raw in enumerate(raws)]

    def note_listed(self, row: Row) -> None:
        """Note the row's unit as listed by this export (a full export marks the units it does not list)."""
        register, number = row.values.get("register"), row.values.get("individnummer")
        if register and number:
            self.ledger.note(register, number)

    def _check(self, row: Row) -> Json:
        """The row as typed values, checked against the register's field table and the rest of the export."""
        self.note_listed(row)
        if row.error is not None:
            raise Rejection(400, [Issue("error", "structure", row.error, (f"line {row.line}",))])
        record = typed(row.values, fields())
        issues = m.check(record, to_fhir.SOURCE, "row")
        if issues:
            raise Rejection(400, _at_line(row.line, issues))
        key = to_fhir.unit_key(record)
        content = to_fhir.content_key(record)
        earlier = self.ledger.first(key, row.line, content)
        if earlier[1] != content:
            message = (
                f"line {row.line}: {record['register']} {record['individnummer']} is also listed on line "
                f"{earlier[0]} with other content"
            )
            raise Rejection(409, [Issue("error", "conflict", message, ("individnummer",))])
        return record

    async def _reject(self, row: Row, raw: bytes, rejection: Rejection) -> Json:
        unit = (row.values.get("register"), row.values.get("individnummer"))
        source_key = " ".join(u for u in unit if u) or f"line {row.line}"
        return await reject(self.svc.engine, NAME, rejection, raw, "text/csv", source_key, self.keep_rejected)

    def _unchanged(self, row: Json, known: to_fhir.Known, notes: list[Issue]) -> Json:
        """The answer to a row whose Bundle writes nothing: the unit is stored as the row says."""
        device = known.device
        if device is not None and not self.svc.write_path.can_read(self.context, "Device", device.res_id):
            # another organisation's unit: answered as the write path would, telling nothing
            message = f"This client may not change {row['register']} {row['individnummer']}"
            raise Rejection(403, [Issue("error", "forbidden", message, ("individnummer",))])
        location = f"Device/{device.res_id}/_history/{device.version}" if device else None
        message = f"{row['register']} {row['individnummer']} is stored as the row says; nothing changed"
        return entry(200, [Issue("information", "informational", message), *notes], location)

    def _store(self, row: Json, raw: bytes, known: to_fhir.Known | None = None) -> Json:
        """Build the row's Bundle on `known` (None: read it now) and write it by itself; built on what
        another writer (or an earlier row of the chunk) has changed since, the write fails whole and the
        row is read and built again."""
        for attempt in range(ATTEMPTS):
            if attempt or known is None:
                known = read_known(self.svc, self.context, [row])[0]
            bundle, notes = to_fhir.build(row, raw, known, to_instant(utc_now()))
            if not bundle["entry"]:
                return self._unchanged(row, known, notes)
            try:
                response = run_transaction(self.svc, self.context, bundle)
            except FhirError as error:
                if _stale(error, known) and attempt < ATTEMPTS - 1:
                    continue  # built on what another writer has changed since: read and build again
                status = 409 if error.status in (409, 412) else (error.status if error.status < 500 else 422)
                raise Rejection(status, explain(error, bundle)) from error
            return _answer(bundle, response, known, notes)
        raise AssertionError("unreachable")

    async def finish(self) -> list[Json]:
        """After a full export: each unit of its registers it no longer lists gets the tag
        missing-from-register (one entry each); a delta export touches nothing else."""
        if self.mode != "full":
            return []
        entries = []
        for register_name, system in self.ledger.registers():
            for unit in await run_in_threadpool(self._unlisted, system):
                bundle = to_fhir.missing_bundle(unit, register_name, to_instant(utc_now()))
                if bundle is None:
                    continue
                key = f"Device/{unit.res_id}"
                try:
                    response = await process_bundle(self.svc, self.context, bundle)
                except FhirError as error:
                    entries.append(
                        entry(409 if error.status == 412 else error.status, explain(error, bundle))
                    )
                    continue
                location = response["entry"][0]["response"].get("location")
                message = f"{key} is not listed in this full export of {register_name}: tagged missing"
                entries.append(entry(200, [Issue("information", "informational", message, (key,))], location))
        return entries

    def _unlisted(self, system: str) -> list[Found]:
        """The register's units (a Device with an identifier in its system) of which the export lists
        none of their identifiers; only those are read whole, so memory follows what is missing."""

        def work(uow: UnitOfWork) -> list[Found]:
            missing = self.ledger.unlisted(system, uow.repository.claims_in("Device", system))
            units = (found(stored) for stored in uow.repository.current_many(missing))
            return [unit for unit in units if unit is not None]

        return self.svc.write_path.run(self.context, work, write=False)


def in_chunks(rows: Iterable[Row], size: int = CHUNK) -> Iterator[list[Row]]:
    """The rows in lists of `size` (the last one shorter), read lazily."""
    chunk: list[Row] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def import_rows(importer: Importer, rows: Iterable[Row]) -> list[Json]:
    try:
        entries = [entry for chunk in in_chunks(rows) for entry in await importer.rows(chunk)]
        return [*entries, *await importer.finish()]
    finally:
        importer.ledger.close()


class DeviceRegisterAdapter:
    name = NAME

    def replay(self, services: Services, context: RequestContext, payload: bytes, content_type: str) -> Json:
        """Process a quarantined row (header + row) again as a delta; not quarantined twice."""
        export = open_csv([payload.decode("utf-8-sig", errors="replace")])
        own = context_for(services, context.base_url)  # the adapter's own scopes, whoever replays
        importer = Importer(services, own, export.header_text, "delta", keep_rejected=False)
        return batch_response(asyncio.run(import_rows(importer, list(export.rows()))))


ADAPTER = register(DeviceRegisterAdapter())
