"""HTTP entrance of the Beställningsportalen adapter (mounted under /adapters by gateway.app):
POST /adapters/bestallningsportalen/orders with one order, a JSON array, or JSON Lines."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway.adapters.bestallningsportalen.adapter import CLIENT, import_pieces
from gateway.adapters.bestallningsportalen.parse import pieces
from gateway.adapters.intake import batch_response
from gateway.errors import too_large
from gateway.fhir.context import services
from gateway.fhir.http import fhir_response

MAX_ORDERS = 1000

router = APIRouter()


@router.post("/bestallningsportalen/orders")
async def post_orders(request: Request) -> Response:
    """Each order accepted or rejected on its own; the answer is a batch-response Bundle, one entry an
    order in input order. More than MAX_ORDERS orders → 413 before anything is written."""
    svc = services(request)
    body = (await request.body()).decode("utf-8", errors="replace")
    lines = "ndjson" in request.headers.get("content-type", "")
    items = list(pieces([body], lines=lines, max_depth=svc.settings.max_json_depth))
    if len(items) > MAX_ORDERS:
        raise too_large(
            f"The request holds {len(items)} orders; at most {MAX_ORDERS} a request (use the CLI)"
        )
    context = CLIENT.request_context(svc, request)  # as the calling client (docs/security.md)
    return fhir_response(batch_response(await import_pieces(svc, context, items)))
