"""Issuer and audience come from GATEWAY_BASE_URL, never from the Host header: with auth on and no base
URL the gateway does not start (unless GATEWAY_BASE_URL_FROM_REQUEST, for local trials, says so)."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gateway.app import create_app
from gateway.cli import app as cli
from gateway.security.endpoints import StartupRefused
from gateway.services import Services
from tests.conftest import BASE_URL, Database
from tests.security.conftest import RegisteredClient, bearer
from tests.security.test_authentication import _own_token

EVIL = {"Host": "evil.example"}


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def test_auth_on_without_a_base_url_does_not_start(database: Database) -> None:
    services = Services.build(database.settings(auth=True, base_url=""), engine=database.engine)
    try:
        with pytest.raises(StartupRefused, match="GATEWAY_BASE_URL is not set"):
            create_app(services.settings, services=services)
    finally:
        services.close()


@pytest.mark.parametrize(
    "base", ["testserver/fhir", "ftp://testserver/fhir", "https:///fhir", "http://h/fhir?x=1"]
)
def test_a_malformed_base_url_does_not_start(database: Database, base: str) -> None:
    services = Services.build(database.settings(auth=True, base_url=base), engine=database.engine)
    try:
        with pytest.raises(StartupRefused, match="absolute http"):
            create_app(services.settings, services=services)
    finally:
        services.close()


def test_gateway_serve_refuses_to_start_without_a_base_url(database: Database) -> None:
    env = {
        **database.environment(),
        "GATEWAY_AUTH": "on",
        "GATEWAY_BASE_URL": "",
        "GATEWAY_BASE_URL_FROM_REQUEST": "off",
    }
    result = CliRunner().invoke(cli, ["serve", "--no-upgrade"], env=env)
    assert result.exit_code == 2
    assert "GATEWAY_BASE_URL is not set" in result.output
    assert "GATEWAY_BASE_URL_FROM_REQUEST" in result.output


def test_local_trials_follow_the_request_with_a_warning(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    database.clear()
    settings = database.settings(auth=True, base_url="", base_url_from_request=True)
    services = Services.build(settings, engine=database.engine)
    try:
        with caplog.at_level(logging.WARNING, logger="gateway.security"):
            app = create_app(settings, services=services)
        assert any("GATEWAY_BASE_URL_FROM_REQUEST=on" in record.getMessage() for record in caplog.records)
        with TestClient(app) as client:
            discovery = client.get("/fhir/.well-known/smart-configuration", headers=EVIL).json()
            assert discovery["token_endpoint"] == "http://evil.example/auth/token"
    finally:
        services.close()


def test_the_host_header_does_not_move_issuer_or_audience(
    secure_client: TestClient, full_client: RegisteredClient
) -> None:
    assert secure_client.app.state.authority.settings.base_url == BASE_URL  # type: ignore[attr-defined]
    discovery = secure_client.get("/fhir/.well-known/smart-configuration", headers=EVIL).json()
    assert discovery["token_endpoint"] == "http://testserver/auth/token"
    assert discovery["issuer"] == "http://testserver/auth"
    metadata = secure_client.get("/fhir/metadata", headers=EVIL).json()
    uris = metadata["rest"][0]["security"]["extension"][0]["extension"]
    assert {"url": "token", "valueUri": "http://testserver/auth/token"} in uris
    # A client assertion addressed to the Host's token endpoint is refused, whatever Host says.
    wrong = full_client.form("system/*.rs", full_client.assertion(aud="http://evil.example/auth/token"))
    refused = secure_client.post("/auth/token", data=wrong, headers=EVIL)
    assert refused.status_code == 401
    assert "http://testserver/auth/token" in refused.json()["error_description"]
    # One addressed to the configured token endpoint is accepted, whatever Host says...
    issued = secure_client.post("/auth/token", data=full_client.form("system/*.rs"), headers=EVIL)
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]
    claims = _claims(token)
    assert (claims["iss"], claims["aud"]) == ("http://testserver/auth", BASE_URL)
    # ...and its token is good whatever Host it comes with.
    assert secure_client.get("/fhir/Patient", headers=bearer(token) | EVIL).status_code == 200
    assert secure_client.get("/fhir/Patient", headers=bearer(token)).status_code == 200
    # A token for the Host's issuer and audience is not this gateway's, even sent to that Host.
    hosted = _own_token(secure_client, iss="http://evil.example/auth", aud="http://evil.example/fhir")
    assert secure_client.get("/fhir/Patient", headers=bearer(hosted) | EVIL).status_code == 401
