"""An app with limits of the test's choosing, auth on, and a region-wide client's headers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.services import Services
from tests.conftest import Database
from tests.security.conftest import bearer, register

SCOPES = "system/*.cruds gateway/adapter.quarantine"


@dataclass
class Bounded:
    client: TestClient
    services: Services
    headers: dict[str, str]  # a region-wide client's (sees everything)

    def outcome(self, response: Any, status: int, *named: str) -> dict[str, Any]:
        """The response is `status` with an OperationOutcome whose diagnostics name each of `named`."""
        assert response.status_code == status, response.text[:2000]
        body: dict[str, Any] = response.json()
        assert body["resourceType"] == "OperationOutcome", body
        text = " ".join(issue["diagnostics"] for issue in body["issue"])
        for name in named:
            assert name in text, text
        return body


@contextmanager
def bounded_app(database: Database, **settings: Any) -> Iterator[Bounded]:
    database.clear()
    services = Services.build(database.settings(auth=True, **settings), engine=database.engine)
    try:
        with TestClient(create_app(services.settings, services=services)) as client:
            registered = register(services, SCOPES, region=True)
            headers = bearer(registered.token(client, SCOPES))
            yield Bounded(client, services, headers)
    finally:
        services.close()


@pytest.fixture
def app_with(database: Database) -> Iterator[Callable[..., Any]]:
    """`app_with(**settings)`: a context manager giving a Bounded app with those settings."""
    yield lambda **settings: bounded_app(database, **settings)
