"""HTTP entrance of the device register adapter (mounted under /adapters by gateway.app):
POST /adapters/device-register/records?mode=full|delta with a semicolon-separated CSV export."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway.adapters import mapping as m
from gateway.adapters.device_register import device
from gateway.adapters.device_register.adapter import CLIENT, MODES, Importer, import_rows, open_csv
from gateway.adapters.device_register.parse import HeaderError
from gateway.adapters.intake import batch_response
from gateway.errors import bad_request, too_large
from gateway.fhir.context import services
from gateway.fhir.http import fhir_response

router = APIRouter()


@router.post("/device-register/records")
async def post_records(request: Request) -> Response:
    """Each row accepted or rejected on its own; the answer is a batch-response Bundle, one entry a row in
    input order (then, for `mode=full`, one per unit marked missing). A header lacking required columns
    → 400, more than `max_rows` rows → 413, both before anything is written."""
    svc = services(request)
    mode = request.query_params.get("mode", "delta")
    if mode not in MODES:
        raise bad_request(f"mode must be full or delta, not {mode!r}")
    try:
        body = (await request.body()).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise bad_request(f"The body is not UTF-8 text: {error}") from error
    try:
        export = open_csv([body])
    except HeaderError as error:
        raise bad_request(str(error)) from error
    rows = list(export.rows())
    limit = int(m.tables(device.SOURCE)["max_rows"])
    if len(rows) > limit:
        raise too_large(f"The request holds {len(rows)} rows; at most {limit} a request (use the CLI)")
    context = CLIENT.request_context(svc, request)  # as the calling client (docs/security.md)
    importer = Importer(svc, context, export.header_text, mode)
    return fhir_response(batch_response(await import_rows(importer, rows)))
