"""The first signing key and rotations when several processes (or threads) do them at once: one active key
for all, so every process signs with a key every other one knows (gateway/security/keys.py; two real
processes: tests/deploy/test_two_processes.py)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from joserfc import jwt
from sqlalchemy import update

from gateway.security import keys, store
from gateway.security.sealing import Sealer
from tests.conftest import Database

SECRET = "a test secret, long enough to stand for a real one"
AT_ONCE = 8


def test_rings_on_an_empty_database_make_one_first_key(database: Database) -> None:
    """Each ring stands for a process; they all sign their first token at the same moment."""
    database.clear()
    barrier = threading.Barrier(AT_ONCE)

    def first_signer() -> str:
        ring = keys.KeyRing(database.engine, Sealer(SECRET), "ES384", 300)
        barrier.wait(timeout=30)
        key, _alg = ring.signer()
        return str(key.kid)

    with ThreadPoolExecutor(AT_ONCE) as pool:
        signed_with = {done.result() for done in [pool.submit(first_signer) for _ in range(AT_ONCE)]}
    stored = store.all_keys(database.engine)
    assert [row.kid for row in stored] == list(signed_with)


def test_rotations_at_once_leave_one_active_key(database: Database) -> None:
    database.clear()
    sealer = Sealer(SECRET)
    keys.add_first(database.engine, sealer, "ES384")
    barrier = threading.Barrier(4)

    def rotate() -> str:
        barrier.wait(timeout=30)
        return keys.rotate(database.engine, sealer, "ES384", 300)

    with ThreadPoolExecutor(4) as pool:
        made = [done.result() for done in [pool.submit(rotate) for _ in range(4)]]
    active = [row.kid for row in store.all_keys(database.engine) if row.retired_at is None]
    assert len(active) == 1 and active[0] in made


def test_a_token_signed_after_a_rotation_verifies_at_a_process_that_loaded_its_keys_just_before(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Process B loads its keys; `gateway keys rotate` runs; process A loads them and signs at once. B
    reloads on an unknown kid at most every second, so A goes on signing with the retired key until the
    new one has settled (SETTLE_SECONDS): then B, if it has not loaded the new key yet, may reload."""
    database.clear()
    sealer = Sealer(SECRET)
    keys.add_first(database.engine, sealer, "ES384")
    with database.engine.begin() as connection:  # made a while ago
        connection.execute(update(store.KEYS).values(created_at=store.utc_now() - timedelta(minutes=5)))
    [first] = store.all_keys(database.engine)
    process_b = keys.KeyRing(database.engine, sealer, "ES384", 300)
    process_b.verifier(None)
    new_kid = keys.rotate(database.engine, sealer, "ES384", 300)
    process_a = keys.KeyRing(database.engine, sealer, "ES384", 300)

    def signed_and_verified() -> str:
        key, alg = process_a.signer()
        token = jwt.encode({"alg": alg, "kid": key.kid}, {"sub": "x"}, key, algorithms=[alg])
        jwt.decode(token, process_b.verifier(str(key.kid)), algorithms=[alg])  # raises when B lacks it
        return str(key.kid)

    assert signed_and_verified() == first.kid
    monkeypatch.setattr(keys, "SETTLE_SECONDS", 0.0)  # as if SETTLE_SECONDS had passed
    process_b._loaded -= keys.RELOAD_AT_MOST_EVERY  # and so B's last load was longer ago than that
    assert signed_and_verified() == new_kid
