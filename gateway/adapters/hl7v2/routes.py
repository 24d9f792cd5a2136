"""HTTP entrance of the hl7v2 adapter (mounted under /adapters by gateway.app):
POST /adapters/hl7v2 with one message (application/hl7-v2 or text/plain) → 200 with the HL7 ACK."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway.adapters.hl7v2 import adapter, service
from gateway.errors import too_costly
from gateway.fhir.context import services

router = APIRouter()
assert adapter.ADAPTER.name == "hl7v2"  # registered for replay


@router.post("/hl7v2")
async def receive(request: Request) -> Response:
    """Whatever the outcome, the answer is HTTP 200 with the ACK; its MSA-1 says AA, AE or AR. A message
    larger than an MLLP frame may be (GATEWAY_MLLP_MAX_BYTES) is refused before it is read: 413."""
    svc = services(request)
    body = await request.body()
    if len(body) > svc.settings.mllp_max_bytes:
        raise too_costly(
            f"The message is {len(body)} bytes; at most {svc.settings.mllp_max_bytes} "
            "(GATEWAY_MLLP_MAX_BYTES)",
            status=413,
        )
    content_type = request.headers.get("content-type", "application/hl7-v2").split(";")[0].strip()
    # With auth on, written as the calling client (docs/security.md); off, as the adapter (facility's org).
    caller = service.CLIENT.request_context(svc, request).principal if svc.settings.auth else None
    result = await service.handle(
        svc,
        body,
        principal=caller,
        source_address=request.client.host if request.client else None,
        content_type=content_type or "application/hl7-v2",
    )
    ack = result.encode(ZoneInfo(svc.settings.local_timezone))
    return Response(ack, status_code=200, media_type="application/hl7-v2; charset=utf-8")
