"""read: GET [base]/[type]/[id]."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.fhir.context import run, services
from gateway.fhir.http import fhir_response, version_headers


async def read(request: Request, res_type: str, res_id: str) -> Response:
    write_path = services(request).write_path
    stored = await run(request, lambda uow: write_path.read(uow, res_type, res_id), write=False)
    return fhir_response(stored.content, 200, version_headers(stored))
