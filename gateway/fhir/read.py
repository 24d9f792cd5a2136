"""read: GET [base]/[type]/[id]."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.fhir.context import request_context, run, services
from gateway.fhir.http import fhir_response, version_headers
from gateway.fhir.view import View


async def read(request: Request, res_type: str, res_id: str) -> Response:
    write_path = services(request).write_path
    stored = await run(
        request, lambda uow: write_path.read(uow, res_type, res_id), write=False, point_read=True
    )
    view = View(services(request).hooks.policy, request_context(request))
    return fhir_response(view.body(stored), 200, version_headers(stored))
