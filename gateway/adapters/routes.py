"""HTTP entrances of the adapters, under /adapters. Each adapter module adds its routes here."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.adapters import quarantine
from gateway.errors import bad_request
from gateway.fhir.context import services

router = APIRouter(prefix="/adapters")


@router.get("/quarantine")
async def list_quarantine(request: Request) -> JSONResponse:
    """Rejected inputs, oldest first: `?adapter=…&status=open|replayed|discarded|all&after=ID&limit=N`."""
    params = request.query_params
    status = params.get("status", "open")
    limit, after = params.get("limit", "100"), params.get("after", "0")
    if not limit.isdigit() or not after.isdigit():
        raise bad_request("limit and after must be non-negative integers")
    engine = services(request).engine
    items = await run_in_threadpool(
        quarantine.listing,
        engine,
        params.get("adapter"),
        None if status == "all" else status,
        min(int(limit), 1000),
        int(after),
    )
    return JSONResponse({"items": [item.summary() for item in items]})
