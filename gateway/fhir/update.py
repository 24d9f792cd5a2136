"""update: PUT [base]/[type]/[id] (also create with a client id), and conditional update
PUT [base]/[type]?[search] (no match → create, one → update it, several → 412)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.fhir.context import run, services
from gateway.fhir.http import if_match, read_json
from gateway.fhir.respond import write_response


async def update(request: Request, res_type: str, res_id: str) -> Response:
    body = await read_json(request, resource=True)
    write_path = services(request).write_path
    version = if_match(request)
    result = await run(request, lambda uow: write_path.update(uow, res_type, res_id, body, version))
    return write_response(request, result)


async def conditional_update(request: Request, res_type: str) -> Response:
    body = await read_json(request, resource=True)
    write_path = services(request).write_path
    version = if_match(request)
    query = str(request.url.query)
    result = await run(
        request, lambda uow: write_path.conditional_update(uow, res_type, query, body, version)
    )
    return write_response(request, result)
