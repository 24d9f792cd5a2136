"""HTTP entrances of the adapters, under /adapters. Each adapter module adds its routes here; this one
holds the quarantine's (scope `gateway/adapter.quarantine`):

- `GET /adapters/quarantine?adapter=…&status=open|replayed|discarded|all&after=ID&limit=N`: the items,
  oldest first (without their payloads);
- `GET /adapters/quarantine/{id}`: one item with its payload (`data`, base64);
- `POST /adapters/quarantine/{id}/replay`: the input through its adapter again, as the calling client
  (which needs the adapter's scope too, and its binding to the input's source), answered with the
  adapter's batch-response Bundle; accepted whole, the item is marked replayed;
- `POST /adapters/quarantine/{id}/discard`: an open item marked discarded.

With auth on a client sees and acts on only the items it sent: another client's item, or the gateway's
own, answers exactly as an id never used (404). With GATEWAY_AUTH=off every item is served."""

from __future__ import annotations

import base64

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.adapters import quarantine
from gateway.adapters.quarantine import EVERYONE, Quarantined, Whose
from gateway.adapters.registry import ADAPTERS
from gateway.errors import bad_request, conflict, forbidden, not_found
from gateway.fhir.context import request_context, services
from gateway.fhir.http import fhir_response
from gateway.limits import numbers
from gateway.security.scopes import grants

router = APIRouter(prefix="/adapters")


def _whose(request: Request) -> Whose:
    """The items the caller may see: its own with auth on (a token never names the gateway's own
    clients), every item with auth off."""
    if not services(request).settings.auth:
        return EVERYONE
    return Whose(request_context(request).principal.client_id)


async def _item(request: Request, item_id: str) -> Quarantined:
    """The caller's item; 404 for anything else, whether the id is used or not."""
    found = None
    if numbers.whole(item_id) is not None:
        engine = services(request).engine
        found = await run_in_threadpool(quarantine.get, engine, int(item_id, 10), _whose(request))
    if found is None:
        raise not_found(f"No quarantined input with id {item_id}")
    return found


@router.get("/quarantine")
async def list_quarantine(request: Request) -> JSONResponse:
    """Rejected inputs, oldest first: `?adapter=…&status=open|replayed|discarded|all&after=ID&limit=N`."""
    params = request.query_params
    status = params.get("status", "open")
    if status not in (*quarantine.STATUSES, "all"):
        raise bad_request(f"status must be one of {', '.join(quarantine.STATUSES)} or all, not {status!r}")
    limit = numbers.count(params.get("limit", "100"), 1000)
    after = numbers.whole(params.get("after", "0"))  # no id is past 64 bits: none is after one that is
    if limit is None or (after is None and not numbers.is_whole(params.get("after", "0"))):
        raise bad_request("limit and after must be non-negative integers")
    engine = services(request).engine
    items = await run_in_threadpool(
        quarantine.listing,
        engine,
        params.get("adapter"),
        None if status == "all" else status,
        limit if after is not None else 0,
        after or 0,
        _whose(request),
    )
    return JSONResponse({"items": [item.summary() for item in items]})


@router.get("/quarantine/{item_id}")
async def show_quarantined(request: Request, item_id: str) -> JSONResponse:
    item = await _item(request, item_id)
    return JSONResponse({**item.summary(), "data": base64.b64encode(item.payload).decode()})


@router.post("/quarantine/{item_id}/discard")
async def discard_quarantined(request: Request, item_id: str) -> JSONResponse:
    item = await _item(request, item_id)
    if item.status != "open":
        raise conflict(f"The quarantined input {item.id} is {item.status}, not open")
    await run_in_threadpool(quarantine.set_status, services(request).engine, item.id, "discarded")
    return JSONResponse({**item.summary(), "status": "discarded"})


@router.post("/quarantine/{item_id}/replay")
async def replay_quarantined(request: Request, item_id: str) -> Response:
    item = await _item(request, item_id)
    svc = services(request)
    adapter = ADAPTERS.get(item.adapter)
    if adapter is None:
        raise conflict(f"No adapter named {item.adapter} to replay input {item.id}")
    needed = adapter.client.entrance_scope
    if svc.settings.auth and not grants(request_context(request).principal.scopes).has(needed):
        raise forbidden(f"This entrance needs the scope {needed}")
    context = adapter.client.request_context(svc, request)
    response = await run_in_threadpool(adapter.replay, svc, context, item.payload, item.content_type)
    statuses = [str(entry.get("response", {}).get("status", "")) for entry in response.get("entry", [])]
    if all(status.startswith(("200", "201")) for status in statuses):
        await run_in_threadpool(quarantine.set_status, svc.engine, item.id, "replayed")
    return fhir_response(response)
