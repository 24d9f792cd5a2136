"""One form of a token: the gateway signs its access tokens low-s and accepts only that form of them (a
malleated copy, s replaced by n − s, is refused, whether or not the original was seen first); client
assertions and the external issuer's tokens are accepted in either form, and nothing keys on a token's
string: an assertion's replay is refused by its jti whatever form it comes in."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet

from gateway.app import create_app
from gateway.security.oidc import ExternalIssuer
from gateway.services import Services
from tests.conftest import Database
from tests.security.conftest import RegisteredClient, bearer, register
from tests.security.test_authentication import IDP, Idp

# The group orders, written out here rather than taken from the code under test: a wrong one would make
# the malleated copies below fail to verify, which the accepted assertion and external token rule out.
P384_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _s(token: str) -> int:
    signature = _decode(token.split(".")[2])
    return int.from_bytes(signature[len(signature) // 2 :], "big")


def malleate(token: str, order: int = P384_N) -> str:
    """The same ECDSA signature in its other form: s replaced by n − s. It verifies as well as the
    original, and is a different string."""
    head, payload, encoded = token.split(".")
    signature = _decode(encoded)
    half = len(signature) // 2
    s = int.from_bytes(signature[half:], "big")
    return f"{head}.{payload}.{_encode(signature[:half] + (order - s).to_bytes(half, 'big'))}"


def _header(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(_decode(token.split(".", maxsplit=1)[0]))
    return decoded


def test_the_gateways_access_tokens_are_signed_low_s(
    secure_client: TestClient, full_client: RegisteredClient
) -> None:
    tokens = [full_client.token(secure_client, "system/*.rs") for _ in range(16)]
    assert {_header(token)["alg"] for token in tokens} == {"ES384"}
    # Without normalising, each s is above n/2 half the time: all 16 low by chance is 1 in 65536.
    assert all(_s(token) <= P384_N // 2 for token in tokens)


@pytest.mark.parametrize("original_first", [True, False], ids=["original-first", "malleated-first"])
def test_a_malleated_access_token_is_refused_and_the_original_accepted(
    secure_client: TestClient, full_client: RegisteredClient, original_first: bool
) -> None:
    token = full_client.token(secure_client, "system/*.rs")
    malleated = malleate(token)
    assert malleated != token and _s(malleated) > P384_N // 2
    # A valid signature by the gateway's published key all the same: refused for its form, not forged.
    published = KeySet.import_key_set(secure_client.get("/auth/jwks").json())
    assert jwt.decode(malleated, published, algorithms=["ES384"]).claims["client_id"] == full_client.client_id
    if original_first:  # the original is remembered as verified: its jti must not admit the copy
        assert secure_client.get("/fhir/Patient", headers=bearer(token)).status_code == 200
    refused = secure_client.get("/fhir/Patient", headers=bearer(malleated))
    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge and "high s" in challenge
    assert secure_client.get("/fhir/Patient", headers=bearer(token)).status_code == 200
    assert secure_client.get("/fhir/Patient", headers=bearer(malleated)).status_code == 401


def test_a_malleated_client_assertion_is_accepted_and_its_jti_still_replays(
    secure_services: Services, secure_client: TestClient
) -> None:
    """JOSE does not require low s: a client's high-s assertion is valid. The replay check keys on the
    jti, so the other form of a used assertion is a replay too, in either order."""
    client = register(secure_services, "system/Patient.rs", "ES384", region=True)
    for high_first in (True, False):
        assertion = client.assertion()
        other = malleate(assertion)
        high, low = (assertion, other) if _s(assertion) > P384_N // 2 else (other, assertion)
        first, second = (high, low) if high_first else (low, high)
        accepted = secure_client.post("/auth/token", data=client.form("system/Patient.rs", first))
        assert accepted.status_code == 200, accepted.text
        replayed = secure_client.post("/auth/token", data=client.form("system/Patient.rs", second))
        assert replayed.status_code == 401
        assert replayed.json()["error"] == "invalid_client"
        assert "replay" in replayed.json()["error_description"]


def test_an_rs384_access_token_is_remembered_by_jti_not_taken_for_another(
    secure_services: Services, secure_client: TestClient
) -> None:
    """RS384 signatures are not malleable; what is remembered still is the token's jti with its exact
    string: another string with the same jti is verified afresh (and fails)."""
    from gateway.security import keys
    from gateway.security.sealing import Sealer

    keys.rotate(
        secure_services.engine,
        Sealer.of(secure_services.settings),
        "RS384",
        secure_services.settings.token_lifetime,
    )
    secure_client.app.state.authority.ring._loaded = float("-inf")  # type: ignore[attr-defined]
    client = register(secure_services, "system/Patient.rs", "ES384", region=True)
    token = client.token(secure_client, "system/Patient.rs")
    assert _header(token)["alg"] == "RS384"
    assert secure_client.get("/fhir/Patient", headers=bearer(token)).status_code == 200
    head, payload, signature = token.split(".")
    claims = json.loads(_decode(payload))
    widened = _encode(json.dumps(claims | {"scope": "system/*.cruds"}).encode())
    assert (
        secure_client.get("/fhir/Patient", headers=bearer(f"{head}.{widened}.{signature}")).status_code == 401
    )
    flipped = _encode(bytes([_decode(signature)[0] ^ 1]) + _decode(signature)[1:])
    assert (
        secure_client.get("/fhir/Patient", headers=bearer(f"{head}.{payload}.{flipped}")).status_code == 401
    )
    assert secure_client.get("/fhir/Patient", headers=bearer(token)).status_code == 200


def test_the_external_issuers_high_s_tokens_are_accepted(database: Database) -> None:
    database.clear()
    idp = Idp()
    settings = database.settings(auth=True, **IDP)
    services = Services.build(settings, engine=database.engine)
    app = create_app(settings, services=services)
    app.state.authority.external = ExternalIssuer(settings, idp.transport())
    claims = {"azp": "journal", "hsa_org": "SE2321000016-ORG1", "scope": "system/Patient.rs"}
    try:
        with TestClient(app) as client:
            token = idp.token(**claims, exp=int(time.time()) + 300)
            for form in (token, malleate(token, P256_N)):  # one of the two is high-s
                assert client.get("/fhir/Patient", headers=bearer(form)).status_code == 200
    finally:
        services.close()
