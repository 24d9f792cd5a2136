"""Municipalities A and B with subscriptions, and a real HTTP receiver on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.security import store
from gateway.services import Services
from gateway.subscriptions.delivery import Deliverer
from gateway.subscriptions.registration import notify_rows
from tests.api.helpers import HSA, patient
from tests.conftest import Database
from tests.security.conftest import RegisteredClient, bearer, new_key, organisation_policy, register
from tests.subscriptions.receiver import Receiver

ALL = "system/*.cruds"
MUNICIPALITY = "system/Task.rs system/Patient.rs system/Subscription.cruds"


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def register_notifying(
    services: Services,
    org: str,
    prefixes: list[str],
    networks: tuple[str, ...] = (),
    scopes: str = MUNICIPALITY,
) -> RegisteredClient:
    key = new_key("ES384")
    jwks = {"keys": [key.as_dict(private=False) | {"kid": key.kid}]}
    rows = notify_rows(prefixes, list(networks))
    client = store.add_client(services.engine, f"kommun {org}", org, jwks, scopes.split(), notify=rows)
    return RegisteredClient(client.client_id, key, "ES384")


class World:
    """Municipalities A and B (their Organizations), a patient each, and a region-wide client."""

    def __init__(
        self, services: Services, api: TestClient, endpoint: str = "https://kommun-a.example/hooks/"
    ) -> None:
        self.services, self.api, self.endpoint = services, api, endpoint
        region = register(services, ALL, org="SE-REGION")
        organisation_policy(services).region_clients = frozenset({region.client_id})
        self.region = bearer(region.token(api, ALL))
        self.a_client = register_notifying(services, "SE-A", [endpoint])
        self.b_client = register_notifying(services, "SE-B", [endpoint])
        self.a = bearer(self.a_client.token(api, MUNICIPALITY))
        self.b = bearer(self.b_client.token(api, MUNICIPALITY))
        for resource in (
            {"resourceType": "Organization", "id": "orgA", "identifier": [{"system": HSA, "value": "SE-A"}]},
            {"resourceType": "Organization", "id": "orgB", "identifier": [{"system": HSA, "value": "SE-B"}]},
            patient("191212121212", id="pa"),
            patient("201212121212", id="pb"),
        ):
            self.put(resource)

    def put(self, resource: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        response = self.api.put(url, json=resource, headers=headers or self.region)
        assert response.status_code in (200, 201), response.text
        body: dict[str, Any] = response.json()
        return body

    def task(self, task_id: str, org: str, patient_id: str, status: str = "requested") -> dict[str, Any]:
        return self.put(
            {
                "resourceType": "Task",
                "id": task_id,
                "status": status,
                "intent": "order",
                "for": ref(f"Patient/{patient_id}"),
                "owner": ref(f"Organization/{org}"),
            }
        )


def subscription(endpoint: str, criteria: str = "Task?status=requested", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "Nya överlämningar",
        "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": endpoint, **extra},
    }


@pytest.fixture
def world(secure_services: Services, secure_client: TestClient) -> World:
    return World(secure_services, secure_client)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


NOTIFYING = {
    "notify": True,
    "allow_http_loopback": True,
    "notify_retry_cap": 0.4,
    "notify_poll_seconds": 0.1,
    "notify_timeout": 2.0,
}


@pytest.fixture(params=[False, True], ids=["", "audited"])
def notifying(database: Database, receiver: Receiver, request: pytest.FixtureRequest) -> Iterator[World]:
    """Auth on, the deliverer running in the server, municipalities A and B allowed to the receiver."""
    database.clear()
    settings = database.settings(auth=True, audit=request.param, **NOTIFYING)
    services = Services.build(settings, engine=database.engine)
    with TestClient(create_app(services.settings, services=services)) as api:
        yield World(services, api, receiver.base)
    services.close()


@pytest.fixture
def manual(database: Database, receiver: Receiver) -> Iterator[World]:
    """Auth on, no deliverer thread: the tests run the deliverer's rounds themselves."""
    database.clear()
    settings = database.settings(auth=True, **(NOTIFYING | {"notify": False}))
    services = Services.build(settings, engine=database.engine)
    with TestClient(create_app(services.settings, services=services)) as api:
        yield World(services, api, receiver.base)
    services.close()


@pytest.fixture
def deliverer(manual: World) -> Iterator[Deliverer]:
    """A deliverer the test drives round by round (`step`), on the `manual` world."""
    made = Deliverer(manual.services)
    yield made
    made.stop()
