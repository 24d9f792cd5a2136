"""What the source adapters (Beställningsportalen orders, device registers) share around their mapping:
the client each writes as, reading what the gateway already holds, and the answer per source record (one
`batch-response` entry each), a rejected record being quarantined verbatim."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from gateway.adapters import quarantine
from gateway.adapters.mapping import Found
from gateway.errors import FhirError, Issue
from gateway.fhir.outcome import operation_outcome
from gateway.hooks import Principal, RequestContext
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.services import Services
from gateway.store.repository import Stored

STATUS_TEXT = {200: "200 OK", 201: "201 Created", 400: "400 Bad Request", 409: "409 Conflict"}


# -- the client an adapter writes as ----------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterClient:
    """An adapter as a client of the write path: its client id, and the SMART scopes it holds (what it
    may do when scopes are enforced, whoever sent the records or replays them)."""

    client_id: str
    scopes: frozenset[str]

    def context(self, svc: Services, base_url: str = "") -> RequestContext:
        principal = Principal(client_id=self.client_id, scopes=self.scopes)
        return RequestContext(principal=principal, base_url=base_url or svc.settings.base_url)


# -- reading what is stored -------------------------------------------------------------------------------


def identifier_search(system: str, value: str, param: str = "identifier") -> str:
    """The search query for resources by one identifier (`identifier=system|value`, URL-encoded), or by
    another token parameter of that form (`group-identifier`)."""
    return f"{param}=" + quote(f"{system}|{value}", safe=":/|")


def found(stored: Stored | None) -> Found | None:
    """A stored resource as the mapping takes it; None when there is none or it is deleted."""
    if stored is None or stored.deleted:
        return None
    return Found(stored.res_id, stored.version_id, stored.json())


def one(svc: Services, uow: UnitOfWork, res_type: str, query: str) -> Found | None:
    """The resource `query` finds, when it finds exactly one."""
    matches = svc.searcher.match(uow.connection, res_type, query)
    return found(matches[0]) if len(matches) == 1 else None


def by_id(uow: UnitOfWork, res_type: str, res_id: str) -> Found | None:
    return found(uow.repository.current(res_type, res_id))


# -- the answer per record --------------------------------------------------------------------------------


@dataclass
class Rejection(Exception):
    """A source record not stored: its answer's status and every problem found."""

    status: int
    issues: list[Issue]


def entry(status: int, issues: list[Issue], location: str | None = None) -> Json:
    """One record's `batch-response` entry."""
    response: Json = {"status": STATUS_TEXT.get(status, str(status)), "outcome": operation_outcome(issues)}
    if location:
        response["location"] = location
    return {"response": response}


def batch_response(entries: list[Json]) -> Json:
    return {"resourceType": "Bundle", "type": "batch-response", "entry": entries}


async def reject(
    engine: Engine,
    adapter: str,
    rejection: Rejection,
    raw: bytes,
    content_type: str,
    source_key: str,
    keep: bool = True,
) -> Json:
    """The answer to a rejected record, which is first quarantined verbatim when `keep` (a replay of a
    quarantined record is not quarantined twice)."""
    answer = entry(rejection.status, rejection.issues)
    if keep:
        outcome = answer["response"]["outcome"]
        await run_in_threadpool(quarantine.put, engine, adapter, raw, content_type, outcome, source_key)
    return answer


def explain(error: FhirError, bundle: Json) -> list[Issue]:
    """The write path's objection, with the resource each Bundle entry stood for."""
    issues = []
    for issue in error.issues:
        diagnostics = issue.diagnostics
        for i, item in enumerate(bundle["entry"]):
            marker = f"Bundle.entry[{i}]"
            if diagnostics.startswith(marker):
                request = item["request"]
                diagnostics = (
                    f"{request['method']} {request['url']}: {diagnostics[len(marker) :].lstrip(' :')}"
                )
                break
        issues.append(Issue(issue.severity, issue.code, diagnostics, issue.expression))
    return issues
