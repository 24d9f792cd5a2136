"""delete: DELETE [base]/[type]/[id]. A versioned tombstone: read then answers 410, history keeps it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.fhir.context import run, services
from gateway.fhir.http import fhir_response
from gateway.fhir.outcome import information


async def delete(request: Request, res_type: str, res_id: str) -> Response:
    write_path = services(request).write_path
    stored = await run(request, lambda uow: write_path.delete(uow, res_type, res_id))
    if stored is None:
        return fhir_response(information(f"{res_type}/{res_id} does not exist or is already deleted"), 200)
    headers = {"ETag": f'W/"{stored.version_id}"'}
    return fhir_response(
        information(f"Deleted {res_type}/{res_id} (version {stored.version_id})"), 200, headers
    )
