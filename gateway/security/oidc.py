"""Access tokens from an external OpenID Connect issuer: its JWKS fetched with httpx and cached, its
claims mapped to a Principal through the configured claim names."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gateway.config import Settings
from gateway.hooks import Principal, internal_client
from gateway.security import purpose
from gateway.security.jwts import EXTERNAL_ALGORITHMS, LEEWAY, audiences, number

REFETCH_AT_MOST_EVERY = 10.0


class Rejected(Exception):
    """The token is not acceptable; the message says why (it goes back in WWW-Authenticate)."""


def _scopes(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class ExternalIssuer:
    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.issuer = settings.oidc_issuer
        self.purposes = purpose.client_defaults(settings.client_purposes)
        self._transport = transport
        self._keys: KeySet | None = None
        self._fetched = float("-inf")
        self._lock = asyncio.Lock()

    async def _fetch(self) -> KeySet:
        async with httpx.AsyncClient(timeout=10.0, transport=self._transport) as http:
            response = await http.get(self.settings.oidc_jwks_url)
            response.raise_for_status()
            return KeySet.import_key_set(response.json())

    async def keys(self, kid: str | None) -> KeySet:
        """The issuer's keys: cached for the configured time, fetched again early for an unknown kid."""
        async with self._lock:
            age = time.monotonic() - self._fetched
            known = self._keys is not None and (kid is None or any(key.kid == kid for key in self._keys.keys))
            if (
                self._keys is None
                or age > self.settings.oidc_jwks_ttl
                or (not known and age > REFETCH_AT_MOST_EVERY)
            ):
                try:
                    self._keys = await self._fetch()
                    self._fetched = time.monotonic()
                except (httpx.HTTPError, ValueError, JoseError) as error:
                    if self._keys is None:
                        raise Rejected(f"The issuer's keys cannot be fetched: {error}") from error
            assert self._keys is not None
            return self._keys

    async def principal(self, token: str, header: dict[str, Any]) -> Principal:
        if header.get("alg") not in EXTERNAL_ALGORITHMS:
            raise Rejected("The token's algorithm is not accepted")
        kid = header.get("kid")
        keys = await self.keys(kid if isinstance(kid, str) else None)
        try:
            claims = jwt.decode(token, keys, algorithms=EXTERNAL_ALGORITHMS).claims
        except JoseError as error:
            raise Rejected(f"The token's signature does not verify ({error.error})") from error
        if claims.get("iss") != self.issuer:
            raise Rejected("The token's issuer is not accepted")
        if not self.settings.oidc_audience or self.settings.oidc_audience not in audiences(claims):
            raise Rejected("The token is not meant for this gateway (aud)")
        exp, now = number(claims, "exp"), time.time()
        if exp is None or exp < now - LEEWAY:
            raise Rejected("The token has expired")
        nbf = number(claims, "nbf")
        if nbf is not None and nbf > now + LEEWAY:
            raise Rejected("The token is not valid yet")
        client_id = _text(claims.get("client_id")) or _text(claims.get("azp")) or _text(claims.get("sub"))
        client_id = client_id or "external"
        if internal_client(client_id):
            raise Rejected(f"The token names client '{client_id}', an id the gateway keeps for itself")
        return Principal(
            client_id=client_id,
            organization=_text(claims.get(self.settings.oidc_claim_organization)),
            person=_text(claims.get(self.settings.oidc_claim_person)),
            scopes=_scopes(claims.get(self.settings.oidc_claim_scopes)),
            purpose=self._purpose(claims, client_id),
        )

    def _purpose(self, claims: dict[str, Any], client_id: str) -> str:
        """The token's purpose of use (a code, or a list of one); without one, the client's default."""
        value = claims.get(self.settings.oidc_claim_purpose)
        if value is None:
            return self.purposes.get(client_id, purpose.DEFAULT)
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if not isinstance(value, str) or value not in purpose.CODES:
            raise Rejected(f"The token's {self.settings.oidc_claim_purpose} is not one v3 PurposeOfUse code")
        return value
