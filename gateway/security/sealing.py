"""The signing keys' private parts, encrypted at rest (AES-256-GCM, `cryptography`).

The database holds `enc:v1:` + base64url(nonce ‖ ciphertext ‖ tag) of the private JWK, with the key id as
associated data (a sealed key cannot be passed off as another row's). The AES key is derived (HKDF-SHA256)
from GATEWAY_KEY_SECRET, else from the file GATEWAY_KEY_SECRET_FILE names (a compose or Kubernetes
secret, read, never made); with neither, from a development secret generated once into
`<GATEWAY_DATA_DIR>/key-secret`, so tests and `make run` work as they are (refused at start-up with auth
on and PostgreSQL: `gateway.security.endpoints.check_key_secret`). Production sets one of the two
(docs/security.md). Rows from before encryption (plain JSON) still load, and are sealed on first load.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.config import Settings

log = logging.getLogger("gateway.security")

PREFIX = "enc:v1:"
NONCE_BYTES = 12
SALT = b"fhir-home-device-gateway signing keys"


class KeySecretError(Exception):
    """A stored key cannot be decrypted: the secret is not the one it was sealed with."""


class KeySecretUnreadable(ValueError):
    """GATEWAY_KEY_SECRET_FILE names a file that cannot be read or holds nothing."""


def development_secret(path: Path) -> str:
    """The secret in `path`, made (random, owner-only) when there is none yet."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(secret + "\n")
    log.warning("Generated a development key secret in %s; production sets GATEWAY_KEY_SECRET", path)
    return secret


def secret_file_named(settings: Settings) -> bool:
    """Whether GATEWAY_KEY_SECRET_FILE was set (the installation's secret as a file), rather than left at
    the development secret's place in the data directory."""
    return "key_secret_file" in settings.model_fields_set


def secret_file(path: Path) -> str:
    """The secret in a file the configuration names; never made when it is missing."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise KeySecretUnreadable(
            f"GATEWAY_KEY_SECRET_FILE names {path}, which cannot be read: {error.strerror or error}"
        ) from None
    if not secret:
        raise KeySecretUnreadable(f"GATEWAY_KEY_SECRET_FILE names {path}, which is empty")
    return secret


def key_secret(settings: Settings) -> str:
    """The installation's secret: GATEWAY_KEY_SECRET, else the file GATEWAY_KEY_SECRET_FILE names, else
    the development secret file's. Every key the gateway derives from it (this module's AES key, the
    adapters' id key: `gateway/adapters/ids.py`, the search cursors' key) is derived apart (HKDF, a salt
    or `info` of its own)."""
    if settings.key_secret:
        return settings.key_secret
    if secret_file_named(settings):
        return secret_file(settings.key_secret_file)
    return development_secret(settings.key_secret_file)


class Sealer:
    """Seals and opens private JWKs with a key derived from one secret."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("The key secret is empty")
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=b"v1").derive(secret.encode())
        self._aead = AESGCM(derived)

    @classmethod
    def of(cls, settings: Settings) -> Sealer:
        """From the installation's secret (`key_secret`)."""
        return cls(key_secret(settings))

    @classmethod
    def when_needed(cls, settings: Settings) -> Callable[[], Sealer]:
        """The Sealer of `settings`, made at the first call (its key derived once, and only if used)."""
        return cache(lambda: cls.of(settings))

    def seal(self, kid: str, private_jwk: dict[str, Any]) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, json.dumps(private_jwk).encode(), kid.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def unseal(self, kid: str, stored: str) -> dict[str, Any]:
        """The private JWK of a stored row, sealed or (from before encryption) plain JSON."""
        if not is_sealed(stored):
            plain: dict[str, Any] = json.loads(stored)
            return plain
        raw = stored.removeprefix(PREFIX)
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        try:
            opened = self._aead.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], kid.encode())
        except InvalidTag as error:
            raise KeySecretError(
                f"The signing key {kid} cannot be decrypted: GATEWAY_KEY_SECRET is not the secret it was "
                "encrypted with"
            ) from error
        found: dict[str, Any] = json.loads(opened)
        return found


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)
