"""The ids of source-derived resources: UUIDs from an HMAC of the source system and the record's key.

A source record always gives the same ids (a replay writes to the same resources), but nobody without the
installation's secret can compute them from what a source record says (an order number, a register unit,
a hospital stay): an id names no order number and cannot be guessed to probe for one. The HMAC key is
derived (HKDF-SHA256, an `info` of its own) from GATEWAY_KEY_SECRET, or the development secret file
(`gateway.security.sealing.key_secret`), so every process of an installation, the import workers too,
derives the same ids; another secret gives other ids. The UUID is the HMAC-SHA256's first 128 bits with
the version 8 (custom) and variant bits set (RFC 9562)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.config import Settings
from gateway.security.sealing import key_secret

SALT = b"fhir-home-device-gateway source ids"
INFO = b"source-record ids v1"


class SourceIds:
    """Deterministic, unguessable ids under one installation secret."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("The key secret is empty")
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=INFO).derive(secret.encode())

    @classmethod
    def of(cls, settings: Settings) -> SourceIds:
        """The ids of this installation (GATEWAY_KEY_SECRET, else the development secret file)."""
        secret = key_secret(settings)
        with _LOCK:
            found = _BY_SECRET.get(secret)
            if found is None:
                found = _BY_SECRET[secret] = cls(secret)
        return found

    def id(self, *parts: str) -> str:
        """The UUID of these parts: the source system first, then the record's key and what the resource
        is of it (`"bestallningsportalen", "PORTAL", "1001", "line", "3"`). Parts are length-delimited
        (a JSON list), so no two different lists of parts give the same input."""
        message = json.dumps(list(parts), ensure_ascii=False, separators=(",", ":")).encode()
        digest = bytearray(hmac.new(self._key, message, hashlib.sha256).digest()[:16])
        digest[6] = (digest[6] & 0x0F) | 0x80  # version 8: custom
        digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 9562 variant
        return str(uuid.UUID(bytes=bytes(digest)))

    def urn(self, *parts: str) -> str:
        """A Bundle entry's `fullUrl` for these parts (`urn:uuid:…`), from the same key."""
        return "urn:uuid:" + self.id("urn", *parts)


_LOCK = threading.Lock()
_BY_SECRET: dict[str, SourceIds] = {}
