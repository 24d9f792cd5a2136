"""The answer to a write: status, Location, ETag, Last-Modified and the body `Prefer: return=` asks for."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.fhir.context import request_context, services
from gateway.fhir.http import fhir_response, location, prefer, version_headers
from gateway.fhir.outcome import information
from gateway.fhir.view import View
from gateway.pipeline import WriteResult


def write_response(request: Request, result: WriteResult) -> Response:
    """The body is the resource as this client may see it (masked like a read), also when a conditional
    create answers with a resource that was already there."""
    context = request_context(request)
    stored = result.stored
    headers = version_headers(stored)
    if result.status == 201 or result.changed:
        headers["Location"] = location(context.base_url, stored)
    wanted = prefer(request, "return") or "representation"
    if wanted == "minimal":
        return Response(status_code=result.status, headers=headers)
    if wanted == "OperationOutcome":
        what = "created" if result.status == 201 else ("updated" if result.changed else "unchanged")
        message = f"{stored.res_type}/{stored.res_id} {what} (version {stored.version_id})"
        return fhir_response(information(message), result.status, headers)
    view = View(services(request).hooks.policy, context)
    return fhir_response(view.body(stored), result.status, headers)
