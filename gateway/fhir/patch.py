"""patch: PATCH [base]/[type]/[id] with a JSON Patch (RFC 6902) document.

The patch applies to the current version and the result goes through the same write path as an update,
guarded by the version it was applied to (or by If-Match when given)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import bad_request
from gateway.fhir.context import run, services
from gateway.fhir.http import if_match, read_json
from gateway.fhir.respond import write_response


async def patch(request: Request, res_type: str, res_id: str) -> Response:
    operations = await read_json(request, ("application/json-patch+json",))
    if not isinstance(operations, list):
        raise bad_request("A JSON Patch document is a JSON array of operations")
    write_path = services(request).write_path
    expected = if_match(request)
    result = await run(request, lambda uow: write_path.patch(uow, res_type, res_id, operations, expected))
    return write_response(request, result)
