"""create: POST [base]/[type], with conditional create (If-None-Exist)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import bad_request
from gateway.fhir.context import run, services
from gateway.fhir.http import read_json
from gateway.fhir.respond import write_response


async def create(request: Request, res_type: str) -> Response:
    body = await read_json(request, resource=True)
    if isinstance(body, dict) and body.get("resourceType") != res_type:
        raise bad_request(f"resourceType {body.get('resourceType')} does not match the URL's {res_type}")
    write_path = services(request).write_path
    condition = request.headers.get("if-none-exist")
    result = await run(request, lambda uow: write_path.create(uow, body, condition))
    return write_response(request, result)
