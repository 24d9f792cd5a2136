"""POST /auth/token (SMART Backend Services), /auth/jwks and the discovery document."""

from __future__ import annotations

import base64
import json
import time

import pytest
from fastapi.testclient import TestClient

from gateway.services import Services
from tests.security.conftest import RegisteredClient, bearer, new_key, register


def test_discovery_document_describes_backend_services(secure_client: TestClient) -> None:
    response = secure_client.get("/fhir/.well-known/smart-configuration")
    assert response.status_code == 200
    body = response.json()
    assert body["token_endpoint"] == "http://testserver/auth/token"
    assert body["jwks_uri"] == "http://testserver/auth/jwks"
    assert body["grant_types_supported"] == ["client_credentials"]
    assert body["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert body["token_endpoint_auth_signing_alg_values_supported"] == ["RS384", "ES384"]
    assert {"client-confidential-asymmetric", "permission-v2", "permission-v1"} <= set(body["capabilities"])
    assert "system/*.cruds" in body["scopes_supported"]


@pytest.mark.parametrize("alg", ["ES384", "RS384"])
def test_signed_assertion_gets_a_token_that_reads_and_searches(
    secure_services: Services, secure_client: TestClient, alg: str
) -> None:
    registered = register(secure_services, "system/Patient.cruds", alg, region=True)
    response = secure_client.post("/auth/token", data=registered.form("system/Patient.cruds"))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 300
    assert body["scope"] == "system/Patient.cruds"
    headers = bearer(body["access_token"])
    created = secure_client.post(
        "/fhir/Patient", json={"resourceType": "Patient", "gender": "female"}, headers=headers
    )
    assert created.status_code == 201, created.text
    read = secure_client.get(f"/fhir/Patient/{created.json()['id']}", headers=headers)
    assert read.status_code == 200
    search = secure_client.get("/fhir/Patient?gender=female", headers=headers)
    assert search.status_code == 200
    assert search.json()["entry"][0]["resource"]["id"] == created.json()["id"]


def test_token_is_signed_with_a_published_key(
    secure_client: TestClient, full_client: RegisteredClient
) -> None:
    token = full_client.token(secure_client, "system/*.rs")
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["typ"] == "at+jwt"
    keys = secure_client.get("/auth/jwks").json()["keys"]
    assert header["kid"] in [key["kid"] for key in keys]
    assert all("d" not in key for key in keys), "private key material must never be published"


def test_granted_scopes_are_those_the_registration_covers(
    secure_services: Services, secure_client: TestClient
) -> None:
    registered = register(secure_services, "system/Patient.rs system/Task.read", region=True)
    form = registered.form("system/Patient.r system/Task.s system/Task.c gateway/audit.read")
    response = secure_client.post("/auth/token", data=form)
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/Patient.r system/Task.s"


def test_no_covered_scope_is_invalid_scope(secure_services: Services, secure_client: TestClient) -> None:
    registered = register(secure_services, "system/Patient.rs", region=True)
    response = secure_client.post("/auth/token", data=registered.form("system/Task.cruds"))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def _refused(client: TestClient, registered: RegisteredClient, assertion: str) -> str:
    response = client.post("/auth/token", data=registered.form("system/*.rs", assertion))
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "invalid_client"
    description: str = body["error_description"]
    return description


def test_expired_assertion_is_rejected(secure_client: TestClient, full_client: RegisteredClient) -> None:
    assertion = full_client.assertion(exp=int(time.time()) - 120)
    assert "expired" in _refused(secure_client, full_client, assertion)


def test_assertion_valid_longer_than_five_minutes_is_rejected(
    secure_client: TestClient, full_client: RegisteredClient
) -> None:
    assertion = full_client.assertion(exp=int(time.time()) + 3600)
    assert "five minutes" in _refused(secure_client, full_client, assertion)


def test_forged_signature_is_rejected(secure_client: TestClient, full_client: RegisteredClient) -> None:
    forged = full_client.assertion(key=new_key("ES384"))  # same kid, another key
    _refused(secure_client, full_client, forged)


def test_alg_none_is_rejected(secure_client: TestClient, full_client: RegisteredClient) -> None:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {
        "iss": full_client.client_id,
        "sub": full_client.client_id,
        "aud": "http://testserver/auth/token",
        "exp": int(time.time()) + 60,
        "jti": "none-1",
    }
    unsigned = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
    _refused(secure_client, full_client, unsigned)


def test_hmac_with_the_public_key_as_secret_is_rejected(
    secure_client: TestClient, full_client: RegisteredClient
) -> None:
    from joserfc.jwk import OctKey

    public = json.dumps(full_client.key.as_dict(private=False)).encode()
    assertion = full_client.assertion(key=OctKey.import_key(public), header={"alg": "HS256"})  # type: ignore[arg-type]
    _refused(secure_client, full_client, assertion)


def test_wrong_audience_is_rejected(secure_client: TestClient, full_client: RegisteredClient) -> None:
    assertion = full_client.assertion(aud="https://elsewhere.example/auth/token")
    assert "aud" in _refused(secure_client, full_client, assertion)


def test_sub_must_be_the_client(secure_client: TestClient, full_client: RegisteredClient) -> None:
    _refused(secure_client, full_client, full_client.assertion(sub="someone-else"))


def test_replayed_jti_is_rejected(secure_client: TestClient, full_client: RegisteredClient) -> None:
    assertion = full_client.assertion()
    first = secure_client.post("/auth/token", data=full_client.form("system/*.rs", assertion))
    assert first.status_code == 200
    assert "replay" in _refused(secure_client, full_client, assertion)
    # the same jti in a freshly signed assertion is a replay too
    again = full_client.assertion(
        jti=json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "=="))["jti"]
    )
    assert "replay" in _refused(secure_client, full_client, again)


def test_unknown_client_is_rejected(secure_client: TestClient, full_client: RegisteredClient) -> None:
    assertion = full_client.assertion(iss="nobody", sub="nobody")
    _refused(secure_client, full_client, assertion)


def test_other_grant_types_are_unsupported(secure_client: TestClient, full_client: RegisteredClient) -> None:
    form = full_client.form("system/*.rs") | {"grant_type": "password"}
    response = secure_client.post("/auth/token", data=form)
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_missing_assertion_is_invalid_request(secure_client: TestClient) -> None:
    response = secure_client.post("/auth/token", data={"grant_type": "client_credentials", "scope": "x"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
