"""The hl7v2 adapter as the registry knows it: replay of quarantined messages."""

from __future__ import annotations

import asyncio
from zoneinfo import ZoneInfo

from gateway.adapters.hl7v2 import service
from gateway.adapters.registry import register
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.services import Services


class Hl7v2Adapter:
    name = service.NAME

    def replay(self, services: Services, context: RequestContext, payload: bytes, content_type: str) -> Json:
        """Process a quarantined message again (not quarantined a second time when it fails again)."""
        result = asyncio.run(
            service.handle(services, payload, content_type=content_type, keep_rejected=False)
        )
        ack = result.encode(ZoneInfo(services.settings.local_timezone)).decode()
        entry: Json = {
            "response": {"status": "200 OK" if result.ack.code == "AA" else "422 Unprocessable Entity"}
        }
        if result.outcome is not None:
            entry["response"]["outcome"] = result.outcome
        entry["response"]["etag"] = ack.split("\r")[1]  # the MSA segment, for the operator
        return {"resourceType": "Bundle", "type": "batch-response", "entry": [entry]}


ADAPTER = register(Hl7v2Adapter())
