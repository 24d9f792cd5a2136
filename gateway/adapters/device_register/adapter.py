"""The device register adapter: each CSV row checked (also that the client is bound to its source, the
register and owner: gateway/adapters/binding.py), compared with what is stored (a row identical to what
is stored writes nothing), mapped to a transaction Bundle and handed to the common write path in the
context of its source; a rejected row is quarantined verbatim (with the header, so it can be replayed on
its own) under the client that sent it. Each row's answer is one `batch-response` entry; a full export
then marks the units it no longer lists.

A registered client's rows reach only what its sources own: a unit another owner holds is refused as the
write path would refuse it (403, telling nothing of it), a unit is linked only to order lines its owner
performs, and a full export marks missing only the units of the owners it names and the client is bound
to. The gateway itself (auth off, the CLI without `--client`, replay) works on the whole register."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from gateway.adapters import mapping as m
from gateway.adapters.binding import Bound, in_source, owner, refusal
from gateway.adapters.device_register import device, missing, to_fhir
from gateway.adapters.device_register.known import foreign, read_known
from gateway.adapters.device_register.ledger import Ledger
from gateway.adapters.device_register.parse import RegisterCsv, Row, typed, verbatim
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
from gateway.adapters.registry import register
from gateway.errors import FhirError, Issue
from gateway.fhir.transaction import run_transaction
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.search.dates import to_instant, utc_now
from gateway.services import Services
from gateway.telemetry.metrics import adapter_entries

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
    found: dict[str, dict[str, Any]] = m.tables(device.SOURCE)["fields"]
    return found


def required_columns() -> list[str]:
    return [name for name, spec in fields().items() if spec.get("required")]


def open_csv(chunks: Iterable[str]) -> RegisterCsv:
    """The export with its header checked (raises HeaderError)."""
    return RegisterCsv(chunks, required_columns())


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
    bound: Bound | None = None  # the sources the client is bound to (None: read when first needed)

    @property
    def binding(self) -> Bound:
        if self.bound is None:
            self.bound = Bound.of(self.svc.engine, self.context)
        return self.bound

    @property
    def ids(self) -> SourceIds:
        return SourceIds.of(self.svc.settings)

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
        """Each row checked, the good ones then written many in one unit of work a source
        (`write_grouped`), in that source's context: what is stored of them read together, a row that
        changes nothing answered from that read alone."""
        raws = [verbatim(self.header, row) for row in rows]
        answers: dict[int, Json | Rejection] = {}
        records: dict[int, Json] = {}
        by_source: dict[str, list[int]] = {}
        for index, row in enumerate(rows):
            try:
                record = self._check(row)
                by_source.setdefault(self._admitted(record), []).append(index)
                records[index] = record
            except Rejection as rejection:
                answers[index] = rejection
        for source, todo in by_source.items():
            self._write(in_source(self.context, source), records, raws, todo, answers)
        return [(raw, answers[index]) for index, raw in enumerate(raws)]

    def _write(
        self,
        context: RequestContext,
        records: dict[int, Json],
        raws: list[bytes],
        todo: list[int],
        answers: dict[int, Json | Rejection],
    ) -> None:
        """Rows of one source written in its `context`, their answers put in `answers`."""
        built: dict[int, tuple[Json, list[Issue], to_fhir.Known]] = {}
        restricted = not self.binding.gateway

        def plan(todo: list[int]) -> tuple[list[tuple[int, Json]], list[int]]:
            group: list[tuple[int, Json]] = []
            knowns = read_known(self.svc, context, [records[i] for i in todo], restricted)
            for index, known in zip(todo, knowns, strict=True):
                try:
                    self._not_foreign(records[index], known)
                except Rejection as rejection:
                    answers[index] = rejection
                    continue
                bundle, notes = to_fhir.build(records[index], raws[index], known, _now(), self.ids)
                if bundle["entry"]:
                    built[index] = (bundle, notes, known)
                    group.append((index, bundle))
                    continue
                try:
                    answers[index] = self._unchanged(context, records[index], known, notes)
                except Rejection as rejection:
                    answers[index] = rejection
            return group, []

        def written(index: int, response: Json) -> None:
            bundle, notes, known = built[index]
            answers[index] = _answer(bundle, response, known, notes)

        def alone(index: int) -> None:
            try:
                answers[index] = self._store(context, records[index], raws[index])
            except Rejection as rejection:
                answers[index] = rejection

        write_grouped(self.svc, context, todo, plan, written, alone)

    def note_listed(self, row: Row) -> None:
        """Note the row's unit as listed by this export (a full export marks the units it does not list)."""
        register, number = row.values.get("register"), row.values.get("individnummer")
        if register and number:
            self.ledger.note(register, number, row.values.get("agare_hsaid") or None)

    def _check(self, row: Row) -> Json:
        """The row as typed values, checked against the register's field table and the rest of the export."""
        self.note_listed(row)
        if row.error is not None:
            raise Rejection(400, [Issue("error", "structure", row.error, (f"line {row.line}",))])
        record = typed(row.values, fields())
        issues = m.check(record, device.SOURCE, "row")
        if issues:
            raise Rejection(400, _at_line(row.line, issues))
        key = device.unit_key(record)
        content = to_fhir.content_key(record)
        earlier = self.ledger.first(key, row.line, content)
        if earlier[1] != content:
            message = (
                f"line {row.line}: {record['register']} {record['individnummer']} is also listed on line "
                f"{earlier[0]} with other content"
            )
            raise Rejection(409, [Issue("error", "conflict", message, ("individnummer",))])
        return record

    def _admitted(self, record: Json) -> str:
        """The row's source, if the client is bound to it; else Rejection (403, as for any source)."""
        source = to_fhir.source_of(record)
        if not self.binding.admits(source):
            raise Rejection(403, [refusal(source, ("register", "agare_hsaid"))])
        return source

    def _not_foreign(self, row: Json, known: to_fhir.Known) -> None:
        """A registered client's row for a unit another owner holds: refused as the write path would
        refuse a change of a resource the client may not change, telling nothing of it."""
        if not self.binding.gateway and foreign(row, known):
            message = f"This client may not change {row['register']} {row['individnummer']}"
            raise Rejection(403, [Issue("error", "forbidden", message, ("individnummer",))])

    async def _reject(self, row: Row, raw: bytes, rejection: Rejection) -> Json:
        register, number = row.values.get("register"), row.values.get("individnummer")
        owned_by = row.values.get("agare_hsaid")
        unit = " ".join(u for u in (register, number) if u)
        if register and number and owned_by:
            unit = f"{register.strip().upper()}@{owned_by} {number}"
        where = Quarantine(self.svc.engine, NAME, owner(self.context), self.keep_rejected)
        return await reject(where, rejection, raw, "text/csv", unit or f"line {row.line}", bool(unit))

    def _unchanged(
        self, context: RequestContext, row: Json, known: to_fhir.Known, notes: list[Issue]
    ) -> Json:
        """The answer to a row whose Bundle writes nothing: the unit is stored as the row says."""
        device = known.device
        if device is not None and not self.svc.write_path.can_read(context, "Device", device.res_id):
            # another organisation's unit: answered as the write path would, telling nothing
            message = f"This client may not change {row['register']} {row['individnummer']}"
            raise Rejection(403, [Issue("error", "forbidden", message, ("individnummer",))])
        location = f"Device/{device.res_id}/_history/{device.version}" if device else None
        message = f"{row['register']} {row['individnummer']} is stored as the row says; nothing changed"
        return entry(200, [Issue("information", "informational", message), *notes], location)

    def _store(
        self, context: RequestContext, row: Json, raw: bytes, known: to_fhir.Known | None = None
    ) -> Json:
        """Build the row's Bundle on `known` (None: read it now) and write it by itself; built on what
        another writer (or an earlier row of the chunk) has changed since, the write fails whole and the
        row is read and built again."""
        for attempt in range(ATTEMPTS):
            if attempt or known is None:
                known = read_known(self.svc, context, [row], not self.binding.gateway)[0]
            self._not_foreign(row, known)
            bundle, notes = to_fhir.build(row, raw, known, _now(), self.ids)
            if not bundle["entry"]:
                return self._unchanged(context, row, known, notes)
            try:
                response = run_transaction(self.svc, context, bundle)
            except FhirError as error:
                if _stale(error, known) and attempt < ATTEMPTS - 1:
                    continue  # built on what another writer has changed since: read and build again
                status = 409 if error.status in (409, 412) else (error.status if error.status < 500 else 422)
                raise Rejection(status, explain(error, bundle)) from error
            return _answer(bundle, response, known, notes)
        raise AssertionError("unreachable")

    async def finish(self) -> list[Json]:
        """After a full export: each unit of its registers it no longer lists gets the tag
        missing-from-register (one entry each, `missing.mark`); a delta export touches nothing else."""
        if self.mode != "full":
            return []
        return await missing.mark(self.svc, self.context, self.binding, self.ledger)


def _now() -> str:
    return to_instant(utc_now())


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
        answered = [*entries, *await importer.finish()]
        adapter_entries(NAME, answered)
        return answered
    finally:
        importer.ledger.close()


class DeviceRegisterAdapter:
    name = NAME
    client = CLIENT

    def replay(self, services: Services, context: RequestContext, payload: bytes, content_type: str) -> Json:
        """Process a quarantined row (header + row) again as a delta, as `context`; not quarantined
        twice."""
        export = open_csv([payload.decode("utf-8-sig", errors="replace")])
        importer = Importer(services, context, export.header_text, "delta", keep_rejected=False)
        return batch_response(asyncio.run(import_rows(importer, list(export.rows()))))


ADAPTER = register(DeviceRegisterAdapter())
