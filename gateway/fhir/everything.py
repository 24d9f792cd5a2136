"""`GET [base]/Patient/{id}/$everything` (R4 Patient-everything): one searchset Bundle of the patient's
compartment plus Device and Task, what those reference and their Provenance (gateway/search/everything.py),
as a search by the same client would show them: its visibility in every query, masked by its policy, an
unknown or hidden patient 404 alike. The operation is the official one: `metadata` lists it under Patient
with the canonical http://hl7.org/fhir/OperationDefinition/Patient-everything (PATIENT_OPERATIONS in
gateway/fhir/capabilities.py); profiles/ holds no OperationDefinition for it (only the gateway's own
operations, such as $device-list); docs/fhir/everything.md describes it.

Parameters: `start`/`end` (care dates), `_since` (record time, `meta.lastUpdated`), `_type` (a
comma-separated list, repeatable), `_count` (pages of that size linked by `next`). Without `_count` the
whole record is one Bundle unless it would pass the response limits (GATEWAY_MAX_RESPONSE_RESOURCES,
GATEWAY_MAX_RESPONSE_BYTES); then it is cut into pages that fit, linked the same way. One AuditEvent per
answer, naming the patient."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import FhirError, bad_request, gone, not_found
from gateway.fhir.context import request_context, run, services
from gateway.fhir.http import fhir_response, prefer
from gateway.fhir.view import View
from gateway.hooks import AccessRecord
from gateway.limits import budget
from gateway.model.types import SUPPORTED
from gateway.pipeline import UnitOfWork
from gateway.search.dates import DateFormatError, date_range
from gateway.search.everything import Candidate, Everything, Filters
from gateway.services import Services
from gateway.store.repository import Stored

OPERATION = "everything"
KNOWN = frozenset({"start", "end", "_since", "_type", "_count", "_cursor", "_format", "_pretty"})
# Without _count, and outside an HTTP request's response budget: at most this many members per page.
UNBOUNDED_PAGE = 10_000


class Parameters:
    """The parsed parameters of one request."""

    def __init__(self, pairs: list[tuple[str, str]], zone: ZoneInfo, max_count: int, strict: bool) -> None:
        self.filters = Filters()
        self.count: int | None = None
        self.cursor: str | None = None
        self.used: list[tuple[str, str]] = []
        types: set[str] = set()
        for name, value in pairs:
            if name not in KNOWN:
                if strict:
                    raise bad_request(f"$everything has no parameter '{name}'", name)
                continue
            if name in ("_format", "_pretty"):
                continue
            if name == "_cursor":
                self.cursor = value
                continue
            self.used.append((name, value))
            if name == "_type":
                for res_type in (t.strip() for t in value.split(",")):
                    if res_type not in SUPPORTED:
                        message = f"_type: '{res_type}' is not a resource type this server has"
                        raise bad_request(message, "_type")
                    types.add(res_type)
            elif name == "_count":
                if not value.isdigit() or int(value) < 1:
                    raise bad_request("_count must be a positive integer", "_count")
                self.count = min(int(value), max_count)
            elif name == "_since":
                self.filters.since = _date(value, zone, name)[0]
            elif name == "start":
                self.filters.start = _date(value, zone, name)[0]
            elif name == "end":
                self.filters.end = _date(value, zone, name)[1]
        if types:
            self.filters.types = frozenset(types)


def _date(value: str, zone: ZoneInfo, name: str) -> tuple[datetime, datetime]:
    try:
        return date_range(value, zone)
    except DateFormatError as error:
        raise bad_request(f"{name}: {error}", name) from error


class Answer:
    def __init__(self) -> None:
        self.matches: list[Stored] = []
        self.included: list[Stored] = []
        self.next_rid: int | None = None
        self.total: int | None = None


async def everything(request: Request, res_id: str) -> Response:
    svc = services(request)
    context = request_context(request)
    base = context.base_url
    parsed = Parameters(
        list(request.query_params.multi_items()),
        ZoneInfo(svc.settings.local_timezone),
        svc.settings.max_page_size,
        prefer(request, "handling") == "strict",
    )
    target = f"Patient/{res_id}/${OPERATION}"
    binding = "\n".join([context.principal.client_id, target, _query(parsed, False)])

    def work(uow: UnitOfWork) -> Answer:
        return _answer(svc, uow, res_id, parsed, binding)

    answer = await run(request, work, write=False)
    view = View(svc.hooks.policy, context)
    link = f"{base}/Patient/{res_id}/${OPERATION}"
    links = [{"relation": "self", "url": _url(link, parsed, parsed.cursor)}]
    if answer.next_rid is not None:
        cursor = svc.searcher.cursors.seal([answer.next_rid], False, binding)
        links.append({"relation": "next", "url": _url(link, parsed, cursor)})
    entries = [view.entry(base, s, "match") for s in answer.matches]
    entries += [view.entry(base, s, "include") for s in answer.included]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if answer.total is not None:
        bundle["total"] = answer.total
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return fhir_response(bundle)


def _query(parsed: Parameters, with_count: bool) -> str:
    return urlencode(sorted((k, v) for k, v in parsed.used if with_count or k != "_count"))


def _url(link: str, parsed: Parameters, cursor: str | None) -> str:
    pairs = list(parsed.used) + ([("_cursor", cursor)] if cursor else [])
    return link + ("?" + urlencode(pairs) if pairs else "")


def _answer(svc: Services, uow: UnitOfWork, res_id: str, parsed: Parameters, binding: str) -> Answer:
    policy, context = svc.hooks.policy, uow.context
    try:
        policy.authorize_search(context, "Patient")
        visibility = policy.visibility(context)
        patient = uow.repository.current_visible("Patient", res_id, visibility)
        if patient is None:
            raise not_found(f"Patient/{res_id} is not known")
        if patient.deleted:
            raise gone(f"Patient/{res_id} was deleted (version {patient.version_id})")
        after = None
        if parsed.cursor is not None:
            after = int(svc.searcher.cursors.open(["number"], parsed.cursor, binding)[1][0])
    except FhirError as error:
        uow.records.append(AccessRecord(OPERATION, "Patient", [res_id], error.status, context))
        raise
    query = Everything(
        uow.connection,
        res_id,
        patient.rid,
        visibility,
        parsed.filters,
        svc.searcher.planner.bases(context.base_url),
    )
    answer = _page(query, parsed.count, after)
    record = AccessRecord(OPERATION, "Patient", [res_id], 200, context, f"${OPERATION}")
    record.patients = [f"Patient/{res_id}"]
    record.resources = [f"{s.res_type}/{s.res_id}" for s in answer.matches + answer.included]
    uow.records.append(record)
    return answer


def _page(query: Everything, count: int | None, after: int | None) -> Answer:
    """One page: `count` members (or, without it, as many as the response budget holds with what they
    bring along), what they reference and the Provenance of all of it."""
    limits = budget.current()
    room_resources = limits.max_resources - limits.spent_resources if limits else UNBOUNDED_PAGE
    room_bytes = limits.max_bytes - limits.spent_bytes if limits else None
    size = count if count is not None else max(1, min(room_resources, UNBOUNDED_PAGE))
    found = query.candidates(after, size + 1)
    more = len(found) > size
    members = found[:size]
    if count is None and room_bytes is not None:
        members = _prefix(members, room_bytes)
        more = more or len(members) < len(found[:size])
    while True:
        answer = _with_included(query, members)
        sizes = [len(s.content) for s in answer.matches + answer.included]
        fits = len(sizes) <= room_resources and (room_bytes is None or sum(sizes) <= room_bytes)
        if fits or count is not None or len(members) <= 1:
            break
        members, more = members[: len(members) // 2], True
    budget.check(sizes)  # an explicit _count too large for the limits: 400 too-costly, as a search
    if more and members:
        answer.next_rid = members[-1].rid
    elif after is None:
        answer.total = len(answer.matches)
    return answer


def _prefix(members: list[Candidate], room_bytes: int) -> list[Candidate]:
    kept: list[Candidate] = []
    spent = 0
    for member in members:
        if kept and spent + member.size > room_bytes:
            break
        kept.append(member)
        spent += member.size
    return kept


def _with_included(query: Everything, members: list[Candidate]) -> Answer:
    answer = Answer()
    answer.matches = query.load([m.rid for m in members])
    seen = {(s.res_type, s.res_id) for s in answer.matches}
    referenced = query.load([c.rid for c in query.referenced(answer.matches, seen)])
    seen |= {(s.res_type, s.res_id) for s in referenced}
    provenance = query.load([c.rid for c in query.provenance(sorted(seen), seen)])
    answer.included = referenced + provenance
    return answer
