"""Every request needs a valid access token, except metadata, discovery, /auth/* and the probes."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from gateway.app import create_app
from gateway.config import Settings
from gateway.hooks import Principal
from gateway.security.oidc import ExternalIssuer, Rejected
from gateway.security.sealing import Sealer
from gateway.security.signatures import low_s
from gateway.security.store import add_client, get_client
from gateway.security.tokens import Authority
from gateway.services import Services
from tests.conftest import Database
from tests.security.conftest import ALL, RegisteredClient, bearer, new_key


def _own_token(
    client: TestClient, key: Any = None, header: dict[str, Any] | None = None, **claims: Any
) -> str:
    """An access token made like the gateway's own (low s, for the registered client c1), with `claims`
    changed."""
    authority: Authority = client.app.state.authority  # type: ignore[attr-defined]
    if get_client(authority.engine, "c1") is None:
        add_client(authority.engine, "c1", "SE2321000016-TEST", {"keys": []}, ["system/*.cruds"], "c1")
    signing, alg = authority.ring.signer()
    now = int(time.time())
    values: dict[str, Any] = {
        "iss": "http://testserver/auth",
        "sub": "c1",
        "aud": "http://testserver/fhir",
        "iat": now,
        "exp": now + 300,
        "jti": "t1",
        "client_id": "c1",
        "scope": "system/*.cruds",
    }
    values.update(claims)
    head = {"alg": alg, "kid": signing.kid, "typ": "at+jwt", **(header or {})}
    return low_s(jwt.encode(head, values, key or signing, algorithms=ALL))


def test_no_token_is_401_with_a_challenge_and_an_outcome(secure_client: TestClient) -> None:
    response = secure_client.get("/fhir/Patient")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["code"] == "login"


@pytest.mark.parametrize(
    "path", ["/fhir/metadata", "/fhir/.well-known/smart-configuration", "/healthz", "/readyz", "/auth/jwks"]
)
def test_open_paths_need_no_token(secure_client: TestClient, path: str) -> None:
    assert secure_client.get(path).status_code == 200


def test_metadata_names_the_token_endpoint(secure_client: TestClient) -> None:
    security = secure_client.get("/fhir/metadata").json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    uris = security["extension"][0]["extension"]
    assert {"url": "token", "valueUri": "http://testserver/auth/token"} in uris


def test_valid_token_is_accepted(secure_client: TestClient) -> None:
    assert secure_client.get("/fhir/Patient", headers=bearer(_own_token(secure_client))).status_code == 200


def test_a_remembered_token_still_expires(secure_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    token = _own_token(secure_client, exp=int(time.time()) + 120)
    assert secure_client.get("/fhir/Patient", headers=bearer(token)).status_code == 200
    assert secure_client.get("/fhir/Patient", headers=bearer(token)).status_code == 200  # from the cache
    later = time.time() + 3600
    monkeypatch.setattr("gateway.security.tokens.time.time", lambda: later)
    assert secure_client.get("/fhir/Patient", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize(
    "token_of",
    [
        pytest.param(lambda c: "not-a-jwt", id="garbage"),
        pytest.param(lambda c: _own_token(c, exp=int(time.time()) - 3600), id="expired"),
        pytest.param(lambda c: _own_token(c, key=new_key("ES384")), id="forged"),
        pytest.param(lambda c: _own_token(c, aud="https://elsewhere.example/fhir"), id="wrong-audience"),
        pytest.param(lambda c: _own_token(c, iss="https://elsewhere.example/auth"), id="wrong-issuer"),
        pytest.param(lambda c: _own_token(c, header={"typ": "JWT"}), id="not-an-access-token"),
        pytest.param(lambda c: _own_token(c, header={"kid": "unknown"}), id="unknown-kid"),
    ],
)
def test_bad_tokens_are_401(secure_client: TestClient, token_of: Any) -> None:
    response = secure_client.get("/fhir/Patient", headers=bearer(token_of(secure_client)))
    assert response.status_code == 401, response.text
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_alg_none_token_is_401(secure_client: TestClient) -> None:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {
        "iss": "http://testserver/auth",
        "aud": "http://testserver/fhir",
        "client_id": "c1",
        "scope": "system/*.cruds",
        "exp": int(time.time()) + 60,
    }
    unsigned = f"{part({'alg': 'none', 'typ': 'at+jwt'})}.{part(claims)}."
    assert secure_client.get("/fhir/Patient", headers=bearer(unsigned)).status_code == 401


def test_a_client_assertion_is_not_an_access_token(
    secure_client: TestClient, full_client: RegisteredClient
) -> None:
    assertion = full_client.assertion(aud="http://testserver/fhir")
    assert secure_client.get("/fhir/Patient", headers=bearer(assertion)).status_code == 401


def test_tokens_survive_key_rotation_until_they_expire(
    secure_services: Services, secure_client: TestClient, full_client: RegisteredClient
) -> None:
    from gateway.security import keys

    before = full_client.token(secure_client, "system/*.rs")
    old_kid = secure_client.get("/auth/jwks").json()["keys"][0]["kid"]
    sealer = Sealer.of(secure_services.settings)
    new_kid = keys.rotate(secure_services.engine, sealer, "RS384", secure_services.settings.token_lifetime)
    authority: Authority = secure_client.app.state.authority  # type: ignore[attr-defined]
    authority.ring._loaded = float("-inf")  # as if the cache had run out
    published = [key["kid"] for key in secure_client.get("/auth/jwks").json()["keys"]]
    assert published[0] == new_kid and old_kid in published
    assert secure_client.get("/fhir/Patient", headers=bearer(before)).status_code == 200
    after = full_client.token(secure_client, "system/*.rs")
    header = json.loads(base64.urlsafe_b64decode(after.split(".")[0] + "=="))
    assert header["kid"] == new_kid and header["alg"] == "RS384"


def test_auth_off_serves_without_token_and_warns(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    database.clear()
    services = Services.build(database.settings(auth=False), engine=database.engine)
    with caplog.at_level(logging.WARNING, logger="gateway.security"):
        app = create_app(services.settings, services=services)
    assert any("GATEWAY_AUTH=off" in record.getMessage() for record in caplog.records)
    with TestClient(app) as client:
        assert client.post("/fhir/Patient", json={"resourceType": "Patient"}).status_code == 201
        assert client.get("/fhir/Patient").status_code == 200
        metadata = client.get("/fhir/metadata").json()
        assert "GATEWAY_AUTH=off" in metadata["implementation"]["description"]
        assert "GATEWAY_AUTH=off" in metadata["rest"][0]["security"]["description"]


IDP: dict[str, Any] = {
    "oidc_issuer": "https://idp.example",
    "oidc_audience": "fhir-gateway",
    "oidc_jwks_url": "https://idp.example/jwks",
}


@dataclass
class Idp:
    """An external OpenID Connect issuer: its signing key, its JWKS behind a mock transport, and the
    tokens it signs (iss, aud and exp filled in unless given)."""

    key: ECKey = field(default_factory=lambda: ECKey.generate_key("P-256", auto_kid=True))

    def transport(self) -> httpx.MockTransport:
        jwks = KeySet([self.key]).as_dict(private=False)
        return httpx.MockTransport(lambda request: httpx.Response(200, json=jwks))

    def token(self, **claims: Any) -> str:
        issued = {"iss": IDP["oidc_issuer"], "aud": IDP["oidc_audience"], "exp": int(time.time()) + 300}
        return jwt.encode({"alg": "ES256", "kid": self.key.kid}, issued | claims, self.key, algorithms=ALL)

    def principal(self, issuer: ExternalIssuer, token: str) -> Principal:
        return asyncio.run(issuer.principal(token, {"alg": "ES256", "kid": self.key.kid}))


def test_external_issuer_claims_become_the_principal() -> None:
    idp = Idp()
    issuer = ExternalIssuer(Settings(**IDP, oidc_claim_scopes="scp"), idp.transport())
    token = idp.token(
        aud=["fhir-gateway", "other"],
        client_id="journal",
        hsa_org="SE2321000016-ORG1",
        hsa_id="SE2321000016-P1",
        scp=["user/Patient.rs", "user/Task.r"],
    )
    assert idp.principal(issuer, token) == Principal(
        "journal", "SE2321000016-ORG1", "SE2321000016-P1", frozenset({"user/Patient.rs", "user/Task.r"})
    )


def test_head_needs_the_same_scope_as_get(secure_services: Services, secure_client: TestClient) -> None:
    from tests.security.conftest import register

    searcher = register(secure_services, "system/Patient.s")
    token = bearer(searcher.token(secure_client, "system/Patient.s"))
    assert secure_client.head("/fhir/Patient/p1", headers=token).status_code == 403


def test_external_issuer_tokens_map_claims_to_the_principal(database: Database) -> None:
    database.clear()
    idp = Idp()
    settings = database.settings(auth=True, **IDP)
    services = Services.build(settings, engine=database.engine)
    app = create_app(settings, services=services)
    app.state.authority.external = ExternalIssuer(settings, idp.transport())
    now = int(time.time())

    def token(**changes: Any) -> str:
        claims = {"sub": "user-1", "azp": "journal", "exp": now + 300, "hsa_org": "SE2321000016-ORG1"}
        return idp.token(**claims | {"hsa_id": "SE2321000016-P1", "scope": "user/Patient.rs"} | changes)

    with TestClient(app) as client:
        assert client.get("/fhir/Patient", headers=bearer(token())).status_code == 200
        assert client.get("/fhir/Task", headers=bearer(token())).status_code == 403
        assert client.get("/fhir/Patient", headers=bearer(token(aud="other"))).status_code == 401
        assert client.get("/fhir/Patient", headers=bearer(token(exp=now - 600))).status_code == 401
        forged = jwt.encode(
            {"alg": "ES256", "kid": idp.key.kid},
            {"iss": "https://idp.example"},
            ECKey.generate_key("P-256"),
            algorithms=ALL,
        )
        assert client.get("/fhir/Patient", headers=bearer(forged)).status_code == 401


def test_external_issuer_purpose_of_use() -> None:
    idp = Idp()
    settings = Settings(**IDP, oidc_claim_purpose="pou", client_purposes=("registry=HOPERAT",))
    issuer = ExternalIssuer(settings, idp.transport())

    def purpose(**claims: Any) -> str:
        return idp.principal(issuer, idp.token(**claims)).purpose

    assert purpose(client_id="journal") == "TREAT"
    assert purpose(client_id="registry") == "HOPERAT"  # the client's configured default
    assert purpose(client_id="registry", pou="ETREAT") == "ETREAT"  # the token's own claim wins
    assert purpose(client_id="journal", pou=["HRESCH"]) == "HRESCH"
    assert purpose(client_id="journal", purpose_of_use="HPAYMT") == "TREAT"  # not the configured claim
    for wrong in ("treat", "SHOPPING", ["TREAT", "HPAYMT"], 7):
        with pytest.raises(Rejected, match="PurposeOfUse"):
            purpose(client_id="journal", pou=wrong)


@pytest.mark.parametrize(
    "client_id", ["adapter:bestallningsportalen", "cli", "gateway", "anonymous", "gateway:scheduler"]
)
def test_external_tokens_cannot_name_the_gateways_own_clients(client_id: str) -> None:
    """Some of the gateway's own client ids are exempt from the organisation policy: a token from the
    external issuer presenting one is refused, not trusted."""
    idp = Idp()
    with pytest.raises(Rejected, match="keeps for itself"):
        idp.principal(ExternalIssuer(Settings(**IDP), idp.transport()), idp.token(azp=client_id))


@pytest.mark.parametrize("client_id", ["adapter:x", "cli", "gateway", "gateway:scheduler"])
def test_no_registered_client_takes_an_internal_id(database: Database, client_id: str) -> None:
    with pytest.raises(ValueError, match="keeps for itself"):
        add_client(
            database.engine, "x", "SE2321000016-ORG1", {"keys": []}, ["system/*.rs"], client_id=client_id
        )
