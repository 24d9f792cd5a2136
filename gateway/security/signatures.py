"""ECDSA signatures in one form: low s.

An ECDSA signature (r, s) verifies as (r, n − s) too (n: the curve's order), so anyone holding a token can
make a second, different string that verifies. JOSE does not forbid that, so client assertions and the
external issuer's tokens are verified as they come; nothing in the gateway keys on a token's string (the
replay check keys on the assertion's `jti`, the verified-token cache on the access token's `jti`). The
access tokens the gateway signs itself are made low-s (s ≤ n/2) and only that form of them is accepted.
"""

from __future__ import annotations

from joserfc.util import urlsafe_b64decode, urlsafe_b64encode

# The order of the P-384 group (SEC 2, secp384r1), the curve of ES384.
P384_ORDER = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973", 16
)
ES384_PART = 48  # r and s, each 48 bytes big-endian: the JWS signature is r || s (RFC 7518 §3.4)


def _rs(signature: bytes) -> tuple[int, int] | None:
    if len(signature) != 2 * ES384_PART:
        return None
    return int.from_bytes(signature[:ES384_PART], "big"), int.from_bytes(signature[ES384_PART:], "big")


def low_s(token: str) -> str:
    """An ES384 compact JWS with its s replaced by n − s when s > n/2 (the same signature, in low-s form);
    any other string unchanged."""
    head, payload, encoded = token.split(".")
    pair = _rs(urlsafe_b64decode(encoded.encode("ascii")))
    if pair is None or pair[1] <= P384_ORDER // 2:
        return token
    r, s = pair
    signature = r.to_bytes(ES384_PART, "big") + (P384_ORDER - s).to_bytes(ES384_PART, "big")
    return f"{head}.{payload}.{urlsafe_b64encode(signature).decode('ascii')}"


def is_high_s(token: str) -> bool:
    """Whether an ES384 compact JWS carries a high-s signature (s > n/2); False for what is not one (the
    signature check refuses that)."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        pair = _rs(urlsafe_b64decode(parts[2].encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        return False
    return pair is not None and pair[1] > P384_ORDER // 2
