"""Security test fixtures: clients registered with keys generated here, and real signed assertions."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from gateway.security import store
from gateway.security.all_of import AllOf
from gateway.security.organisation import OrganisationPolicy
from gateway.security.tokens import ASSERTION_TYPE
from gateway.services import Services

TOKEN_URL = "http://testserver/auth/token"
ALL = ["RS256", "RS384", "ES256", "ES384", "HS256"]


@dataclass
class RegisteredClient:
    client_id: str
    key: ECKey | RSAKey
    alg: str

    def assertion(
        self, key: ECKey | RSAKey | None = None, header: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        """A client assertion signed with the registered key (or `key`); `claims` override the defaults."""
        now = int(time.time())
        values: dict[str, Any] = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": TOKEN_URL,
            "exp": now + 240,
            "jti": uuid.uuid4().hex,
        }
        values.update(claims)
        signing = key or self.key
        head = {"alg": self.alg, "kid": self.key.kid, "typ": "JWT", **(header or {})}
        return jwt.encode(head, values, signing, algorithms=ALL)

    def form(self, scope: str, assertion: str | None = None) -> dict[str, str]:
        return {
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion or self.assertion(),
        }

    def token(self, client: TestClient, scope: str) -> str:
        response = client.post("/auth/token", data=self.form(scope))
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


def new_key(alg: str) -> ECKey | RSAKey:
    if alg == "ES384":
        return ECKey.generate_key("P-384", auto_kid=True)
    return RSAKey.generate_key(2048, auto_kid=True)


def organisation_policy(services: Services) -> OrganisationPolicy:
    policy = services.hooks.policy
    assert isinstance(policy, AllOf)
    found = [p for p in policy.policies if isinstance(p, OrganisationPolicy)]
    return found[0]


def register(
    services: Services,
    scopes: str,
    alg: str = "ES384",
    org: str = "SE2321000016-TEST",
    region: bool = False,
    sources: tuple[str, ...] = (),
) -> RegisteredClient:
    """A registered client, bound to `sources` (`KIND:ID`, what it may send to adapter entrances); with
    `region`, exempt from the organisation policy like the region's own journal system
    (GATEWAY_REGION_CLIENTS), for tests of other things than who sees what."""
    key = new_key(alg)
    jwks = {"keys": [key.as_dict(private=False) | {"kid": key.kid}]}
    client = store.add_client(services.engine, f"test {alg}", org, jwks, scopes.split(), sources=sources)
    if region:
        policy = organisation_policy(services)
        policy.region_clients = policy.region_clients | {client.client_id}
    return RegisteredClient(client.client_id, key, alg)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def full_client(secure_services: Services) -> RegisteredClient:
    """A client registered for everything on every type, plus every gateway scope, region-wide."""
    return register(
        secure_services,
        "system/*.cruds gateway/adapter.quarantine gateway/adapter.hl7v2 gateway/audit.read",
        region=True,
    )
