"""Paging cursors: the sort values of the last row a page served, sealed (AES-256-GCM, a key derived from
GATEWAY_KEY_SECRET) and bound to the client and the search they were given for. A client can neither read
what a cursor holds (a sort value of a row it was served masked, say) nor make one up, nor use another
client's: a cursor it did not get for this search is a 400 like any broken one."""

from __future__ import annotations

import base64
import math
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import bad_request
from gateway.model.types import dumps, loads

NONCE_BYTES = 12
SALT = b"fhir-home-device-gateway search cursors"


class Cursors:
    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("The key secret is empty")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=SALT, info=b"v1").derive(secret.encode())
        self._aead = AESGCM(key)

    def seal(self, row: Sequence[Any], backwards: bool, binding: str) -> str:
        values = [v.isoformat() if isinstance(v, datetime) else v for v in row]
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, dumps({"b": backwards, "v": values}).encode(), binding.encode())
        return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, kinds: Sequence[str], token: str, binding: str) -> tuple[bool, list[Any]]:
        """(backwards, the sort values typed as `kinds`) of a cursor sealed with this `binding`."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            opened = self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], binding.encode())
            data = loads(opened)
            values = data["v"]
            if len(values) != len(kinds):
                raise ValueError("cursor does not fit this search")
            decoded = [_cursor_value(kind, v) for kind, v in zip(kinds, values, strict=True)]
            return bool(data["b"]), decoded
        except (InvalidTag, ValueError, KeyError, TypeError) as error:
            raise bad_request("The paging cursor is not valid for this search", "_cursor") from error


def _cursor_value(kind: str, value: Any) -> Any:
    """Each value must have its sort key's type before it meets SQL."""
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{value!r} is not a number")
        if not math.isfinite(value) or abs(value) >= 2**63:
            raise ValueError(f"{value!r} is out of range")
        return value
    if not isinstance(value, str) or "\x00" in value:
        raise TypeError(f"{value!r} is not a string")
    if kind == "date":
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is not None:
            raise ValueError(f"{value!r} is not a cursor date")
        return moment
    return value
