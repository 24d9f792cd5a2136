"""search: GET [base]/[type]?… and POST [base]/[type]/_search (form body), answered with a searchset
Bundle: matches, _include/_revinclude results, paging links and, under lenient handling, an
OperationOutcome entry naming the parameters that were ignored."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import Issue, bad_request
from gateway.fhir.context import request_context, run, services
from gateway.fhir.http import fhir_response, prefer
from gateway.fhir.outcome import operation_outcome
from gateway.fhir.view import View
from gateway.hooks import (
    AccessPolicy,
    AccessRecord,
    AllowAll,
    RequestContext,
    masked_match,
    masked_sort,
    masks,
    patients_in,
)
from gateway.model.types import Json
from gateway.pipeline import UnitOfWork
from gateway.search.engine import Page
from gateway.search.parameters import SearchRequest
from gateway.services import Services
from gateway.store.repository import Stored

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


async def search_get(request: Request, res_type: str) -> Response:
    return await _search(request, res_type, list(request.query_params.multi_items()))


async def search_post(request: Request, res_type: str) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    if content_type not in ("", "application/x-www-form-urlencoded"):
        raise bad_request("POST _search takes an application/x-www-form-urlencoded body")
    body = (await request.body()).decode("utf-8", errors="replace")
    pairs = list(request.query_params.multi_items()) + parse_qsl(body, keep_blank_values=True)
    return await _search(request, res_type, pairs)


async def _search(request: Request, res_type: str, pairs: list[tuple[str, str]]) -> Response:
    svc = services(request)
    base = request_context(request).base_url
    search = svc.searcher.parse(res_type, pairs, base)
    strict = prefer(request, "handling") == "strict"
    if search.unknown and strict:
        raise bad_request(f"Unknown search parameter(s) for {res_type}: {', '.join(search.unknown)}")
    policy = svc.hooks.policy

    def work(uow: UnitOfWork) -> Page:
        return visible_page(svc, uow, res_type, search)

    page = await run(request, work, write=False)
    view = View(policy, request_context(request))
    return fhir_response(searchset(base, res_type, search, page, view))


def visible_page(svc: Services, uow: UnitOfWork, res_type: str, search: SearchRequest) -> Page:
    """Run a search as `uow.context` may see it: what the policy hides is left out (a protected
    identity is neither found by nor sorted by what its mask hides), a total never counts hidden
    resources, and the access is recorded for audit. REST search and GET entries of Bundles both come
    here."""
    policy = svc.hooks.policy
    policy.authorize_search(uow.context, res_type)
    search.masked_sort = masked_sort(policy, uow.context, res_type)
    if search.summary_count and not isinstance(policy, AllowAll):
        page = Page([], total=_visible_total(svc, uow, search))
    else:
        page = svc.searcher.search(uow.connection, search)
    found = len(page.matches)
    matches = _shown(policy, uow.context, search, page.matches)
    included = [(i, i.json()) for i in page.included]
    included = [(i, r) for i, r in included if policy.can_read(uow.context, r)]
    page.matches = [m for m, _ in matches]
    page.included = [i for i, _ in included]
    if page.total is not None and len(page.matches) < found:
        single = page.next_cursor is None and page.previous_cursor is None
        page.total = len(page.matches) if single else None
    record = AccessRecord("search", res_type, [m.res_id for m in page.matches], 200, uow.context)
    record.patients = patients_in([r for _, r in matches + included])
    uow.records.append(record)
    return page


def _shown(
    policy: AccessPolicy, context: RequestContext, search: SearchRequest, found: list[Stored]
) -> list[tuple[Stored, Json]]:
    """The matches the client may see, and that were not found by what a mask hides from it."""
    matches = [(m, m.json()) for m in found]
    matches = [(m, r) for m, r in matches if policy.can_read(context, r)]
    if masks(policy):
        names = [name for name, _ in search.used]
        matches = [(m, r) for m, r in matches if not masked_match(policy, context, r, names)]
    return matches


def _visible_total(svc: Services, uow: UnitOfWork, search: SearchRequest) -> int:
    """`_summary=count` as the client may see it: every match is looked at, a page at a time, and only
    those shown counted; a count of the index rows would tell what the policy hides."""
    walk = replace(
        search,
        summary_count=False,
        total_accurate=False,
        count=svc.searcher.max_count,
        sort=[],
        includes=[],
        revincludes=[],
        cursor=None,
    )
    total = 0
    while True:
        page = svc.searcher.search(uow.connection, walk)
        total += len(_shown(svc.hooks.policy, uow.context, search, page.matches))
        if page.next_cursor is None:
            return total
        walk.cursor = page.next_cursor


def _link(base: str, res_type: str, search: SearchRequest, cursor: str | None) -> str:
    pairs = [(k, v) for k, v in search.used if k != "_cursor"]
    if cursor is not None:
        pairs.append(("_cursor", cursor))
    return f"{base}/{res_type}" + ("?" + urlencode(pairs) if pairs else "")


def _elements(resource: dict[str, Any], elements: list[str]) -> dict[str, Any]:
    kept = {k: v for k, v in resource.items() if k in ("resourceType", "id", "meta") or k in elements}
    meta = dict(kept.get("meta", {}))
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    kept["meta"] = meta
    return kept


def searchset(
    base: str,
    res_type: str,
    search: SearchRequest,
    page: Page,
    view: View,
) -> dict[str, Any]:
    """The searchset Bundle, every resource in it as `view` shows it (masked)."""
    links = [{"relation": "self", "url": _link(base, res_type, search, search.cursor)}]
    if page.next_cursor:
        links.append({"relation": "next", "url": _link(base, res_type, search, page.next_cursor)})
    if page.previous_cursor:
        links.append({"relation": "previous", "url": _link(base, res_type, search, page.previous_cursor)})
    entries = []
    for stored in page.matches:
        item = view.entry(base, stored, "match")
        if search.elements and "resource" in item:
            item["resource"] = _elements(item["resource"], search.elements)
        entries.append(item)
    entries.extend(view.entry(base, stored, "include") for stored in page.included)
    if search.unknown:
        message = f"Ignored unknown search parameter(s): {', '.join(search.unknown)}"
        outcome = operation_outcome([Issue("warning", "not-supported", message, tuple(search.unknown))])
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:
        bundle["total"] = page.total
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return bundle
