"""The device register adapter: each CSV row checked, compared with what is stored (a row identical to
what is stored writes nothing), mapped to a transaction Bundle and handed to the common write path; a
rejected row is quarantined verbatim (with the header, so it can be replayed on its own). Each row's
answer is one `batch-response` entry; a full export then marks the units it no longer lists."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool

from gateway.adapters import mapping as m
from gateway.adapters import quarantine
from gateway.adapters.bestallningsportalen.adapter import STATUS_TEXT, Rejection, _explain, batch_response
from gateway.adapters.device_register import to_fhir
from gateway.adapters.device_register.parse import RegisterCsv, Row, typed, verbatim
from gateway.adapters.mapping import Found
from gateway.adapters.registry import register
from gateway.errors import FhirError, Issue
from gateway.fhir.outcome import operation_outcome
from gateway.fhir.transaction import process_bundle
from gateway.hooks import Principal, RequestContext
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.search.dates import to_instant, utc_now
from gateway.services import Services
from gateway.store.repository import Stored

NAME = "device-register"
CLIENT_ID = "adapter:device-register"
ATTEMPTS = 3  # a row whose resources changed under it (412) is read and built again
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


def context_for(svc: Services, base_url: str = "") -> RequestContext:
    principal = Principal(client_id=CLIENT_ID, scopes=SCOPES)
    return RequestContext(principal=principal, base_url=base_url or svc.settings.base_url)


def fields() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = m.tables(to_fhir.SOURCE)["fields"]
    return found


def required_columns() -> list[str]:
    return [name for name, spec in fields().items() if spec.get("required")]


def open_csv(chunks: Iterable[str]) -> RegisterCsv:
    """The export with its header checked (raises HeaderError)."""
    return RegisterCsv(chunks, required_columns())


def _q(system: str, value: str) -> str:
    return "identifier=" + quote(f"{system}|{value}", safe=":/|")


def _found(stored: Stored | None) -> Found | None:
    if stored is None or stored.deleted:
        return None
    return Found(stored.res_id, stored.version_id, stored.json())


def _has_article(request: Json, article: str) -> bool:
    codings = (request.get("codeCodeableConcept") or {}).get("coding", [])
    return any(c.get("system") == m.ARTICLE and c.get("code") == article for c in codings)


def read_known(svc: Services, context: RequestContext, row: Json) -> to_fhir.Known:
    """Everything the row touches that the gateway already holds, in one read-only unit of work."""

    def one(uow: UnitOfWork, res_type: str, query: str) -> Found | None:
        found = svc.searcher.match(uow.connection, res_type, query)
        return _found(found[0]) if len(found) == 1 else None

    def many(uow: UnitOfWork, res_type: str, query: str) -> list[Found]:
        found = (_found(s) for s in svc.searcher.match(uow.connection, res_type, query, limit=1000))
        return [f for f in found if f is not None]

    def work(uow: UnitOfWork) -> to_fhir.Known:
        known = to_fhir.Known()
        known.device = one(uow, "Device", _q(*to_fhir.unit_key(row)))
        known.owner = one(uow, "Organization", _q(m.HSA, row["agare_hsaid"]))
        number = to_fhir.patient_number(row)
        if number:
            known.patient = one(uow, "Patient", _q(m.PERSONNUMMER, number))
        if known.device:
            device = f"Device/{known.device.res_id}"
            uses = many(uow, "DeviceUseStatement", f"device={device}")
            known.uses = [u for u in uses if u.resource.get("status") == "active"]
            code = quote(f"{m.TASK_CODES}|return-device", safe=":/|")
            tasks = many(uow, "Task", f"focus={device}&code={code}")
            known.return_tasks = [t for t in tasks if t.resource.get("status") in to_fhir.OPEN_TASK]
        if row.get("forskrivning_ordernummer"):
            group = "group-identifier=" + quote(f"{m.ORDER}|{row['forskrivning_ordernummer']}", safe=":/|")
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
                        known.order_line = _found(uow.repository.current(res_type, res_id))
        task_id, message_id = to_fhir.recall_ids(row)
        for res_type, res_id in (
            ("DeviceUseStatement", to_fhir.use_id(row)),
            ("Task", task_id),
            ("Communication", message_id),
        ):
            found = _found(uow.repository.current(res_type, res_id))
            if found:
                known.by_id[f"{res_type}/{res_id}"] = found
        return known

    return svc.write_path.run(context, work, write=False)


def _entry(status: int, issues: list[Issue], location: str | None = None) -> Json:
    response: Json = {"status": STATUS_TEXT.get(status, str(status)), "outcome": operation_outcome(issues)}
    if location:
        response["location"] = location
    return {"response": response}


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
            outcome = operation_outcome(rejection.issues)
            if self.keep_rejected:
                source_key = " ".join(u for u in unit if u) or f"line {row.line}"
                await run_in_threadpool(
                    quarantine.put, self.svc.engine, NAME, raw, "text/csv", outcome, source_key
                )
            return {
                "response": {
                    "status": STATUS_TEXT.get(rejection.status, str(rejection.status)),
                    "outcome": outcome,
                }
            }

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
                return _entry(200, [Issue("information", "informational", message), *notes], location)
            try:
                response = await process_bundle(self.svc, self.context, bundle)
            except FhirError as error:
                if error.status == 412 and attempt < ATTEMPTS - 1:
                    continue
                status = 409 if error.status in (409, 412) else (error.status if error.status < 500 else 422)
                raise Rejection(status, _explain(error, bundle)) from error
            issues, location = _written(bundle, response)
            return _entry(201 if known.device is None else 200, [*issues, *notes], location)
        raise AssertionError("unreachable")

    async def finish(self) -> list[Json]:
        """After a full export: each unit of its registers it no longer lists gets the tag
        missing-from-register (one entry each); a delta export touches nothing else."""
        if self.mode != "full":
            return []
        entries = []
        for register_name, listed in sorted(self.listed.items()):
            system = m.unit_system(register_name)
            for found in await run_in_threadpool(self._units, system):
                values = {
                    i.get("value") for i in found.resource.get("identifier", []) if i.get("system") == system
                }
                if values & listed:
                    continue
                bundle = to_fhir.missing_bundle(found, register_name, to_instant(utc_now()))
                if bundle is None:
                    continue
                key = f"Device/{found.res_id}"
                try:
                    response = await process_bundle(self.svc, self.context, bundle)
                except FhirError as error:
                    entries.append(
                        _entry(409 if error.status == 412 else error.status, _explain(error, bundle))
                    )
                    continue
                location = response["entry"][0]["response"].get("location")
                message = f"{key} is not listed in this full export of {register_name}: tagged missing"
                entries.append(
                    _entry(200, [Issue("information", "informational", message, (key,))], location)
                )
        return entries

    def _units(self, system: str) -> list[Found]:
        def work(uow: UnitOfWork) -> list[Found]:
            query = "identifier=" + quote(f"{system}|", safe=":/|")
            found = (_found(s) for s in self.svc.searcher.match(uow.connection, "Device", query, limit=10**7))
            return [f for f in found if f is not None]

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
