"""The device register adapter: each CSV row checked, compared with what is stored (a row identical to
what is stored writes nothing), mapped to a transaction Bundle and handed to the common write path; a
rejected row is quarantined verbatim (with the header, so it can be replayed on its own). Each row's
answer is one `batch-response` entry; a full export then marks the units it no longer lists."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from gateway.adapters import mapping as m
from gateway.adapters.device_register import to_fhir
from gateway.adapters.device_register.parse import RegisterCsv, Row, typed, verbatim
from gateway.adapters.intake import (
    AdapterClient,
    Rejection,
    batch_response,
    by_id,
    entry,
    explain,
    found,
    identifier_search,
    one,
    reject,
)
from gateway.adapters.mapping import Found
from gateway.adapters.registry import register
from gateway.errors import FhirError, Issue
from gateway.fhir.transaction import process_bundle
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.search.dates import to_instant, utc_now
from gateway.services import Services

NAME = "device-register"
CLIENT_ID = "adapter:device-register"
ATTEMPTS = 3  # a row whose resources changed under it (412, or its new unit created: 409) is built again
MODES = ("full", "delta")

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


def read_known(svc: Services, context: RequestContext, row: Json) -> to_fhir.Known:
    """Everything the row touches that the gateway already holds, in one read-only unit of work."""

    def many(uow: UnitOfWork, res_type: str, query: str) -> list[Found]:
        matches = (found(s) for s in svc.searcher.match(uow.connection, res_type, query, limit=1000))
        return [f for f in matches if f is not None]

    def work(uow: UnitOfWork) -> to_fhir.Known:
        known = to_fhir.Known()
        known.device = one(svc, uow, "Device", identifier_search(*to_fhir.unit_key(row)))
        known.owner = one(svc, uow, "Organization", identifier_search(m.HSA, row["agare_hsaid"]))
        person = to_fhir.patient_identifier(row)
        if person:
            known.patient = one(svc, uow, "Patient", identifier_search(*person))
        if known.device:
            device = f"Device/{known.device.res_id}"
            uses = many(uow, "DeviceUseStatement", f"device={device}")
            known.uses = [u for u in uses if u.resource.get("status") == "active"]
            code = identifier_search(m.TASK_CODES, "return-device", "code")
            tasks = many(uow, "Task", f"focus={device}&{code}")
            known.return_tasks = [t for t in tasks if t.resource.get("status") in m.OPEN_TASK]
        if row.get("forskrivning_ordernummer"):
            group = identifier_search(m.ORDER, row["forskrivning_ordernummer"], "group-identifier")
            lines = [line for line in many(uow, "DeviceRequest", group) if line.resource.get("status")]
            matching = sorted(
                (line for line in lines if _has_article(line.resource, row["artikelnummer"])),
                key=lambda line: line.res_id,
            )
            known.order_line = matching[0] if matching else None
        else:
            for use in known.uses:
                for extension in use.resource.get("extension", []):
                    reference = str((extension.get("valueReference") or {}).get("reference", ""))
                    if extension.get("url") == to_fhir.DEVICE_REQUEST_EXT and "/" in reference:
                        res_type, res_id = reference.split("/")[:2]
                        known.order_line = by_id(uow, res_type, res_id)
        task_id, message_id = to_fhir.recall_ids(row)
        for res_type, res_id in (
            ("DeviceUseStatement", to_fhir.use_id(row)),
            ("Task", task_id),
            ("Communication", message_id),
        ):
            held = by_id(uow, res_type, res_id)
            if held:
                known.by_id[f"{res_type}/{res_id}"] = held
        return known

    return svc.write_path.run(context, work, write=False)


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
    seen: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)
    listed: dict[str, set[str]] = field(default_factory=dict)

    async def row(self, row: Row) -> Json:
        """One row through the adapter; its batch-response entry. Never raises for bad input."""
        raw = verbatim(self.header, row)
        unit = (row.values.get("register"), row.values.get("individnummer"))
        if unit[0] and unit[1]:
            self.listed.setdefault(unit[0], set()).add(unit[1])
        try:
            if row.error is not None:
                raise Rejection(400, [Issue("error", "structure", row.error, (f"line {row.line}",))])
            record = typed(row.values, fields())
            issues = m.check(record, to_fhir.SOURCE, "row")
            if issues:
                raise Rejection(400, _at_line(row.line, issues))
            key = to_fhir.unit_key(record)
            content = to_fhir.content_key(record)
            earlier = self.seen.setdefault(key, (row.line, content))
            if earlier[1] != content:
                message = (
                    f"line {row.line}: {record['register']} {record['individnummer']} is also listed on line "
                    f"{earlier[0]} with other content"
                )
                raise Rejection(409, [Issue("error", "conflict", message, ("individnummer",))])
            return await self._store(record, raw)
        except Rejection as rejection:
            source_key = " ".join(u for u in unit if u) or f"line {row.line}"
            return await reject(
                self.svc.engine, NAME, rejection, raw, "text/csv", source_key, self.keep_rejected
            )

    async def _store(self, row: Json, raw: bytes) -> Json:
        for attempt in range(ATTEMPTS):
            known = await run_in_threadpool(read_known, self.svc, self.context, row)
            bundle, notes = to_fhir.build(row, raw, known, to_instant(utc_now()))
            if not bundle["entry"]:
                device = known.device
                location = f"Device/{device.res_id}/_history/{device.version}" if device else None
                message = (
                    f"{row['register']} {row['individnummer']} is stored as the row says; nothing changed"
                )
                return entry(200, [Issue("information", "informational", message), *notes], location)
            try:
                response = await process_bundle(self.svc, self.context, bundle)
            except FhirError as error:
                if _stale(error, known) and attempt < ATTEMPTS - 1:
                    continue  # built on what another writer has changed since: read and build again
                status = 409 if error.status in (409, 412) else (error.status if error.status < 500 else 422)
                raise Rejection(status, explain(error, bundle)) from error
            issues, location = _written(bundle, response)
            return entry(201 if known.device is None else 200, [*issues, *notes], location)
        raise AssertionError("unreachable")

    async def finish(self) -> list[Json]:
        """After a full export: each unit of its registers it no longer lists gets the tag
        missing-from-register (one entry each); a delta export touches nothing else."""
        if self.mode != "full":
            return []
        entries = []
        for register_name, listed in sorted(self.listed.items()):
            system = m.unit_system(register_name)
            for unit in await run_in_threadpool(self._units, system):
                values = {
                    i.get("value") for i in unit.resource.get("identifier", []) if i.get("system") == system
                }
                if values & listed:
                    continue
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

    def _units(self, system: str) -> list[Found]:
        def work(uow: UnitOfWork) -> list[Found]:
            query = identifier_search(system, "")
            units = (found(s) for s in self.svc.searcher.match(uow.connection, "Device", query, limit=10**7))
            return [u for u in units if u is not None]

        return self.svc.write_path.run(self.context, work, write=False)


async def import_rows(importer: Importer, rows: Iterable[Row]) -> list[Json]:
    entries = [await importer.row(row) for row in rows]
    return [*entries, *await importer.finish()]


class DeviceRegisterAdapter:
    name = NAME

    def replay(self, services: Services, context: RequestContext, payload: bytes, content_type: str) -> Json:
        """Process a quarantined row (header + row) again as a delta; not quarantined twice."""
        export = open_csv([payload.decode("utf-8-sig", errors="replace")])
        own = context_for(services, context.base_url)  # the adapter's own scopes, whoever replays
        importer = Importer(services, own, export.header_text, "delta", keep_rejected=False)
        return batch_response(asyncio.run(import_rows(importer, list(export.rows()))))


ADAPTER = register(DeviceRegisterAdapter())
