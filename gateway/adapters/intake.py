"""What the source adapters (Beställningsportalen orders, device registers) share around their mapping:
the client each writes as, reading what the gateway already holds, and the answer per source record (one
`batch-response` entry each), a rejected record being quarantined verbatim."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import quote

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from gateway.adapters import quarantine
from gateway.adapters.mapping import Found
from gateway.errors import FhirError, Issue
from gateway.fhir.context import request_context
from gateway.fhir.http import base_url
from gateway.fhir.outcome import operation_outcome
from gateway.fhir.transaction import run_transactions
from gateway.hooks import Principal, RequestContext
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.security import purpose, store
from gateway.security.scopes import grants
from gateway.services import Services
from gateway.store.repository import Stored

STATUS_TEXT = {
    200: "200 OK",
    201: "201 Created",
    400: "400 Bad Request",
    403: "403 Forbidden",
    409: "409 Conflict",
}


# -- the client an adapter writes as ----------------------------------------------------------------------


class UnknownClient(ValueError):
    """A client named to act as (`gateway import … --client`) that cannot use the adapter."""


@dataclass(frozen=True)
class AdapterClient:
    """An adapter as a client of the write path: its client id, and the SMART scopes of the writes it
    makes (what it may do when scopes are enforced). It writes as its own client when nobody else is
    known (auth off, replay, the CLI without `--client`), else as the client that sent the records."""

    client_id: str
    scopes: frozenset[str]

    @property
    def entrance_scope(self) -> str:
        """The scope a client needs to use the adapter: `gateway/adapter.<name>`."""
        return "gateway/adapter." + self.client_id.removeprefix("adapter:")

    def context(self, svc: Services, base_url: str = "") -> RequestContext:
        principal = Principal(client_id=self.client_id, scopes=self.scopes)
        return RequestContext(principal=principal, base_url=base_url or svc.settings.base_url)

    def acting_as(self, caller: Principal) -> Principal:
        """A client using the adapter: its identity (client id, organisation, person, purpose), with the
        adapter's writes added to its scopes, which the entrance scope that let it in implies."""
        return replace(caller, scopes=caller.scopes | self.scopes)

    def request_context(self, svc: Services, request: Request) -> RequestContext:
        """The context a REST entrance writes in: the calling client's, as its token says; the adapter's
        own with GATEWAY_AUTH=off."""
        context = self.context(svc, base_url(request, svc.settings.base_url))
        if svc.settings.auth:
            context.principal = self.acting_as(request_context(request).principal)
        context.source_address = request.client.host if request.client else None
        return context

    def cli_context(self, svc: Services, client_id: str | None) -> RequestContext:
        """The context of `gateway import …`: the adapter's own, or the registered client `client_id`
        (active and holding the entrance scope), as if it had sent the records itself."""
        context = self.context(svc)
        if client_id is None:
            return context
        client = store.get_client(svc.engine, client_id)
        if client is None or not client.active:
            raise UnknownClient(f"{client_id!r} is not an active registered client")
        if not grants(frozenset(client.scopes)).has(self.entrance_scope):
            raise UnknownClient(f"the client {client_id!r} lacks the scope {self.entrance_scope}")
        purpose_of_use = purpose.client_defaults(svc.settings.client_purposes).get(client_id, purpose.DEFAULT)
        principal = Principal(
            client.client_id, client.organization, scopes=frozenset(client.scopes), purpose=purpose_of_use
        )
        context.principal = self.acting_as(principal)
        return context


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


def by_id(uow: UnitOfWork, res_type: str, res_id: str) -> Found | None:
    return found(uow.repository.current(res_type, res_id))


def holders(
    uow: UnitOfWork, keys: list[tuple[str, str, str]], by_type: bool = False
) -> dict[tuple[str, str, str], Found]:
    """The resource holding each identifier (type, system, value): identifiers are unique per type, so
    this is what `Type?identifier=system|value` finds, for any number of identifiers in one query, or
    with `by_type` one query per type (one query probes every type × system × value asked: for the
    identifiers of many records, many more than asked)."""
    groups: dict[str, list[tuple[str, str, str]]] = {}
    for key in keys:
        groups.setdefault(key[0] if by_type else "", []).append(key)
    held: dict[tuple[str, str, str], Found] = {}
    for group in groups.values():
        for key, stored in uow.repository.held_by(group).items():
            if (holder := found(stored)) is not None:
                held[key] = holder
    return held


# -- writing many records ---------------------------------------------------------------------------------


def write_grouped(
    svc: Services,
    context: RequestContext,
    todo: list[int],
    plan: Callable[[list[int]], tuple[list[tuple[int, Json]], list[int]]],
    written: Callable[[int, Json], None],
    alone: Callable[[int], None],
) -> None:
    """Source records (by their index in a chunk) written many in one unit of work. `plan` reads what is
    stored of the records, answers those it need not write, and gives the transaction Bundles of the
    others plus the records it puts off to its next call. The Bundles are written together
    (`run_transactions`), each answered by `written`, up to the first that fails or touches what an
    earlier one writes: that record is written `alone` (read, built and answered as if it had come by
    itself), and the ones after it are planned again on what is stored by then."""
    while todo:
        group, later = plan(todo)
        responses = run_transactions(svc, context, [bundle for _, bundle in group])
        for (index, _), response in zip(group, responses, strict=False):
            written(index, response)
        if len(responses) < len(group):
            alone(group[len(responses)][0])
            later = [index for index, _ in group[len(responses) + 1 :]] + later
        todo = later


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


@dataclass(frozen=True)
class Quarantine:
    """Where a rejected record goes: the quarantine, under the client that sent it (None: the gateway's
    own), or nowhere (`keep` False: a replay of a quarantined record is not quarantined twice)."""

    engine: Engine
    adapter: str
    client_id: str | None = None
    keep: bool = True


async def reject(
    where: Quarantine,
    rejection: Rejection,
    raw: bytes,
    content_type: str,
    source_key: str,
    keyed: bool = True,
) -> Json:
    """The answer to a rejected record, which is first quarantined verbatim (`quarantine.put`: `keyed`
    False when `source_key` is no key of the record, only where it was)."""
    answer = entry(rejection.status, rejection.issues)
    if where.keep:
        outcome = answer["response"]["outcome"]
        await run_in_threadpool(
            quarantine.put,
            where.engine,
            where.adapter,
            raw,
            content_type,
            outcome,
            source_key,
            where.client_id,
            keyed,
        )
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
