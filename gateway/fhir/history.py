"""history: GET [base]/[type]/[id]/_history and GET [base]/[type]/_history, newest first, with
`_since`, `_count` and `next` links (a cursor on the version sequence, stable while data changes, sealed
and bound to the client and the history it pages like a search's: gateway/search/cursor.py)."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import bad_request, not_found
from gateway.fhir.context import request_context, run, services
from gateway.fhir.http import fhir_response
from gateway.fhir.view import View
from gateway.hooks import AccessRecord, patients_in
from gateway.limits import budget, numbers
from gateway.pipeline import UnitOfWork
from gateway.search.dates import DateFormatError, date_range, to_instant
from gateway.store.repository import Stored
from gateway.store.repository import history as select_history


async def instance_history(request: Request, res_type: str, res_id: str) -> Response:
    return await _history(request, res_type, res_id)


async def type_history(request: Request, res_type: str) -> Response:
    return await _history(request, res_type, None)


async def _history(request: Request, res_type: str, res_id: str | None) -> Response:
    svc = services(request)
    params = request.query_params
    settings = svc.settings
    limit = numbers.count(params.get("_count", str(settings.default_page_size)), settings.max_page_size)
    if limit is None:
        raise bad_request("_count must be a non-negative integer", "_count")
    since = None
    if "_since" in params:
        try:
            since = date_range(params["_since"], svc.searcher.planner.zone)[0]
        except DateFormatError as error:
            raise bad_request(str(error), "_since") from error
    context = request_context(request)
    binding = "\n".join([context.principal.client_id, "history", res_type, res_id or "", str(since or "")])
    cursor = params.get("_cursor")
    before = None
    if cursor is not None:
        before = svc.searcher.cursors.open(["number"], cursor, binding)[1][0]
    base = request_context(request).base_url
    policy = svc.hooks.policy

    def work(uow: UnitOfWork) -> tuple[list[tuple[int, str, Stored]], int | None]:
        visibility = policy.visibility(uow.context)
        if res_id is not None and uow.repository.current_visible(res_type, res_id, visibility) is None:
            raise not_found(f"{res_type}/{res_id} is not known")
        if limit == 0:  # _count=0: no versions, and no pages to follow
            return [], None

        # The versions of resources the client sees now (as their current version decides), in the query.
        def check(sizes: list[int]) -> None:  # the response budget, before the versions are read
            budget.check(sizes[:limit])

        bounded = check if budget.current() is not None else None
        rows = select_history(uow.connection, res_type, res_id, since, before, limit + 1, visibility, bounded)
        following = rows[limit - 1][0] if len(rows) > limit else None
        visible = rows[:limit]
        record = AccessRecord("history", res_type, [row[2].res_id for row in visible], 200, uow.context)
        record.patients = patients_in([row[2].json() for row in visible if not row[2].deleted])
        uow.records.append(record)
        return visible, following

    rows, following = await run(request, work, write=False)
    view = View(policy, request_context(request))
    entries = []
    for _seq, method, stored in rows:
        item = view.entry(base, stored)
        http_method = method if method in ("POST", "PUT", "DELETE") else "PUT"
        created = http_method == "POST" or (http_method == "PUT" and stored.version_id == 1)
        url = f"{stored.res_type}/{stored.res_id}" if http_method != "POST" else stored.res_type
        item["request"] = {"method": http_method, "url": url}
        item["response"] = {
            "status": "201 Created" if created else "200 OK",
            "etag": f'W/"{stored.version_id}"',
            "lastModified": to_instant(stored.last_updated),
        }
        entries.append(item)
    path = f"{base}/{res_type}" + (f"/{res_id}" if res_id else "") + "/_history"
    keep = [(k, v) for k, v in params.multi_items() if k != "_cursor"]
    links = [{"relation": "self", "url": path + ("?" + urlencode(keep) if keep else "")}]
    if following is not None:
        sealed = svc.searcher.cursors.seal([following], False, binding)
        links.append({"relation": "next", "url": f"{path}?{urlencode([*keep, ('_cursor', sealed)])}"})
    bundle = {"resourceType": "Bundle", "type": "history", "link": links, "entry": entries}
    return fhir_response(bundle)
