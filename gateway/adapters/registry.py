"""The adapters known to this gateway, by name, for replaying quarantined inputs."""

from __future__ import annotations

from typing import Protocol

from gateway.adapters.intake import AdapterClient
from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.services import Services


class Adapter(Protocol):
    name: str
    client: AdapterClient  # the adapter's own client: what the operator's replay writes as

    def replay(self, services: Services, context: RequestContext, payload: bytes, content_type: str) -> Json:
        """Process one quarantined input again, written as `context` (the adapter's own client, or the
        client the item belongs to, whose binding is checked as at the entrance); give the
        batch-response Bundle of its outcome. A still rejected input is not quarantined twice."""
        ...


ADAPTERS: dict[str, Adapter] = {}


def register(adapter: Adapter) -> Adapter:
    ADAPTERS[adapter.name] = adapter
    return adapter
