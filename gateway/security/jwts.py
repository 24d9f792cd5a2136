"""Small JWT helpers shared by client assertions and access tokens (signatures are joserfc's job)."""

from __future__ import annotations

import base64
import json
from typing import Any

# Asymmetric algorithms only: never `none`, never a shared-secret HMAC whose "secret" could be a public key.
CLIENT_ALGORITHMS = ("RS384", "ES384")
EXTERNAL_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
LEEWAY = 30  # seconds of clock skew tolerated on exp, nbf and iat


class Unreadable(ValueError):
    """Not a compact JWS with a JSON object header and payload."""


def _part(text: str) -> dict[str, Any]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, UnicodeDecodeError) as error:
        raise Unreadable("The token is not a JWT") from error
    if not isinstance(decoded, dict):
        raise Unreadable("The token is not a JWT")
    return decoded


def peek(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The header and claims, NOT verified: only to choose the keys that will verify them."""
    parts = token.split(".")
    if len(parts) != 3:
        raise Unreadable("The token is not a compact JWS (three dot-separated parts)")
    return _part(parts[0]), _part(parts[1])


def audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [item for item in aud if isinstance(item, str)]
    return []


def number(claims: dict[str, Any], name: str) -> int | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)
