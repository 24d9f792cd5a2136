"""The adapters known to this gateway, by name, for replaying quarantined inputs."""

from __future__ import annotations

from typing import Protocol

from gateway.hooks import RequestContext
from gateway.model.types import Json
from gateway.services import Services


class Adapter(Protocol):
    name: str

    def replay(self, services: Services, context: RequestContext, payload: bytes, content_type: str) -> Json:
        """Process one quarantined input again; give the batch-response Bundle of its outcome."""
        ...


ADAPTERS: dict[str, Adapter] = {}


def register(adapter: Adapter) -> Adapter:
    ADAPTERS[adapter.name] = adapter
    return adapter
