"""`gateway clients add|list|sources|demo` and `gateway keys rotate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey
from typer.testing import CliRunner

from gateway.cli import app
from gateway.security import sources, store
from gateway.security.cli import DEMO_CLIENT_ID, assertion, seed_demo
from gateway.services import Services
from tests.conftest import Database


def _invoke(database: Database, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=database.environment())
    return result.exit_code, result.stdout


def test_clients_add_prints_the_client_id_and_list_shows_it(
    database: Database, secure_services: Services, tmp_path: Path
) -> None:
    key = ECKey.generate_key("P-384", auto_kid=True)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=True)]}))  # private parts are dropped
    code, out = _invoke(
        database,
        "clients",
        "add",
        "--name",
        "Kommun A",
        "--org",
        "SE2120000000-A",
        "--jwks",
        str(jwks),
        "--scopes",
        "system/Task.cruds gateway/adapter.hl7v2",
    )
    assert code == 0, out
    assert out.startswith("client_id: ")
    client_id = out.split()[1]
    stored = store.get_client(secure_services.engine, client_id)
    assert stored is not None and stored.organization == "SE2120000000-A"
    assert all("d" not in entry for entry in stored.jwks["keys"])
    code, out = _invoke(database, "clients", "list")
    assert code == 0 and client_id in out and "Kommun A" in out


def test_clients_add_refuses_unknown_scopes_and_bad_keys(database: Database, tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [ECKey.generate_key("P-384").as_dict(private=False)]}))
    args = ["clients", "add", "--name", "x", "--org", "o", "--jwks", str(jwks)]
    assert _invoke(database, *args, "--scopes", "system/Task.everything")[0] == 2
    jwks.write_text(json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}))
    assert _invoke(database, *args, "--scopes", "system/Task.r")[0] == 2


def test_keys_rotate_keeps_the_old_key_published(database: Database, secure_client: TestClient) -> None:
    first = secure_client.get("/auth/jwks").json()["keys"]  # the first call makes a key
    code, out = _invoke(database, "keys", "rotate", "--alg", "RS384")
    assert code == 0, out
    kid = out.split()[1]
    secure_client.app.state.authority.ring._loaded = float("-inf")  # type: ignore[attr-defined]
    published = [key["kid"] for key in secure_client.get("/auth/jwks").json()["keys"]]
    assert published == [kid, first[0]["kid"]]


def test_demo_client_is_seeded_idempotently_and_gets_a_token(
    secure_services: Services, secure_client: TestClient, tmp_path: Path
) -> None:
    key_path = tmp_path / "demo.jwk.json"
    first = seed_demo(secure_services.engine, key_path)
    again = seed_demo(secure_services.engine, key_path)
    assert first.client_id == again.client_id == DEMO_CLIENT_ID
    assert len(store.list_clients(secure_services.engine)) == 1
    private = json.loads(key_path.read_text())
    form = {
        "grant_type": "client_credentials",
        "scope": "system/*.cruds",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion(DEMO_CLIENT_ID, private, "http://testserver/auth/token"),
    }
    response = secure_client.post("/auth/token", data=form)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert secure_client.get("/fhir/Patient", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_clients_are_bound_to_sources_listed_and_rebound(
    database: Database, secure_services: Services, tmp_path: Path
) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [ECKey.generate_key("P-384", auto_kid=True).as_dict(private=False)]}))
    base = ["clients", "add", "--name", "Region", "--org", "SE2321000016-MAH1", "--jwks", str(jwks)]
    base += ["--scopes", "gateway/adapter.device-register gateway/adapter.hl7v2"]
    code, out = _invoke(
        database,
        *base,
        "--source",
        "device-register:sesam@SE2321000016-MAH1",
        "--source",
        "hl7v2:SE2321000016-KS01",
    )
    assert code == 0, out
    client_id = out.split()[1]
    assert sources.of_client(secure_services.engine, client_id) == {
        "device-register:SESAM@SE2321000016-MAH1",  # a register is one register however it is spelt
        "hl7v2:SE2321000016-KS01",
    }
    code, out = _invoke(database, "clients", "list")
    assert "sources=device-register:SESAM@SE2321000016-MAH1,hl7v2:SE2321000016-KS01" in out
    code, out = _invoke(
        database,
        "clients",
        "sources",
        client_id,
        "--add",
        "bestallningsportalen:BP",
        "--remove",
        "hl7v2:SE2321000016-KS01",
    )
    assert code == 0, out
    assert out.split() == ["bestallningsportalen:BP", "device-register:SESAM@SE2321000016-MAH1"]
    assert _invoke(database, "clients", "sources", "no-such-client")[0] == 2


@pytest.mark.parametrize(
    "source",
    [
        "fhir:anything",  # no such kind
        "device-register:SESAM",  # no owner
        "device-register:SESAM@not-an-hsa-id",
        "hl7v2:Karolinska",  # MSH-4 as an HSA-id
        "bestallningsportalen:",
        "bestallningsportalen:has space",
        "SE2321000016-KS01",
    ],
)
def test_clients_add_refuses_a_malformed_source(database: Database, tmp_path: Path, source: str) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [ECKey.generate_key("P-384").as_dict(private=False)]}))
    args = ["clients", "add", "--name", "x", "--org", "o", "--jwks", str(jwks), "--scopes", "system/Task.r"]
    result = CliRunner().invoke(app, [*args, "--source", source], env=database.environment())
    assert result.exit_code == 2 and "--source" in result.output, result.output
