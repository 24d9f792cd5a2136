"""The gateway's own signing keys: generated, rotated, published at /auth/jwks, cached per process.

The newest active key signs access tokens once it has been stored SETTLE_SECONDS: by then every process
of the installation can know it (one that loaded its keys just before the key was stored reloads on its
unknown kid, at most every RELOAD_AT_MOST_EVERY), so no process refuses a token another one signed with
it; until then the key it replaces goes on signing. `gateway keys rotate` retires the active keys and adds
a new one; a retired key stays published (and trusted) until every token it can have signed has expired:
the token lifetime, plus how long a process may go on signing with a cached key, plus clock leeway.

The private parts are stored sealed (`gateway.security.sealing`); a key stored plain before that is sealed
when a KeyRing first loads it, or at the next rotation.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy import Engine

from gateway.security import store
from gateway.security.sealing import Sealer, is_sealed

ALGORITHMS = ("ES384", "RS384")
CACHE_SECONDS = 30.0
RELOAD_AT_MOST_EVERY = 1.0
# a new key signs only once this old: RELOAD_AT_MOST_EVERY, plus 2 s for the hosts' clocks to differ
SETTLE_SECONDS = RELOAD_AT_MOST_EVERY + 2.0
LEEWAY_SECONDS = 60

Key = ECKey | RSAKey


def generate(alg: str) -> Key:
    parameters: Any = {"alg": alg, "use": "sig"}
    if alg == "ES384":
        return ECKey.generate_key("P-384", parameters=parameters, auto_kid=True)
    if alg == "RS384":
        return RSAKey.generate_key(3072, parameters=parameters, auto_kid=True)
    raise ValueError(f"Signing keys are ES384 or RS384, not {alg!r}")


def import_jwk(data: dict[str, Any]) -> Key:
    kty = data.get("kty")
    if kty == "EC":
        return ECKey.import_key(data)
    if kty == "RSA":
        return RSAKey.import_key(data)
    raise ValueError(f"Not an EC or RSA key: {kty}")


def retention(token_lifetime: int) -> timedelta:
    return timedelta(seconds=token_lifetime + CACHE_SECONDS + LEEWAY_SECONDS)


def add(engine: Engine, sealer: Sealer, alg: str, retire_others: bool) -> str:
    """Generate a key and store it sealed; its kid."""
    key = generate(alg)
    kid = str(key.kid)
    store.add_key(engine, kid, alg, sealer.seal(kid, key.as_dict(private=True)), retire_others)
    return kid


def add_first(engine: Engine, sealer: Sealer, alg: str) -> None:
    """Make the first signing key, unless another process or thread has made one meanwhile."""
    key = generate(alg)
    kid = str(key.kid)
    store.add_first_key(engine, kid, alg, sealer.seal(kid, key.as_dict(private=True)))


def seal_plain_keys(engine: Engine, sealer: Sealer) -> int:
    """Seal the keys stored plain (before encryption at rest); how many there were."""
    plain = [row for row in store.all_keys(engine) if not is_sealed(row.stored_jwk)]
    for row in plain:
        private_jwk = sealer.unseal(row.kid, row.stored_jwk)
        store.reseal_key(engine, row.kid, row.stored_jwk, sealer.seal(row.kid, private_jwk))
    return len(plain)


def rotate(engine: Engine, sealer: Sealer, alg: str, token_lifetime: int) -> str:
    """Add a new signing key, retire the others, forget those no token can need any more, seal any key
    still stored plain. The new key's kid."""
    kid = add(engine, sealer, alg, retire_others=True)
    store.drop_retired_keys(engine, retention(token_lifetime))
    seal_plain_keys(engine, sealer)
    return kid


class KeyRing:
    """This process's view of the signing keys, reloaded every CACHE_SECONDS and on an unknown kid."""

    def __init__(self, engine: Engine, sealer: Sealer, alg: str, token_lifetime: int) -> None:
        self.engine = engine
        self.sealer = sealer
        self.alg = alg
        self.keep = retention(token_lifetime)
        self._rows: list[store.KeyRow] = []
        self._keys: dict[str, Key] = {}
        self._set = KeySet([])
        self._loaded = float("-inf")
        self._lock = threading.Lock()

    def _load(self, force: bool = False) -> list[store.KeyRow]:
        with self._lock:
            age = time.monotonic() - self._loaded
            if age > CACHE_SECONDS or (force and age > RELOAD_AT_MOST_EVERY):
                rows = store.published_keys(self.engine, self.keep)
                if not all(is_sealed(row.stored_jwk) for row in rows):
                    seal_plain_keys(self.engine, self.sealer)
                self._keys = {
                    row.kid: import_jwk(self.sealer.unseal(row.kid, row.stored_jwk)) for row in rows
                }
                self._rows = rows
                self._set = KeySet(list(self._keys.values()))
                self._loaded = time.monotonic()
            return self._rows

    def signer(self) -> tuple[Key, str]:
        """The key to sign with and its algorithm: the newest active one once settled (`_signing`); the
        first call on an empty database makes one (one for all processes: `add_first`)."""
        published = self._load()
        active = [row for row in published if row.retired_at is None]
        if not active:
            add_first(self.engine, self.sealer, self.alg)
            self._loaded = float("-inf")
            published = self._load()
            active = [row for row in published if row.retired_at is None]
        row = _signing(published, active[0])
        return self._keys[row.kid], row.alg

    def stale(self, kid: str | None) -> bool:
        """Whether `verifier(kid)` would read the database (callers on the event loop hop off it)."""
        age = time.monotonic() - self._loaded
        unknown = kid is not None and kid not in {row.kid for row in self._rows}
        return age > CACHE_SECONDS or (unknown and age > RELOAD_AT_MOST_EVERY)

    def verifier(self, kid: str | None) -> KeySet:
        """The published keys, reloaded first when `kid` is not among them (a rotation elsewhere)."""
        rows = self._load()
        if kid is not None and kid not in {row.kid for row in rows}:
            self._load(force=True)
        return self._set

    def jwks(self) -> dict[str, Any]:
        self.signer()  # never an empty set: the first look makes the first key
        keys = []
        for row in self._load():
            public = self._keys[row.kid].as_dict(private=False)
            keys.append(public | {"kid": row.kid, "alg": row.alg, "use": "sig"})
        return {"keys": keys}


def _signing(published: list[store.KeyRow], newest: store.KeyRow) -> store.KeyRow:
    """The newest active key once it has settled (SETTLE_SECONDS); until then the newest published key
    that has (the one a rotation just retired), or the new key when there is none (the first key)."""
    settled = store.utc_now() - timedelta(seconds=SETTLE_SECONDS)
    if newest.created_at <= settled:
        return newest
    return next((row for row in published if row.created_at <= settled), newest)
