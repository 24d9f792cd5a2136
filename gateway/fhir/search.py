"""search: GET [base]/[type]?… and POST [base]/[type]/_search (form body), answered with a searchset
Bundle: matches, _include/_revinclude results, paging links and, under lenient handling, an
OperationOutcome entry naming the parameters that were ignored."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import FhirError, Issue, bad_request
from gateway.fhir.context import request_context, run, services
from gateway.fhir.http import fhir_response, prefer
from gateway.fhir.outcome import operation_outcome
from gateway.fhir.view import View
from gateway.hooks import AccessRecord, patients_in
from gateway.pipeline import UnitOfWork
from gateway.search.engine import Page
from gateway.search.parameters import SearchRequest
from gateway.services import Services

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
    """Run a search as `uow.context` may see it: the policy's visibility and masking are conditions of
    the search's own query (matches, includes, chains, totals and cursors alike), and the access is
    recorded for audit. REST search and GET entries of Bundles both come here."""
    policy = svc.hooks.policy
    context = uow.context
    try:
        policy.authorize_search(context, res_type)
    except FhirError as error:  # refused, also inside a batch: audited as what it is
        uow.records.append(AccessRecord("search", res_type, [], error.status, context))
        raise
    search.visibility = policy.visibility(context)
    search.masking = policy.masking(context)
    search.cursor_binding = context.principal.client_id
    page = svc.searcher.search(uow.connection, search)
    record = AccessRecord("search", res_type, [m.res_id for m in page.matches], 200, context)
    record.patients = patients_in([stored.json() for stored in page.matches + page.included])
    uow.records.append(record)
    return page


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
