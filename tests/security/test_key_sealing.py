"""The gateway's signing keys are encrypted at rest: the database holds no private key material, a wrong
secret is refused, and keys stored plain before encryption still load and are sealed."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from gateway.app import create_app
from gateway.security import keys, store
from gateway.security.sealing import PREFIX, KeySecretError, Sealer, development_secret
from gateway.services import Services
from tests.conftest import Database
from tests.security.conftest import RegisteredClient, bearer, register

SECRET = "a test secret, long enough to stand for a real one"
PRIVATE_MEMBERS = ('"d"', '"p"', '"q"', '"dp"', '"dq"', '"qi"', "PRIVATE KEY", "BEGIN")


def stored_rows(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(select(store.KEYS.c.kid, store.KEYS.c.private_jwk)).all()
    return {str(kid): str(text) for kid, text in rows}


def built(database: Database, secret: str = SECRET) -> Services:
    database.clear()
    return Services.build(database.settings(auth=True, key_secret=secret), engine=database.engine)


def test_the_database_holds_no_private_key(database: Database) -> None:
    services = built(database)
    with TestClient(create_app(services.settings, services=services)) as client:
        full = register(services, "system/*.rs")
        assert (
            client.get("/fhir/Patient", headers=bearer(full.token(client, "system/*.rs"))).status_code == 200
        )
        keys.rotate(services.engine, Sealer(SECRET), "RS384", services.settings.token_lifetime)
        rows = stored_rows(services.engine)
        assert len(rows) == 2  # the ES384 key that signed, the RS384 key that replaced it
        for kid, text in rows.items():
            assert text.startswith(PREFIX), kid
            for member in PRIVATE_MEMBERS:
                assert member not in text
            assert kid not in text  # nothing of the JWK readable, not even its kid
            private = Sealer(SECRET).unseal(kid, text)
            assert private["kid"] == kid and "d" in private
    services.close()


def test_a_sealed_key_opens_only_with_its_secret_and_its_kid() -> None:
    sealed = Sealer(SECRET).seal("kid-1", {"kty": "EC", "d": "secret"})
    assert Sealer(SECRET).unseal("kid-1", sealed) == {"kty": "EC", "d": "secret"}
    with pytest.raises(KeySecretError, match="kid-1"):
        Sealer("another secret").unseal("kid-1", sealed)
    with pytest.raises(KeySecretError):
        Sealer(SECRET).unseal("kid-2", sealed)  # moved to another row
    assert Sealer(SECRET).seal("kid-1", {"d": "x"}) != Sealer(SECRET).seal("kid-1", {"d": "x"})  # fresh nonce
    with pytest.raises(ValueError):
        Sealer("")


def test_a_wrong_secret_refuses_to_sign(database: Database) -> None:
    services = built(database)
    with TestClient(create_app(services.settings, services=services)) as client:
        assert client.get("/auth/jwks").status_code == 200  # makes the first key, sealed with SECRET
    services.close()
    other = Services.build(database.settings(auth=True, key_secret="not the secret"), engine=database.engine)
    with pytest.raises(KeySecretError), TestClient(create_app(other.settings, services=other)) as client:
        client.get("/auth/jwks")
    other.close()


def test_keys_stored_plain_still_load_and_are_sealed(database: Database) -> None:
    services = built(database)
    key = keys.generate("ES384")
    plain = json.dumps(key.as_dict(private=True))
    store.add_key(services.engine, str(key.kid), "ES384", plain, retire_others=False)
    assert stored_rows(services.engine)[str(key.kid)] == plain  # as a gateway before encryption stored it
    with TestClient(create_app(services.settings, services=services)) as client:
        published = client.get("/auth/jwks").json()["keys"]
        assert [k["kid"] for k in published] == [key.kid]
        full: RegisteredClient = register(services, "system/*.rs")
        token = full.token(client, "system/*.rs")
        assert client.get("/fhir/Patient", headers=bearer(token)).status_code == 200
    sealed = stored_rows(services.engine)[str(key.kid)]
    assert sealed.startswith(PREFIX) and '"d"' not in sealed
    services.close()


def test_rotation_seals_a_plain_retired_key(database: Database) -> None:
    services = built(database)
    key = keys.generate("ES384")
    store.add_key(
        services.engine, str(key.kid), "ES384", json.dumps(key.as_dict(private=True)), retire_others=False
    )
    with services.engine.begin() as connection:  # retired just now: still published, still plain
        connection.execute(update(store.KEYS).values(retired_at=store.utc_now()))
    assert keys.seal_plain_keys(services.engine, Sealer(SECRET)) == 1
    assert keys.seal_plain_keys(services.engine, Sealer(SECRET)) == 0
    assert all(text.startswith(PREFIX) for text in stored_rows(services.engine).values())
    services.close()


def test_the_development_secret_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "var" / "key-secret"
    first = development_secret(path)
    assert len(first) >= 40
    assert development_secret(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
