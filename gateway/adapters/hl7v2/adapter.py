"""The hl7v2 adapter as the registry knows it: replay of quarantined messages."""

from __future__ import annotations

import asyncio

from gateway.adapters.hl7v2 import service
from gateway.adapters.hl7v2.ack import Ack
from gateway.adapters.registry import register
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.services import Services

ACK_CODES = "http://terminology.hl7.org/CodeSystem/v2-0008"  # HL7 table 0008, acknowledgment code


def ack_issue(ack: Ack) -> Json:
    """The ACK as an OperationOutcome issue: its code (MSA-1) and text, for the operator."""
    accepted = ack.code == "AA"
    diagnostics = f"HL7 ACK {ack.code} for message {ack.control_id or '(no MSH-10)'}"
    if ack.text:
        diagnostics += f": {ack.text}"
    return {
        "severity": "information" if accepted else "error",
        "code": "informational" if accepted else "processing",
        "details": {"coding": [{"system": ACK_CODES, "code": ack.code}]},
        "diagnostics": diagnostics,
    }


def entry_of(result: service.Result) -> Json:
    """One batch-response entry: the status, and an OperationOutcome with the ACK and any errors."""
    issues = list(result.outcome["issue"]) if result.outcome is not None else []
    outcome: Json = {"resourceType": "OperationOutcome", "issue": [ack_issue(result.ack), *issues]}
    status = "200 OK" if result.ack.code == "AA" else "422 Unprocessable Entity"
    return {"response": {"status": status, "outcome": outcome}}


class Hl7v2Adapter:
    name = service.NAME
    client = service.CLIENT

    def replay(self, services: Services, context: RequestContext, payload: bytes, content_type: str) -> Json:
        """Process a quarantined message again as `context` (the adapter's own client: the message's
        facility's organisation, as when it came); not quarantined a second time when it fails again."""
        own = context.principal.client_id == service.CLIENT_ID
        result = asyncio.run(
            service.handle(
                services,
                payload,
                principal=None if own else context.principal,
                source_address=context.source_address,
                content_type=content_type,
                keep_rejected=False,
            )
        )
        return {"resourceType": "Bundle", "type": "batch-response", "entry": [entry_of(result)]}


ADAPTER = register(Hl7v2Adapter())
