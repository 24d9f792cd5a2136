"""A token is honoured only while the client it names is: `gateway clients disable|enable|remove` take
effect on tokens already issued within GATEWAY_CLIENT_STATUS_SECONDS, for the gateway's own clients and
for the external issuer's client ids (its client_id, azp or sub); the refusal is audited as the client's."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from gateway.app import create_app
from gateway.cli import app as cli
from gateway.security import store
from gateway.security.oidc import ExternalIssuer
from gateway.services import Services
from tests.conftest import Database
from tests.security.conftest import bearer, register
from tests.security.test_audit import _log
from tests.security.test_authentication import IDP, Idp

SCOPE = "system/Patient.rs"


@contextmanager
def gateway(database: Database, **overrides: Any) -> Iterator[tuple[Services, TestClient]]:
    database.clear()
    services = Services.build(database.settings(auth=True, **overrides), engine=database.engine)
    try:
        with TestClient(create_app(services.settings, services=services)) as client:
            yield services, client
    finally:
        services.close()


def clients(database: Database, *args: str) -> tuple[int, str]:
    """`gateway clients ARGS` against the test database (another process would do the same)."""
    result = CliRunner().invoke(cli, ["clients", *args], env=database.environment())
    return result.exit_code, result.output


def within(seconds: float, condition: Callable[[], bool]) -> float:
    """How long `condition` took to become true; fails when it is not within `seconds`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - started


def status(client: TestClient, token: str) -> int:
    code: int = client.get("/fhir/Patient", headers=bearer(token)).status_code
    return code


def test_a_disabled_clients_token_is_refused_within_the_bound_and_works_again_when_enabled(
    database: Database,
) -> None:
    bound = 1.0
    with gateway(database, client_status_seconds=bound) as (services, client):
        registered = register(services, SCOPE, region=True)
        token = registered.token(client, SCOPE)
        assert status(client, token) == 200  # the client's status is now remembered for `bound`
        code, out = clients(database, "disable", registered.client_id)
        assert code == 0, out
        waited = within(bound + 1.0, lambda: status(client, token) == 401)
        assert waited <= bound + 0.5
        refused = client.get("/fhir/Patient", headers=bearer(token))
        challenge = refused.headers["www-authenticate"]
        assert 'error="invalid_token"' in challenge and "disabled" in challenge
        again = client.post("/auth/token", data=registered.form(SCOPE))  # no new token either, at once
        assert again.status_code == 401 and again.json()["error"] == "invalid_client"
        code, out = clients(database, "list")
        assert f"{registered.client_id}\t" in out and "(disabled)" in out
        code, out = clients(database, "enable", registered.client_id)
        assert code == 0, out
        within(bound + 1.0, lambda: status(client, token) == 200)
        assert status(client, registered.token(client, SCOPE)) == 200


def test_a_removed_clients_token_is_refused(database: Database) -> None:
    with gateway(database, client_status_seconds=0) as (services, client):
        registered = register(services, SCOPE, region=True)
        other = register(services, SCOPE, region=True)
        token, others = registered.token(client, SCOPE), other.token(client, SCOPE)
        assert status(client, token) == 200
        code, out = clients(database, "remove", registered.client_id)
        assert code == 0, out
        assert store.get_client(services.engine, registered.client_id) is None
        refused = client.get("/fhir/Patient", headers=bearer(token))
        assert refused.status_code == 401
        assert "no longer registered" in refused.headers["www-authenticate"]
        assert status(client, others) == 200  # another client's token is not affected
        assert clients(database, "remove", registered.client_id)[0] == 1  # not registered (any more)
        assert clients(database, "enable", "never-heard-of")[0] == 1


def test_the_default_bound_is_a_few_seconds(database: Database) -> None:
    """Unless configured, a process trusts a client's status for 5 s: a disabled client's token still
    passes right after (where the status was just looked up), and is refused after the bound."""
    with gateway(database) as (services, client):
        assert services.settings.client_status_seconds == 5.0
        registered = register(services, SCOPE, region=True)
        token = registered.token(client, SCOPE)
        assert status(client, token) == 200
        assert store.set_client_active(services.engine, registered.client_id, False)
        assert status(client, token) == 200  # remembered
        authority = client.app.state.authority  # type: ignore[attr-defined]
        authority.statuses._known = {  # as if the bound had passed
            key: (value[0], value[1] - 5.0) for key, value in authority.statuses._known.items()
        }
        assert status(client, token) == 401


@pytest.mark.parametrize("claim", ["client_id", "azp", "sub"])
def test_a_disabled_external_client_id_is_refused(database: Database, claim: str) -> None:
    idp = Idp()
    with gateway(database, client_status_seconds=0, **IDP) as (services, client):
        client.app.state.authority.external = ExternalIssuer(  # type: ignore[attr-defined]
            services.settings, idp.transport()
        )

        def token(client_id: str) -> str:
            return idp.token(**{claim: client_id, "hsa_org": "SE2321000016-ORG1", "scope": SCOPE})

        assert status(client, token("journal")) == 200
        code, out = clients(database, "disable", "journal")
        assert code == 0 and "not a registered client" in out, out
        refused = client.get("/fhir/Patient", headers=bearer(token("journal")))
        assert refused.status_code == 401
        assert "'journal' is disabled" in refused.headers["www-authenticate"]
        assert status(client, token("other-journal")) == 200
        code, out = clients(database, "list")
        assert "journal\t(external client id, disabled since" in out
        assert clients(database, "disable", "journal")[0] == 0  # again: already disabled, no change
        assert clients(database, "enable", "journal")[0] == 0
        assert status(client, token("journal")) == 200
        assert store.disabled_external(services.engine) == []


def test_an_external_token_naming_a_disabled_registered_client_is_refused(database: Database) -> None:
    """`disable ID` of a registered client refuses every token naming ID, the external issuer's too."""
    idp = Idp()
    with gateway(database, client_status_seconds=0, **IDP) as (services, client):
        client.app.state.authority.external = ExternalIssuer(  # type: ignore[attr-defined]
            services.settings, idp.transport()
        )
        registered = register(services, SCOPE, region=True)
        token = idp.token(azp=registered.client_id, hsa_org="SE2321000016-ORG1", scope=SCOPE)
        assert status(client, token) == 200  # an external token may name a registered client
        assert clients(database, "disable", registered.client_id)[0] == 0
        assert store.disabled_external(services.engine) == []  # disabled in oauth_client, not listed
        assert status(client, token) == 401


def test_a_disabled_clients_refused_request_is_audited_as_its_own(database: Database) -> None:
    with gateway(database, client_status_seconds=0, audit=True) as (services, client):
        registered = register(services, SCOPE, region=True)
        token = registered.token(client, SCOPE)
        assert store.set_client_active(services.engine, registered.client_id, False)
        assert client.get("/fhir/Patient/p1", headers=bearer(token)).status_code == 401
        refused = _log(services, client, "entity=Patient/p1&outcome=4")
        assert [(e["outcomeDesc"][:3], e["agent"][0]["altId"]) for e in refused] == [
            ("401", registered.client_id)
        ]
